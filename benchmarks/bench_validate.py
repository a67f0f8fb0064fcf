"""Benchmark: ``validate`` of generated fleets of 2,000 and 20,000 users on 20 hosts (does I/O:
writes the fleets to a temporary folder and runs the command line in child processes).

Cases, paired in every round (each a child process, its wall time and peak memory):

- ``validate 3 users``: a tiny fleet, what start-up and imports alone cost;
- ``validate 2,000 users`` and ``validate 20,000 users``: the issue's sizes;
- ``2,000 users, pure-Python YAML``: the same command with PyYAML's pure-Python parser (what the
  loader used before libyaml), for the share of YAML parsing;

then, paired again, in this process: ``load_fleet`` and the checks ``validate`` runs
(``LoadResult.reported``) of both fleets, without start-up: their ratio shows whether loading is
linear in the number of users (10x the users: about 10x the time).

Goals (docs/performance.md): 2,000 users under 0.3 s and 100 MiB; 20,000 users under 2 s, and
linear: the time beyond start-up grows 10x for 10x the users.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_validate            # 7 rounds
    .venv/bin/python -m benchmarks.bench_validate --smoke    # 50 and 500 users, 1 round
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    Sample,
    Timing,
    machine_info,
    parse_args,
    print_machine,
    print_table,
    run_command,
    run_paired,
    write_json,
)
from lxdgpu_reconcile.fleet.loading import load_fleet

REPO = Path(__file__).resolve().parent.parent

#: Runs ``validate`` with the pure-Python YAML parser (libyaml switched off).
PURE_PYTHON = (
    "import sys\n"
    "from lxdgpu_reconcile.fleet import yamlsource\n"
    "yamlsource._CLoader = None\n"
    "from lxdgpu_reconcile.cli import main\n"
    "sys.argv = ['lxdgpu-reconcile', *sys.argv[1:]]\n"
    "main()\n"
)


def fleet_text(users: int, hosts: int = 20) -> str:
    """A valid fleet of ``users`` users spread over ``hosts`` hosts: one shared profile, one
    template, CUDA trees, a uid/gid and a CUDA version per user (the shape of the example)."""
    lines = ["version: 1", "defaults:", "  profiles: [default]", "  cpu: 75%", "hosts:"]
    for h in range(hosts):
        lines += [
            f"  server{h:02d}:",
            f"    endpoint: https://192.0.2.{h + 1}:8443",
            "    client_cert: certs/admin.crt",
            "    client_key: certs/admin.key",
            f"    server_cert: certs/server{h:02d}.crt",
            "    gpus: 4",
        ]
    lines += [
        "image_servers:",
        "  mirror: {url: 'https://images.example.org/', protocol: simplestreams}",
        "profiles:",
        "  default:",
        "    description: GPUs, a LAN address of its own, autostart",
        "    config: {nvidia.runtime: 'true', boot.autostart: 'true'}",
        "    devices:",
        "      gpu: {type: gpu}",
        "      eth0: {type: nic, name: eth0, nictype: macvlan, parent: eno1}",
        "      root: {type: disk, path: /, pool: default}",
        "cuda:",
        '  "11.8": /usr/local/cuda-11.8',
        '  "12.4": /usr/local/cuda-12.4',
        "templates:",
        "  desk:",
        "    alias: template-desk",
        "    base: mirror:ubuntu/22.04",
        "    build_host: server00",
        "    steps: [apt-get update]",
        "users:",
    ]
    for u in range(users):
        uid = 20000 + u
        cuda = "11.8" if u % 2 else "12.4"
        lines += [
            f"  user{u:05d}:",
            f"    host: server{u % hosts:02d}",
            "    template: desk",
            f"    uid: {uid}",
            f"    gid: {uid}",
            f'    cuda: ["{cuda}"]',
        ]
    return "\n".join(lines) + "\n"


def _validate(fleet: Path, *, pure_python: bool = False) -> Sample:
    args = ["validate", "-f", str(fleet), "--skip-certs"]
    if pure_python:
        return run_command([sys.executable, "-c", PURE_PYTHON, *args], cwd=REPO)
    return run_command([sys.executable, "-m", "lxdgpu_reconcile", *args], cwd=REPO)


def _verdicts(results: dict[str, Timing], small: str, large: str, tiny: str) -> list[str]:
    """The goals of the issue's rows, checked on the medians."""
    lines = []
    s, big, start = results[small], results[large], results[tiny]
    s_mib, big_mib = max(s.peak_rss) / 2**20, max(big.peak_rss) / 2**20
    ok = s.median < 0.3 and s_mib < 100
    lines.append(
        f"{small}: {s.median:.3f} s, {s_mib:.0f} MiB; goal < 0.3 s, < 100 MiB: "
        f"{'meets' if ok else 'MISSES'} the goal"
    )
    lines.append(
        f"{large}: {big.median:.3f} s, {big_mib:.0f} MiB; goal < 2 s: "
        f"{'meets' if big.median < 2 else 'MISSES'} the goal"
    )
    lines.append(f"start-up and imports ({tiny}): {start.median:.3f} s of {s.median:.3f} s")
    return lines


def _load(path: Path) -> None:
    result = load_fleet(path)
    result.reported(certs=False)
    assert result.fleet is not None, "the generated fleet must be valid"


def main(argv: list[str] | None = None) -> int:
    args = parse_args("validate: 2,000 and 20,000 users", default_rounds=7, argv=argv)
    small_n, large_n = (50, 500) if args.smoke else (2000, 20000)
    small, large = f"validate {small_n:,} users", f"validate {large_n:,} users"
    tiny, pure = "validate 3 users", f"{small_n:,} users, pure-Python YAML"
    info = machine_info()
    print_machine(info)
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        paths = {n: Path(tmp) / f"fleet-{n}.yaml" for n in (3, small_n, large_n)}
        for n, path in paths.items():
            path.write_text(fleet_text(n, hosts=min(20, n)))
        results = run_paired(
            {
                tiny: lambda: _validate(paths[3]),
                small: lambda: _validate(paths[small_n]),
                large: lambda: _validate(paths[large_n]),
                pure: lambda: _validate(paths[small_n], pure_python=True),
            },
            rounds=args.rounds,
            warmup=args.warmup,
        )
        loads = run_paired(
            {
                f"load {small_n:,} users": lambda: _load(paths[small_n]),
                f"load {large_n:,} users": lambda: _load(paths[large_n]),
            },
            rounds=args.rounds,
            warmup=args.warmup,
        )
    print_table(results, baseline=tiny, title="validate (child processes, wall time)")
    for line in _verdicts(results, small, large, tiny):
        print(line)
    first = f"load {small_n:,} users"
    print_table(loads, baseline=first, title="load_fleet + checks, in this process (no start-up)")
    grow = loads[f"load {large_n:,} users"].median / loads[first].median
    print(f"loading {large_n:,} users / {small_n:,} users: {grow:.1f}x the time for 10x the users")
    write_json(args, "bench_validate", results, info, {"users": [small_n, large_n]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
