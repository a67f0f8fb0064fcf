"""Shared harness of the benchmark scripts: paired rounds, min/median/max, ratios (does I/O).

A benchmark compares two or more *cases* (callables doing the same kind of work, e.g. the tool's
command and the raw LXD read it is measured against) in one run: every round runs each case once,
in an order that alternates between rounds, so that drift of the machine (caches, other load)
falls on every case alike. The result of each case is its samples in seconds; the table prints
min, median and max side by side and the ratio of each median to the baseline's median.

Conventions of every script in ``benchmarks/`` (run from the repository root, as root when it
uses the lab)::

    .venv/bin/python -m benchmarks.bench_NAME              # full run: the issue's fleet size
    .venv/bin/python -m benchmarks.bench_NAME --smoke      # tiny fleet, 1 round: checks it works
    .venv/bin/python -m benchmarks.bench_NAME --rounds 9 --json out.json

``--smoke`` runs are what the test suite runs (not timed, not compared with a goal).

Typical use::

    args = parse_args("no-op plan vs raw read", default_rounds=7)
    results = run_paired({"plan": do_plan, "raw read": do_raw}, rounds=args.rounds, warmup=1)
    print_table(results, baseline="raw read", goal=Goal("plan", "<=", 1.5))
    write_json(args, "bench_plan", results, machine_info())
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

__all__ = [
    "Goal",
    "Sample",
    "Timing",
    "machine_info",
    "parse_args",
    "print_machine",
    "print_table",
    "run_command",
    "run_paired",
    "timed",
    "write_json",
]


@dataclass(frozen=True)
class Sample:
    """One run of a command in a child process: wall seconds and the child's peak memory."""

    seconds: float
    #: The peak resident set size of the child process (``ru_maxrss``), in bytes.
    peak_rss: int
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Timing:
    """The samples of one case, in seconds, and (when measured) peak memory in bytes."""

    name: str
    seconds: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "name": self.name,
            "seconds": self.seconds,
            "min": self.min,
            "median": self.median,
            "max": self.max,
        }
        if self.peak_rss:
            out["peak_rss_max"] = max(self.peak_rss)
        return out


@dataclass(frozen=True)
class Goal:
    """A goal on the ratio of ``case``'s median to the baseline's: ``plan <= 1.5`` times it.

    ``op`` is ``"<="`` (at most that many times the baseline's time) or ``">="`` (at least that
    many times faster than the baseline: baseline median / case median).
    """

    case: str
    op: str
    ratio: float

    def met(self, results: Mapping[str, Timing], baseline: str) -> tuple[float, bool]:
        """The measured figure the goal is about, and whether it meets the goal."""
        case, base = results[self.case].median, results[baseline].median
        if self.op == "<=":
            value = case / base
            return value, value <= self.ratio
        value = base / case
        return value, value >= self.ratio

    def describe(self, value: float, ok: bool) -> str:
        word = "x the baseline's time" if self.op == "<=" else "x faster than the baseline"
        verdict = "meets" if ok else "MISSES"
        return f"{self.case}: {value:.2f}{word}; goal {self.op} {self.ratio}: {verdict} the goal"


def parse_args(
    description: str,
    *,
    default_rounds: int = 7,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The options every benchmark takes: ``--smoke``, ``--rounds``, ``--warmup``, ``--json``.

    ``extra(parser)`` adds a script's own options. With ``--smoke`` the rounds are 1 and warmup
    0 unless given explicitly.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny fleet and one round: check the script works"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help=f"timed rounds (default {default_rounds})"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.smoke else default_rounds
    if args.warmup is None:
        args.warmup = 0 if args.smoke else 1
    return args


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn`` (``time.perf_counter``)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_paired(
    cases: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    warmup: int = 1,
    progress: bool = True,
) -> dict[str, Timing]:
    """Run every case once per round, alternating the order between rounds; timings by name.

    A case callable may return a ``Sample`` (from ``run_command``): its ``seconds`` and
    ``peak_rss`` are recorded instead of the wall time of the call, so a case can measure a child
    process without counting Python's own overhead of starting it twice.
    """
    names = list(cases)
    results = {name: Timing(name) for name in names}
    for index in range(warmup + rounds):
        order = names if index % 2 == 0 else list(reversed(names))
        for name in order:
            start = time.perf_counter()
            outcome = cases[name]()
            elapsed = time.perf_counter() - start
            if index < warmup:
                continue
            if isinstance(outcome, Sample):
                results[name].seconds.append(outcome.seconds)
                results[name].peak_rss.append(outcome.peak_rss)
            else:
                results[name].seconds.append(elapsed)
        if progress and index >= warmup:
            done = index - warmup + 1
            line = ", ".join(f"{n} {results[n].seconds[-1]:.3f}s" for n in names)
            print(f"  round {done}/{rounds}: {line}", file=sys.stderr, flush=True)
    return results


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    input: str | None = None,
) -> Sample:
    """Run ``argv`` in a child process: its wall time and peak RSS (``wait4``'s rusage).

    With ``check``, an exit status other than 0 or 2 (``plan --detailed-exitcode``: changes)
    raises ``RuntimeError`` with the command's error output.
    """
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
        tempfile.TemporaryFile("w+") as given,
    ):
        given.write(input or "")
        given.seek(0)
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=given if input is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
        )
        # wait4 gives this child's own rusage (its peak RSS), not the maximum over all children.
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if check and proc.returncode not in (0, 2):
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{stderr.strip() or stdout.strip()}"
        )
    # Linux reports ru_maxrss in KiB.
    return Sample(seconds, usage.ru_maxrss * 1024, proc.returncode, stdout, stderr)


def _mib(value: int) -> str:
    return f"{value / 1024 / 1024:.0f} MiB"


def print_table(
    results: Mapping[str, Timing],
    *,
    baseline: str | None = None,
    goals: Sequence[Goal] = (),
    title: str | None = None,
    out: TextIO | None = None,
) -> list[tuple[Goal, float, bool]]:
    """Print min/median/max of every case side by side, the ratio to ``baseline``, the goals.

    Returns each goal with its measured figure and whether it was met.
    """
    stream = out if out is not None else sys.stdout
    lines: list[str] = []
    if title:
        lines.append(title)
    width = max(len(name) for name in results)
    header = f"{'case':<{width}}  {'min':>8}  {'median':>8}  {'max':>8}  {'n':>3}"
    if baseline is not None:
        header += f"  {'vs ' + baseline:>14}"
    lines.append(header)
    for name, timing in results.items():
        row = (
            f"{name:<{width}}  {timing.min:>7.3f}s  {timing.median:>7.3f}s  {timing.max:>7.3f}s"
            f"  {len(timing.seconds):>3}"
        )
        if baseline is not None:
            row += f"  {timing.median / results[baseline].median:>13.2f}x"
        if timing.peak_rss:
            row += f"  peak {_mib(max(timing.peak_rss))}"
        lines.append(row)
    checked: list[tuple[Goal, float, bool]] = []
    for goal in goals:
        if baseline is None:
            raise ValueError("a goal needs a baseline")
        value, ok = goal.met(results, baseline)
        checked.append((goal, value, ok))
        lines.append(goal.describe(value, ok))
    sys.stderr.flush()
    print("\n".join(lines), file=stream, flush=True)
    return checked


def machine_info() -> dict[str, object]:
    """What the figures came from: CPU count and model, kernel, Python, LXD's version."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lxd = ""
    with contextlib.suppress(OSError):
        lxd = subprocess.run(
            ["lxd", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "lxd": lxd,
    }


def print_machine(info: Mapping[str, object] | None = None) -> None:
    """One line naming the machine, for the figures in docs/performance.md."""
    info = info if info is not None else machine_info()
    print(
        f"machine: nproc {info['nproc']}, {info['cpu']}, kernel {info['kernel']}, "
        f"Python {info['python']}, LXD {info['lxd'] or '?'}",
        flush=True,
    )


def write_json(
    args: argparse.Namespace,
    benchmark: str,
    results: Mapping[str, Timing],
    info: Mapping[str, object] | None = None,
    extra: Mapping[str, object] | None = None,
) -> None:
    """With ``--json PATH``: the results, the machine and ``extra`` facts as one JSON file."""
    if args.json is None:
        return
    data = {
        "benchmark": benchmark,
        "smoke": bool(args.smoke),
        "rounds": args.rounds,
        "machine": dict(info if info is not None else machine_info()),
        "cases": [timing.as_dict() for timing in results.values()],
        **(dict(extra) if extra else {}),
    }
    args.json.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# --- lab fleets -----------------------------------------------------------------------------------

#: The lab hosts of the benchmarks that build a lab fleet.
LAB_HOSTS = ("server01", "server02")


def lab_fleet_text(per_host: int, *, prefix: str, first_uid: int, name: str) -> str:
    """A fleet of ``per_host`` users on each of the two lab hosts ``LAB_HOSTS``, every container
    running, users named ``{prefix}{host index}x{number}`` from host uid ``first_uid``; ``name``
    heads the file as a comment."""
    users: dict[str, Any] = {}
    for h, host in enumerate(LAB_HOSTS):
        for i in range(per_host):
            uid = first_uid + h * per_host + i
            users[f"{prefix}{h}x{i:03d}"] = {
                "host": host,
                "template": "base",
                "uid": uid,
                "gid": uid,
            }
    data = {
        "version": 1,
        "defaults": {
            "container_user": "ubuntu",
            "container_uid": 1000,
            "home_source": "/home/{user}",
            "home_path": "/home/ubuntu/{user}",
            "profiles": ["default"],
            "cpu": "1",
            "state": "running",
        },
        "hosts": {
            host: {
                "endpoint": f"https://192.0.2.{11 + h}:8443",
                "client_cert": "certs/admin.crt",
                "client_key": "certs/admin.key",
                "server_cert": f"certs/{host}.crt",
            }
            for h, host in enumerate(LAB_HOSTS)
        },
        "image_servers": {
            "lab-images": {"url": "https://images.example.net/", "protocol": "simplestreams"}
        },
        "profiles": {
            "default": {
                "description": "Every user container",
                "config": {"boot.autostart": "false"},
                "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}},
            }
        },
        "templates": {
            "base": {
                "alias": "template-busybox",
                "base": "lab-images:busybox",
                "build_host": LAB_HOSTS[0],
                "steps": ["true"],
            }
        },
        "users": users,
    }
    return f"# {name}'s fleet (generated)\n" + yaml.safe_dump(data, sort_keys=False)


def say(text: str) -> None:
    """A progress line on standard error."""
    print(text, file=sys.stderr, flush=True)
