"""The benchmark scripts of start-up, ``validate`` and planning keep working: each one's
``--smoke`` run (tiny fleets, one round) in a child process prints its figures and goals.
Nothing is timed here (timings are noisy); docs/performance.md has the figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _smoke(script: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("script", "figures"),
    [
        (
            "bench_startup",
            ["python -c pass", "typer floor --help", "lxdgpu-reconcile --help", "goal < 0.15 s"],
        ),
        (
            "bench_validate",
            ["validate 3 users", "validate 50 users", "validate 500 users", "pure-Python YAML"],
        ),
        ("bench_planning", ["plan 200 users, fresh hosts", "plan 200 users, in sync", "MiB"]),
    ],
)
def test_a_smoke_run_prints_its_figures(script: str, figures: list[str]) -> None:
    printed = _smoke(script)
    assert printed.startswith("machine: nproc ")
    for figure in figures:
        assert figure in printed
    assert "median" in printed and ("meets the goal" in printed or "MISSES the goal" in printed)
