"""Benchmark: start-up of the command line, ``lxdgpu-reconcile --help`` (does I/O: runs child
processes, writes a small typer program to a temporary folder).

Cases, paired in every round (each a child process, its wall time):

- ``python -c pass``: the interpreter alone;
- ``import typer``: the command-line library (typer with click and rich);
- ``typer floor``: a one-command typer program with rich help (what any typer command line with
  this help style costs for ``--help``: the bound below which this one cannot go);
- ``lxdgpu-reconcile --help`` and ``lxdgpu-reconcile validate --help``.

Goal (docs/performance.md): ``lxdgpu-reconcile --help`` under 0.15 s.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_startup            # 15 rounds
    .venv/bin/python -m benchmarks.bench_startup --smoke    # 1 round
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    machine_info,
    parse_args,
    print_machine,
    print_table,
    run_command,
    run_paired,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 0.15

#: The smallest typer program with the same help style as lxdgpu-reconcile.
FLOOR = '''
import typer

app = typer.Typer(rich_markup_mode="rich", no_args_is_help=True)


@app.command()
def validate(fleet: str = "fleet.yaml") -> None:
    """Check a fleet file."""


@app.command()
def plan(fleet: str = "fleet.yaml") -> None:
    """Show a plan."""


app()
'''


def main(argv: list[str] | None = None) -> int:
    args = parse_args("start-up: lxdgpu-reconcile --help", default_rounds=15, argv=argv)
    info = machine_info()
    print_machine(info)
    python = sys.executable
    tool = [python, "-m", "lxdgpu_reconcile"]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        floor = Path(tmp) / "floor.py"
        floor.write_text(FLOOR)
        results = run_paired(
            {
                "python -c pass": lambda: run_command([python, "-c", "pass"], cwd=REPO),
                "import typer": lambda: run_command([python, "-c", "import typer"], cwd=REPO),
                "typer floor --help": lambda: run_command([python, str(floor), "--help"]),
                "lxdgpu-reconcile --help": lambda: run_command([*tool, "--help"], cwd=REPO),
                "validate --help": lambda: run_command([*tool, "validate", "--help"], cwd=REPO),
            },
            rounds=args.rounds,
            warmup=args.warmup,
        )
    print_table(results, baseline="typer floor --help", title="start-up (wall time)")
    help_median = results["lxdgpu-reconcile --help"].median
    verdict = "meets" if help_median < GOAL_SECONDS else "MISSES"
    print(
        f"lxdgpu-reconcile --help: {help_median:.3f} s; goal < {GOAL_SECONDS} s: {verdict} the "
        f"goal (typer's own floor: {results['typer floor --help'].median:.3f} s, the "
        f"interpreter: {results['python -c pass'].median:.3f} s)"
    )
    write_json(args, "bench_startup", results, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
