"""Benchmark: ``apply`` of new containers on 2 hosts against the guide's sequential ``lxc`` loop
(does I/O).

Builds a lab fleet of 2 hosts x N users (N = 20: 40 containers; ``--smoke``: 2) in a lab of its
own under /var/tmp (needs root, like ``lab up``); the template and the profiles are made once by
the tool. Then, paired, in each round, each case starting with none of the users' containers
(they are deleted before it, untimed):

- ``lxc loop``: the guide's loop, one container after another on one host then the other,
  over each host's unix socket: ``lxc launch ALIAS NAME -p PROFILE...``, ``lxc config set NAME
  KEY=VALUE...`` with the config the plan creates the container with, and one ``lxc config device
  add NAME DEVICE TYPE KEY=VALUE...`` per device (a bash script run as one child process);
- ``apply --parallel W`` for each width W of ``--widths`` (default 1, 4 and 8):
  ``lxdgpu-reconcile apply --yes`` in a child process (start-up, loading, observation, planning,
  the creates and starts, the report).

It also prints, per case, the median CPU seconds the two LXD daemons used during it (their own
and their reaped children's): divided by the number of cores, a lower bound of the wall time of
any client on this machine.

The goal of docs/performance.md's row is the apply at the default width at least 4x faster than
the loop. Run from the repository root, as root::

    .venv/bin/python -m benchmarks.bench_apply            # 2 x 20, 5 rounds
    .venv/bin/python -m benchmarks.bench_apply --smoke    # 2 x 2, 1 round
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import (
    LAB_HOSTS,
    Goal,
    Sample,
    lab_fleet_text,
    machine_info,
    parse_args,
    print_machine,
    print_table,
    run_command,
    run_paired,
    say,
    write_json,
)
from lxdgpu_reconcile import service
from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.lab import LabState, lab_down, lab_up
from lxdgpu_reconcile.planning import model as plans

REPO = Path(__file__).resolve().parent.parent
HOSTS = LAB_HOSTS
#: First host uid of the generated users (one uid/gid each).
FIRST_UID = 30000


def fleet_text(per_host: int) -> str:
    """A fleet of ``per_host`` users on each of the two hosts, every container running."""
    return lab_fleet_text(per_host, prefix="a", first_uid=FIRST_UID, name="bench_apply")


class Bench:
    """The lab fleet of one run: its files, lab, and the creates the plan makes."""

    def __init__(self, work: Path, per_host: int) -> None:
        self.work = work
        self.fleet_path, self.lab_dir = work / "fleet.yaml", work / "lab"
        self.fleet_path.write_text(fleet_text(per_host))
        spec = service.read_fleet(self.fleet_path, certs=False).fleet
        started = time.perf_counter()
        self.state: LabState = lab_up(spec, self.lab_dir, progress=say)
        say(f"lab up in {time.perf_counter() - started:.1f}s")
        self.loaded = service.load(self.fleet_path, self.lab_dir)
        started = time.perf_counter()
        self.converge()
        say(f"template, profiles and containers in {time.perf_counter() - started:.1f}s")
        self.reset()
        self.creates = self.planned_creates()
        self.cpu: dict[str, list[float]] = {}
        say(f"{len(self.creates)} containers to create in each round")

    def converge(self) -> None:
        plan = service.plan(self.loaded, service.PlanRequest(), timeout=120).plan
        report = service.apply(self.loaded, plan, timeout=300)
        failed = [r for r in report.results if r.outcome.value != "done"]
        if failed:
            raise SystemExit(f"setting up the lab fleet failed: {failed}")

    def planned_creates(self) -> list[plans.Action]:
        """The creates of the plan against hosts without the users' containers."""
        plan = service.plan(self.loaded, service.PlanRequest(), timeout=120).plan
        kinds = {a.kind for a in plan.actions}
        if kinds != {plans.ActionKind.CREATE, plans.ActionKind.START}:
            raise SystemExit(f"the plan of a round is not creates and starts only: {kinds}")
        return [a for a in plan.actions if isinstance(a.body, plans.CreateInstanceBody)]

    def lxc_env(self, host: str) -> str:
        lab = self.state.hosts[host]
        return (
            f"export LXD_DIR={shlex.quote(lab.lxd_dir)} LXD_CONF={shlex.quote(self.state.lxc_conf)}"
        )

    def reset(self) -> None:
        """Delete the users' containers on both hosts (the template and profiles stay)."""

        def one_host(host: str) -> None:
            lab = self.state.hosts[host]
            env = {"LXD_DIR": lab.lxd_dir, "LXD_CONF": self.state.lxc_conf, "PATH": "/usr/bin:/bin"}
            listed = subprocess.run(
                ["lxc", "list", "--format", "csv", "-c", "n"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            names = [n for n in listed if n.startswith("a") and n.endswith("-container")]
            unprotect = ["config", "set", "security.protection.delete=false"]

            def release(name: str) -> None:
                argv = ["lxc", *unprotect[:2], name, unprotect[2]]
                subprocess.run(argv, env=env, check=True)

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(release, names))
            if names:
                subprocess.run(["lxc", "delete", "--force", *names], env=env, check=True)

        with ThreadPoolExecutor(len(HOSTS)) as pool:
            list(pool.map(one_host, HOSTS))

    def loop_script(self) -> str:
        """The guide's loop for this round's containers, as one bash script."""
        lines = ["set -e"]
        for host in HOSTS:
            lines.append(self.lxc_env(host))
            for action in self.creates:
                body = action.body
                if action.host != host or not isinstance(body, plans.CreateInstanceBody):
                    continue
                profiles = [arg for p in body.profiles for arg in ("-p", p)]
                lines.append(shlex.join(["lxc", "launch", body.alias, body.name, *profiles]))
                pairs = [f"{key}={value}" for key, value in body.config.items()]
                lines.append(shlex.join(["lxc", "config", "set", body.name, *pairs]))
                for device, fields in body.devices.items():
                    kind = fields["type"]
                    rest = [f"{k}={v}" for k, v in fields.items() if k != "type"]
                    add = ["lxc", "config", "device", "add", body.name, device, kind, *rest]
                    lines.append(shlex.join(add))
        return "\n".join(lines) + "\n"

    def lxd_cpu(self) -> float:
        """CPU seconds used so far by the lab's LXD daemons and their reaped children."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for lab in self.state.hosts.values():
            try:
                fields = Path(f"/proc/{lab.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # utime, stime, cutime, cstime: fields 14-17 of stat(5), 12-15 after "(comm)".
            total += sum(int(value) for value in fields[11:15]) / ticks
        return total

    def counted(self, name: str, case: Callable[[], object]) -> Callable[[], object]:
        """``case``, recording the LXD CPU seconds of its timed part in ``self.cpu[name]``."""

        def run() -> object:
            before = self.lxd_cpu()
            result = case()
            self.cpu.setdefault(name, []).append(self.lxd_cpu() - before)
            return result

        return run

    def loop(self) -> Callable[[], object]:
        script = self.work / "loop.sh"

        def run() -> object:
            self.reset()
            script.write_text(self.loop_script())
            return run_command(["bash", str(script)])

        return run

    def apply(self, width: int) -> Callable[[], object]:
        argv = [
            sys.executable,
            "-m",
            "lxdgpu_reconcile",
            "apply",
            "--yes",
            "-f",
            str(self.fleet_path),
            "--lab",
            str(self.lab_dir),
            "--parallel",
            str(width),
        ]

        def run() -> object:
            self.reset()
            sample: Sample = run_command(argv, cwd=REPO)
            if "Apply complete" not in sample.stdout:
                raise SystemExit(f"apply --parallel {width} did not complete:\n{sample.stdout}")
            return sample

        return run


def extra_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--per-host", type=int, default=None, help="containers per host")
    parser.add_argument(
        "--widths",
        default="1,4,8",
        help="apply --parallel widths to time, comma-separated (default 1,4,8)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], default_rounds=5, argv=argv, extra=extra_options)
    per_host = args.per_host or (2 if args.smoke else 20)
    widths = [int(w) for w in args.widths.split(",") if w.strip()]
    work = Path(tempfile.mkdtemp(prefix="lxbench-", dir="/var/tmp"))
    work.chmod(0o755)
    lab_dir = work / "lab"
    try:
        bench = Bench(work, per_host)
        cases: dict[str, Callable[[], object]] = {"lxc loop": bench.loop()}
        for width in widths:
            cases[f"apply --parallel {width}"] = bench.apply(width)
        cases = {name: bench.counted(name, case) for name, case in cases.items()}
        results = run_paired(cases, rounds=args.rounds, warmup=args.warmup)
        info = machine_info()
        print_machine(info)
        print(f"fleet: {len(HOSTS)} hosts x {per_host} new containers, created and started")
        default = f"apply --parallel {executor.DEFAULT_PARALLEL}"
        goals = () if args.smoke or default not in cases else (Goal(default, ">=", 4.0),)
        print_table(results, baseline="lxc loop", goals=goals)
        cores = os.cpu_count() or 1
        for name, spent in bench.cpu.items():
            median = statistics.median(spent[-args.rounds :])
            print(
                f"{name}: LXD used {median:.1f} CPU s (median), at least {median / cores:.1f} s "
                f"of wall time on {cores} cores"
            )
        extra = {"per_host": per_host, "widths": widths, "lxd_cpu_seconds": bench.cpu}
        write_json(args, "bench_apply", results, info, extra)
    finally:
        if not args.keep:
            lab_down(lab_dir, progress=say)
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"lab kept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
