"""Benchmark: planning 20,000 users on 20 hosts, the library call (``planner.make_plan``) and its
JSON rendering (does I/O: child processes; no LXD).

The fleet is ``bench_validate.fleet_text``; the snapshots are made in memory:

- ``fresh``: every host as ``lxd init`` leaves it, with the template's image: the plan creates
  and starts every container (the largest plan, 40,000 actions and more);
- ``in sync``: every profile and container already as the fleet wants it, running: the plan is
  empty (what a cron run plans most of the time).

Each case runs in a child process that builds the fleet and the snapshot (not timed), then times
``make_plan`` (the figure of the table) and then ``plan_json.render`` of its plan (printed below
the table), and reports its peak memory after planning and after rendering (the fleet and the
snapshot included).

Goal (docs/performance.md): the library call under 2 s and 500 MiB for 20,000 users.

Run from the repository root::

    .venv/bin/python -m benchmarks.bench_planning            # 20,000 users, 5 rounds
    .venv/bin/python -m benchmarks.bench_planning --smoke    # 200 users, 1 round
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_validate import fleet_text
from benchmarks.common import (
    Sample,
    machine_info,
    parse_args,
    print_machine,
    print_table,
    run_command,
    run_paired,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent
HOSTS = 20
GOAL_SECONDS, GOAL_MIB = 2.0, 500

#: Keys LXD writes into a container's local config when it creates it from an image.
LXD_ADDED = {
    "volatile.idmap.base": "0",
    "volatile.idmap.next": "[]",
    "volatile.last_state.idmap": "[]",
    "volatile.uuid": "5e1f0000-0000-4000-8000-000000000000",
    "image.os": "Ubuntu",
}


def scenario(users: int, kind: str) -> tuple[Any, Any, Any]:
    """The fleet, snapshot and site of ``kind`` (``fresh`` or ``in-sync``) for ``users``."""
    from lxdgpu_reconcile import site as sites
    from lxdgpu_reconcile import state
    from lxdgpu_reconcile.fleet.loading import load_text
    from lxdgpu_reconcile.planning import desired as desiring
    from lxdgpu_reconcile.templates import recipe

    fleet = load_text(fleet_text(users, hosts=HOSTS)).fleet
    assert fleet is not None
    site = sites.Site()
    default = state.ProfileObs(
        name="default",
        devices={"root": {"type": "disk", "path": "/", "pool": "default"}},
    )
    template = fleet.templates["desk"]
    alias = template.alias
    key = recipe.base_key(recipe.parse_base(template, fleet.image_servers), ())
    assert key is not None
    current = recipe.recipe_hash(template, key, file_contents={})
    properties = recipe.image_properties(
        "desk", template, recipe_hash=current, base_fingerprint=key
    )
    fresh = state.FleetSnapshot(
        hosts={
            name: state.HostSnapshot(
                host=name,
                endpoint=host.endpoint,
                cpus=32,
                gpus=tuple(state.GpuObs(id=i) for i in range(4)),
                images=(
                    state.ImageObs(
                        fingerprint=f"fp-{alias}", aliases=(alias,), properties=properties
                    ),
                ),
                profiles={"default": default},
            )
            for name, host in fleet.hosts.items()
        }
    )
    if kind == "fresh":
        return fleet, fresh, site
    want = desiring.expand(fleet, fresh, site)
    hosts = {}
    for name, snap in fresh.hosts.items():
        wanted = want.hosts[name]
        profiles = {
            p: state.ProfileObs(
                name=p, **body.model_dump(include={"description", "config", "devices"})
            )
            for p, body in wanted.profiles.items()
        }
        instances = {}
        for i, body in wanted.instances.items():
            config = {**body.config, **LXD_ADDED, "volatile.base_image": f"fp-{alias}"}
            expanded_config: dict[str, str] = {}
            expanded_devices: dict[str, dict[str, str]] = {}
            for p in body.profiles:
                expanded_config.update(profiles[p].config)
                expanded_devices.update(profiles[p].devices)
            instances[i] = state.InstanceObs(
                name=i,
                status="Running",
                profiles=body.profiles,
                config=config,
                devices=body.devices,
                expanded_config={**expanded_config, **config},
                expanded_devices={**expanded_devices, **body.devices},
            )
        hosts[name] = snap.model_copy(update={"profiles": profiles, "instances": instances})
    return fleet, state.FleetSnapshot(hosts=hosts), site


def child(users: int, kind: str) -> None:
    """Build the scenario, then time planning and rendering; print the seconds of each, the
    peak memory after planning (bytes), the number of actions and the JSON's length."""
    from lxdgpu_reconcile.planning import planner
    from lxdgpu_reconcile.report import plan_json

    fleet, snapshot, site = scenario(users, kind)
    started = time.perf_counter()
    plan = planner.make_plan(fleet, snapshot, site)
    planned = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    text = plan_json.render(plan)
    rendered = time.perf_counter()
    print(
        f"{planned - started:.6f} {rendered - planned:.6f} {peak} {len(plan.actions)} {len(text)}"
    )


#: Per case: the JSON render's seconds, and the peak memory after planning, of every round.
RENDERS: dict[str, list[float]] = {}
PLAN_PEAKS: dict[str, list[int]] = {}


def _run_child(name: str, users: int, kind: str) -> Sample:
    argv = [sys.executable, "-m", "benchmarks.bench_planning", "--child", kind, str(users)]
    sample = run_command(argv, cwd=REPO)
    plan_s, render_s, peak, *_ = sample.stdout.split()
    RENDERS.setdefault(name, []).append(float(render_s))
    PLAN_PEAKS.setdefault(name, []).append(int(peak))
    return Sample(float(plan_s), sample.peak_rss, sample.returncode, sample.stdout, sample.stderr)


def _child_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--child", nargs=2, metavar=("KIND", "USERS"), help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(
        "planning 20,000 users (library call)", default_rounds=5, argv=argv, extra=_child_option
    )
    if args.child:
        child(int(args.child[1]), args.child[0])
        return 0
    users = 200 if args.smoke else 20000
    info = machine_info()
    print_machine(info)
    fresh, in_sync = f"plan {users:,} users, fresh hosts", f"plan {users:,} users, in sync"
    cases = {
        fresh: lambda: _run_child(fresh, users, "fresh"),
        in_sync: lambda: _run_child(in_sync, users, "in-sync"),
    }
    results = run_paired(cases, rounds=args.rounds, warmup=args.warmup)
    print_table(results, title="planner.make_plan (child processes; peak: after the JSON too)")
    for name, timing in results.items():
        mib = max(PLAN_PEAKS[name][-len(timing.seconds) :]) / 2**20
        ok = timing.median < GOAL_SECONDS and mib < GOAL_MIB
        print(
            f"{name}: {timing.median:.3f} s, peak {mib:.0f} MiB through planning (the process, "
            f"fleet and snapshot included); goal < {GOAL_SECONDS:g} s, < {GOAL_MIB} MiB: "
            f"{'meets' if ok else 'MISSES'} the goal"
        )
    for name, timing in results.items():
        render = statistics.median(RENDERS[name][-len(timing.seconds) :])
        print(
            f"{name}: plan_json.render {render:.3f} s more, peak {max(timing.peak_rss) / 2**20:.0f}"
            " MiB with the JSON"
        )
    write_json(args, "bench_planning", results, info, {"users": users, "hosts": HOSTS})
    return 0


if __name__ == "__main__":
    sys.exit(main())
