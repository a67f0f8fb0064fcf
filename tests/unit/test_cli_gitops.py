"""``apply PLANFILE`` and ``reconcile`` through the command line, where no LXD is needed: refusals,
the lock, and a fleet file that cannot be used."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile.cli import app
from tests.helpers import lock_held, saved_plan_file

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text((REPO / "fleet.example.yaml").read_text())
    return path


@pytest.fixture
def held_lock(tmp_path: Path) -> Iterator[Path]:
    with lock_held(tmp_path / "reconcile.lock") as path:
        yield path


def test_apply_waits_for_the_lock_then_exits_4(fleet: Path, held_lock: Path) -> None:
    argv = ["apply", "-f", str(fleet), "--lock-file", str(held_lock), "--lock-wait", "0.3"]
    result = runner.invoke(app, argv)
    assert result.exit_code == 4
    assert f"another lxdgpu-reconcile run holds {held_lock}" in result.output
    assert "pid 42 (reconcile)" in result.output and "--lock-wait" in result.output


def test_apply_refuses_a_fleet_file_given_as_a_plan(fleet: Path) -> None:
    result = runner.invoke(app, ["apply", str(fleet)])
    assert result.exit_code == 1
    assert f"{fleet} looks like a fleet file, not a saved plan" in result.output
    assert f"apply -f {fleet}" in result.output


def test_apply_refuses_plan_shaping_options_with_a_plan(tmp_path: Path, fleet: Path) -> None:
    plan_file = saved_plan_file(tmp_path, fleet)
    result = runner.invoke(app, ["apply", str(plan_file), "--prune", "--target", "tom"])
    assert result.exit_code == 1
    assert "--target, --prune: a saved plan was made with its options" in result.output


def test_apply_refuses_force_with_a_plan(tmp_path: Path, fleet: Path) -> None:
    plan_file = saved_plan_file(tmp_path, fleet)
    result = runner.invoke(app, ["apply", str(plan_file), "--force", "tom-container"])
    assert result.exit_code == 1
    assert "--force: a saved plan is applied as it was made" in result.output
    assert "apply --force NAME" in result.output


def test_apply_refuses_a_plan_made_for_another_place(tmp_path: Path, fleet: Path) -> None:
    plan_file = saved_plan_file(tmp_path, fleet)
    result = runner.invoke(app, ["apply", str(plan_file), "--lab", str(tmp_path / "lab")])
    assert result.exit_code == 1
    assert "was made for the real hosts, and --lab (or LXDGPU_LAB) points at" in result.output


def test_apply_refuses_a_plan_whose_fleet_file_changed(tmp_path: Path, fleet: Path) -> None:
    plan_file = saved_plan_file(tmp_path, fleet, sha="0" * 64)
    result = runner.invoke(app, ["apply", str(plan_file)])
    assert result.exit_code == 1
    assert f"{plan_file} is stale: nothing was applied." in result.output
    assert f"the fleet file {fleet} changed since the plan was made" in result.output
    assert f"lxdgpu-reconcile plan -f {fleet} --out {plan_file}" in result.output
    assert "Traceback" not in result.output


def test_reconcile_that_cannot_get_the_lock_logs_it_and_exits_4(
    tmp_path: Path, fleet: Path, held_lock: Path
) -> None:
    log, metrics = tmp_path / "log" / "r.jsonl", tmp_path / "r.prom"
    argv = ["reconcile", "-f", str(fleet), "--lock-file", str(held_lock), "--lock-wait", "0.2"]
    argv += ["--log-file", str(log), "--metrics-file", str(metrics)]
    result = runner.invoke(app, argv)
    assert result.exit_code == 4
    assert "Not run: another run holds the lock (exit 4)." in result.output
    (line,) = [json.loads(text) for text in log.read_text().splitlines()]
    assert (line["event"], line["result"], line["exit_code"]) == ("run", "locked", 4)
    assert not metrics.exists()  # the run that holds the lock owns the metrics


def test_reconcile_with_a_broken_fleet_file_records_the_error(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("version: 1\nusers:\n  tom: {host: nowhere}\n")
    log, metrics = tmp_path / "r.jsonl", tmp_path / "r.prom"
    argv = ["reconcile", "-f", str(fleet), "--lock-file", str(tmp_path / "lock"), "--quiet"]
    result = runner.invoke(app, [*argv, "--log-file", str(log), "--metrics-file", str(metrics)])
    assert result.exit_code == 1
    assert "users.tom" in result.output and "Traceback" not in result.output
    (line,) = [json.loads(text) for text in log.read_text().splitlines()]
    assert (line["result"], line["policy"]) == ("errors", None)
    assert "the fleet file cannot be used" in line["message"]
    text = metrics.read_text()
    assert "lxdgpu_reconcile_last_run_exit_code 1" in text
    assert "last_success_timestamp_seconds" not in text


@pytest.mark.parametrize("command", ["plan", "status"])
def test_a_file_given_as_the_lab_is_one_clear_error(
    tmp_path: Path, fleet: Path, command: str
) -> None:
    result = runner.invoke(app, [command, "-f", str(fleet), "--lab", str(fleet)])
    assert result.exit_code == 1
    assert f"lab: cannot read the lab in {fleet}: Not a directory" in result.output
    assert isinstance(result.exception, SystemExit)
