"""``benchmarks/bench_apply.py --smoke`` against the local lab: the script runs end to end (its
lab, the guide's ``lxc`` loop, ``apply --parallel``) and prints its table. Not timed."""

from __future__ import annotations

import os

import pytest

from benchmarks import bench_apply
from tests.integration.conftest import cannot_run

pytestmark = pytest.mark.lxd


def test_bench_apply_smoke_runs_and_prints_the_comparison(
    capsys: pytest.CaptureFixture[str],
) -> None:
    if os.geteuid() != 0:
        cannot_run(f"the tests run as uid {os.geteuid()}, the lab needs root")
    assert bench_apply.main(["--smoke", "--widths", "1,4"]) == 0
    printed = capsys.readouterr().out
    assert "fleet: 2 hosts x 2 new containers" in printed
    for case in ("lxc loop", "apply --parallel 1", "apply --parallel 4"):
        assert case in printed
