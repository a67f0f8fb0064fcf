"""Response time of ``serve``'s page and API with 2 hosts x 200 containers, served from the
snapshot (does I/O: serves HTTP on a loopback port with uvicorn and requests it; no LXD).

Not a timed test: it prints min/median/max per route. ``/healthz`` (a tiny JSON answer) is the
baseline, so the ratios show what rendering the page and the API costs over HTTP itself.

    .venv/bin/python -m benchmarks.bench_web              # 2 hosts x 200 containers
    .venv/bin/python -m benchmarks.bench_web --smoke      # 2 x 5 containers, 1 round
"""

from __future__ import annotations

import threading
import time
import urllib.request
from datetime import UTC, datetime

import uvicorn

from benchmarks.common import (
    machine_info,
    parse_args,
    print_machine,
    print_table,
    run_paired,
    write_json,
)
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.state import Address, FleetSnapshot, GpuObs, HostSnapshot, InstanceObs
from lxdgpu_reconcile.web.board import Board
from lxdgpu_reconcile.web.server import create_app
from lxdgpu_reconcile.web.view import page_data

HOSTS = ("server01", "server02")


def fleet_and_snapshot(per_host: int) -> tuple[Fleet, FleetSnapshot]:
    fleet = Fleet.model_validate(
        {"version": 1, "hosts": {h: {"endpoint": f"unix:///srv/{h}/unix.socket"} for h in HOSTS}}
    )
    hosts = {}
    for h_index, host in enumerate(HOSTS):
        instances = {}
        for n in range(per_host):
            name = f"user{n:03d}-container"
            instances[name] = InstanceObs(
                name=name,
                status="Running" if n % 4 else "Stopped",
                description=f"container of user{n:03d}",
                profiles=("default", "cuda-11.8"),
                config={"user.lxdgpu.user": f"user{n:03d}", "user.lxdgpu.managed": "true"},
                expanded_config={"limits.cpu": "8"},
                expanded_devices={"gpu": {"type": "gpu", "id": str(n % 4)}},
                addresses=(
                    Address(
                        interface="eth0",
                        family="inet",
                        address=f"10.{h_index}.{n // 250}.{n % 250 + 1}",
                        scope="global",
                    ),
                ),
            )
        hosts[host] = HostSnapshot(
            host=host,
            endpoint=f"unix:///srv/{host}/unix.socket",
            server_version="5.0.2",
            cpus=64,
            gpus=tuple(GpuObs(id=i, product="GA102 [GeForce RTX 3090]") for i in range(4)),
            instances=instances,
        )
    return fleet, FleetSnapshot(hosts=hosts)


def serve(per_host: int) -> tuple[str, uvicorn.Server]:
    fleet, snapshot = fleet_and_snapshot(per_host)
    board = Board(lambda observation: page_data(fleet, observation, interval=30))
    board.record(snapshot, duration=0.5, now=datetime.now(UTC))
    config = uvicorn.Config(create_app(board), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/", server


def main() -> None:
    args = parse_args("serve: page and API from the snapshot", default_rounds=50)
    per_host = 5 if args.smoke else 200
    url, server = serve(per_host)

    def fetch(path: str) -> None:
        with urllib.request.urlopen(url + path, timeout=30) as answer:
            answer.read()

    try:
        results = run_paired(
            {
                "healthz": lambda: fetch("healthz"),
                "page /": lambda: fetch(""),
                "api /api/v1/status": lambda: fetch("api/v1/status"),
                "metrics": lambda: fetch("metrics"),
            },
            rounds=args.rounds,
            warmup=args.warmup,
            progress=False,
        )
    finally:
        server.should_exit = True
    info = machine_info()
    print_machine(info)
    print_table(
        results,
        baseline="healthz",
        title=f"serve, {len(HOSTS)} hosts x {per_host} containers, from the snapshot",
    )
    write_json(args, "bench_web", results, info, {"hosts": len(HOSTS), "per_host": per_host})


if __name__ == "__main__":
    main()
