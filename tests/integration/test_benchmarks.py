"""The benchmark scripts' smoke runs, and offline planning, against real LXD daemons.

Nothing here is timed (timings are noisy): ``benchmarks/bench_plan.py --smoke`` builds its tiny
lab fleet, checks the plan of it is empty and runs every case once. ``plan --state`` is checked
against the live plan of the same lab.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks import bench_plan
from lxdgpu_reconcile.cli import app
from tests.integration.conftest import LabHandle, new_lab_dir

pytestmark = pytest.mark.lxd


def test_bench_plan_smoke_runs(capsys: pytest.CaptureFixture[str]) -> None:
    work = new_lab_dir()

    assert bench_plan.main(["--smoke", "--work-dir", str(work)]) == 0

    printed = capsys.readouterr().out
    assert "raw read" in printed and "plan (library)" in printed and "status (CLI)" in printed
    assert not work.exists()


def test_plan_from_a_status_snapshot_is_the_live_plan(lab: LabHandle, tmp_path: Path) -> None:
    where = ["-f", str(lab.fleet_path), "--lab", str(lab.dir)]
    snapshot = tmp_path / "snapshot.json"

    status = CliRunner().invoke(app, ["status", *where, "--snapshot-out", str(snapshot)])
    live = CliRunner().invoke(app, ["plan", *where, "--format", "json"])
    offline = CliRunner().invoke(
        app, ["plan", *where, "--format", "json", "--state", str(snapshot)]
    )

    assert status.exit_code == 0, status.output
    assert json.loads(snapshot.read_text())["format"] == "lxdgpu-reconcile-snapshot"
    assert live.exit_code == offline.exit_code == 0, offline.output
    assert offline.stdout == live.stdout
