"""Hostile or broken input files through the command line: a clear error and its exit status,
never a traceback; a failed ``reconcile`` run always leaves its log line and metrics."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile import __version__
from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.cli import reconcile as reconcile_command
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import saving
from lxdgpu_reconcile.state import FleetSnapshot

runner = CliRunner()

UNIX_FLEET = 'version: 1\nhosts:\n  server01: {endpoint: "unix:///nonexistent/unix.socket"}\n'
BOMB = "version: 1\n" + "".join(
    f"{name}: &{name} [{','.join([f'*{prev}'] * 9) if prev else ','.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def _plain(output: str) -> str:
    return " ".join(output.split())


def _apply(plan_file: Path, tmp_path: Path) -> tuple[int, str]:
    argv = ["apply", str(plan_file), "--lock-file", str(tmp_path / "lock")]
    result = runner.invoke(app, argv)
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    return result.exit_code, _plain(result.output)


def test_apply_refuses_a_plan_file_that_is_not_utf8(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_bytes(b'{"kind": "\xff\xfe"}\n')
    code, output = _apply(plan_file, tmp_path)
    assert code == 1
    assert f"{plan_file} is not a saved plan (not UTF-8 text)" in output


@pytest.mark.parametrize("depth", [100_000, 200])
def test_apply_refuses_a_deeply_nested_plan_file(tmp_path: Path, depth: int) -> None:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text("[" * depth + "]" * depth)
    code, output = _apply(plan_file, tmp_path)
    assert code == 1
    assert f"{plan_file} is not a saved plan: it nests more than 64 levels deep" in output


def test_apply_refuses_a_plan_naming_a_host_the_fleet_lacks(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(UNIX_FLEET)
    plan = planning.Plan(hosts=(planning.HostPlan(host="elsewhere", applyable=True),))
    saved = saving.save(
        plan,
        FleetSnapshot(),
        fleet=saving.FleetFile(
            path=str(fleet), sha256=hashlib.sha256(fleet.read_bytes()).hexdigest()
        ),
        lab=None,
        tool_version=__version__,
        created_at="2026-01-01T00:00:00+00:00",
    )
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(saving.render(saved))
    code, output = _apply(plan_file, tmp_path)
    assert code == 1
    assert f"{plan_file} names host(s) elsewhere, which {fleet} does not declare" in output
    assert "nothing was applied" in output


def _reconcile(tmp_path: Path, fleet: Path) -> tuple[int, str, list[dict[str, object]], str]:
    log, metrics = tmp_path / "r.jsonl", tmp_path / "r.prom"
    argv = ["reconcile", "-f", str(fleet), "--lock-file", str(tmp_path / "lock"), "--quiet"]
    result = runner.invoke(app, [*argv, "--log-file", str(log), "--metrics-file", str(metrics)])
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    lines = [json.loads(text) for text in log.read_text().splitlines()]
    return result.exit_code, _plain(result.output), lines, metrics.read_text()


def test_reconcile_reads_an_old_metrics_file_that_is_not_utf8_as_none(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("version: 1\nusers:\n  tom: {host: nowhere}\n")
    (tmp_path / "r.prom").write_bytes(b"lxdgpu_reconcile_last_success_timestamp_seconds \xff\n")
    code, output, (line,), metrics = _reconcile(tmp_path, fleet)
    assert code == 1
    assert "is not UTF-8 text: its last success time was not carried over" in output
    assert line["result"] == "errors"
    assert "lxdgpu_reconcile_last_run_exit_code 1" in metrics
    assert "last_success_timestamp_seconds" not in metrics


def test_reconcile_with_a_yaml_bomb_logs_the_run_and_writes_metrics(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(BOMB)
    code, output, (line,), metrics = _reconcile(tmp_path, fleet)
    assert code == 1
    assert "aliases expand to more than 100000 values" in output
    assert line["result"] == "errors" and "the fleet file cannot be used" in str(line["message"])
    assert "lxdgpu_reconcile_last_run_exit_code 1" in metrics


@pytest.mark.parametrize("error", [RuntimeError("boom"), RecursionError("too deep"), KeyError("x")])
def test_reconcile_that_fails_unexpectedly_still_logs_and_writes_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(UNIX_FLEET)

    def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(reconcile_command.cycles, "run_cycle", fail)
    code, output, (line,), metrics = _reconcile(tmp_path, fleet)
    assert code == 1
    assert f"the run stopped on an unexpected error ({type(error).__name__}" in output
    assert line["result"] == "errors" and line["exit_code"] == 1
    assert type(error).__name__ in str(line["message"])
    assert "lxdgpu_reconcile_last_run_exit_code 1" in metrics
