"""Benchmark: a no-op ``plan`` against a parallel raw read of the same hosts (does I/O).

Builds a lab fleet of 2 hosts x N running containers (N = 200; ``--smoke``: 5) in a lab of its
own under /var/tmp (needs root, like ``lab up``), then runs, paired, in each round:

- ``raw read``: ``GET /1.0/instances?recursion=1``, ``/1.0/profiles?recursion=1`` and
  ``/1.0/images?recursion=1`` of both hosts in parallel, one thread and one pinned https session
  per host, each body decoded once: the least any tool can do to learn what ``plan`` needs;
- ``plan (library)``: what ``lxdgpu-reconcile plan`` calls: ``service.load`` then
  ``service.plan`` (observation and planning);
- ``plan (CLI)``: ``lxdgpu-reconcile plan -f FLEET --lab LAB`` in a child process (start-up,
  loading, observation, planning, rendering);
- ``status (CLI)`` (not with ``--no-status``): ``status --format json``, which also reads the
  addresses of running containers.

The goal of docs/performance.md's row is the library plan at most 1.5x the raw read.

The fleet is made by the tool itself, fast: the template and profiles by ``service.apply`` of a
plan for one user per host; then every other user's account, home and id delegations by
``service.apply`` of the host actions of the whole fleet's plan (over SSH, on each lab host's own
system, as on real servers), and their containers in bulk through the API (every create, then
every start, all in flight at once), with the bodies the plan asks for. The plan of the whole
fleet is then empty; the script checks that before timing. ``--keep`` leaves the
lab up (``--work-dir`` reuses it next time).

Run from the repository root, as root::

    .venv/bin/python -m benchmarks.bench_plan            # 2 x 200, 7 rounds
    .venv/bin/python -m benchmarks.bench_plan --smoke    # 2 x 5, 1 round
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import requests.adapters
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from benchmarks.common import (
    LAB_HOSTS,
    Goal,
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
from lxdgpu_reconcile.execute import host_actions
from lxdgpu_reconcile.execute import requests as lxd_requests
from lxdgpu_reconcile.fleet.models import Fleet, Host
from lxdgpu_reconcile.lab import lab_down, lab_up
from lxdgpu_reconcile.planning import model as plans

REPO = Path(__file__).resolve().parent.parent
HOSTS = LAB_HOSTS
#: First host uid of the generated users (one uid/gid each).
FIRST_UID = 20000


def fleet_text(per_host: int) -> str:
    """A fleet of ``per_host`` users on each of the two hosts, every container running."""
    return lab_fleet_text(per_host, prefix="u", first_uid=FIRST_UID, name="bench_plan")


def bring_up(work: Path, per_host: int) -> tuple[Path, Path, service.Loaded]:
    """Write the fleet file, bring its lab up (``WORK/lab``), make every container."""
    fleet_path, lab_dir = work / "fleet.yaml", work / "lab"
    fleet_path.write_text(fleet_text(per_host))
    spec = service.read_fleet(fleet_path, certs=False).fleet
    started = time.perf_counter()
    lab_up(spec, lab_dir, progress=say)
    say(f"lab up in {time.perf_counter() - started:.1f}s")
    loaded = service.load(fleet_path, lab_dir)
    populate(loaded)
    return fleet_path, lab_dir, loaded


def populate(loaded: service.Loaded) -> None:
    """Make the fleet real: the template and profiles through the tool, containers in bulk."""
    first = tuple(f"u{h}x000" for h in range(len(HOSTS)))
    started = time.perf_counter()
    seed = service.plan(loaded, service.PlanRequest(targets=first), timeout=120)
    if seed.plan.hosts and any(h.actions for h in seed.plan.hosts):
        report = service.apply(loaded, seed.plan, timeout=300)
        failed = [r for r in report.results if r.outcome.value != "done"]
        if failed:
            raise SystemExit(f"setting up the lab fleet failed: {failed}")
    say(f"template, profiles and 2 containers in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    rest = service.plan(loaded, service.PlanRequest(), timeout=120).plan
    host_layer(loaded, rest)
    say(f"accounts, homes and delegations in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    bulk_create(loaded.fleet, rest)
    say(f"bulk creates and starts in {time.perf_counter() - started:.1f}s")
    left = service.plan(loaded, service.PlanRequest(), timeout=120).plan
    if left.actions:
        raise SystemExit(f"the lab fleet is not converged: {[a.id for a in left.actions]}")


def host_layer(loaded: service.Loaded, plan: plans.Plan) -> None:
    """The host actions of ``plan`` (accounts, homes, id delegations), applied by the tool."""
    hosts = tuple(
        h.model_copy(update={"actions": tuple(filter(host_actions.is_host_action, h.actions))})
        for h in plan.hosts
    )
    only = plan.model_copy(update={"hosts": hosts})
    if not only.actions:
        return
    report = service.apply(loaded, only, timeout=300)
    failed = [r for r in report.results if r.outcome.value != "done"]
    if failed:
        raise SystemExit(f"setting up the lab hosts' own systems failed: {failed}")


def bulk_create(fleet: Fleet, plan: plans.Plan, width: int = 16) -> None:
    """Every create of ``plan``, then every start, ``width`` in flight per host, raw API."""

    def one_host(host_plan: plans.HostPlan) -> None:
        session, base = raw_session(fleet.hosts[host_plan.host])
        bodies = [
            lxd_requests.create_instance_request(a.body)
            for a in host_plan.actions
            if isinstance(a.body, plans.CreateInstanceBody)
        ]
        starts = [a.object.name for a in host_plan.actions if a.kind is plans.ActionKind.START]

        def create(body: dict[str, Any]) -> None:
            wait(session, base, session.post(f"{base}/1.0/instances", json=body))

        def start(name: str) -> None:
            state = {"action": "start", "timeout": 60}
            wait(session, base, session.put(f"{base}/1.0/instances/{name}/state", json=state))

        with ThreadPoolExecutor(width) as pool:
            list(pool.map(create, bodies))
            list(pool.map(start, starts))

    with ThreadPoolExecutor(len(plan.hosts) or 1) as pool:
        list(pool.map(one_host, plan.hosts))


def wait(session: requests.Session, base: str, response: requests.Response) -> None:
    """Wait for the operation ``response`` started; exit with LXD's error when it failed."""
    started = response.json()
    if started.get("type") != "async":
        raise SystemExit(f"LXD refused a request: {started.get('error')}")
    answer = session.get(f"{base}{started['operation']}/wait", params={"timeout": 300}).json()
    if (answer.get("metadata") or {}).get("status_code") != 200:
        raise SystemExit(f"LXD operation failed: {answer}")


# --- the cases ------------------------------------------------------------------------------------


class _Pinned(requests.adapters.HTTPAdapter):
    """TLS pinned to one certificate's SHA-256 (as ``lxc`` pins a remote), no CA store."""

    def __init__(self, fingerprint: str, client: tuple[str, str]) -> None:
        self.fingerprint = fingerprint
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE
        self.context.load_cert_chain(*client)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.context
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        conn.assert_fingerprint = self.fingerprint
        super().cert_verify(conn, url, False, None)


def raw_session(host: Host) -> tuple[requests.Session, str]:
    """A requests session pinned to ``host``'s certificate (as an LXD client would make it)."""
    assert host.client_cert and host.client_key and host.server_cert
    pem = Path(host.server_cert).read_bytes()
    fingerprint = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()
    session = requests.Session()
    session.trust_env = False
    base = host.endpoint.rstrip("/")
    session.mount(base, _Pinned(fingerprint, (host.client_cert, host.client_key)))
    return session, base


def raw_read(fleet: Fleet) -> Callable[[], object]:
    """The baseline: what ``plan`` needs from every host, read in parallel, decoded once."""
    paths = ("instances?recursion=1", "profiles?recursion=1", "images?recursion=1")

    def one_host(host: Host) -> int:
        session, base = raw_session(host)
        with session:
            return sum(len(session.get(f"{base}/1.0/{p}").json()["metadata"]) for p in paths)

    def run() -> object:
        with ThreadPoolExecutor(len(fleet.hosts)) as pool:
            return sum(pool.map(one_host, fleet.hosts.values()))

    return run


def library_plan(fleet_path: Path, lab_dir: Path) -> Callable[[], object]:
    def run() -> object:
        loaded = service.load(fleet_path, lab_dir)
        planned = service.plan(loaded, service.PlanRequest(), timeout=60)
        if planned.plan.actions:
            raise SystemExit(f"the plan is not empty: {planned.plan.actions[0].id} ...")
        return planned

    return run


def cli(*args: str) -> Callable[[], object]:
    argv = [sys.executable, "-m", "lxdgpu_reconcile", *args]
    return lambda: run_command(argv, cwd=REPO)


def extra_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--per-host", type=int, default=None, help="containers per host")
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="the fleet file and lab (reused when there)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.add_argument("--no-status", action="store_true", help="do not time `status`")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv=argv, extra=extra_options)
    per_host = args.per_host or (5 if args.smoke else 200)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="lxbench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    lab_dir = work / "lab"
    try:
        fleet_path, lab_dir, loaded = bring_up(work, per_host)
        lab = ["-f", str(fleet_path), "--lab", str(lab_dir)]
        cases: dict[str, Callable[[], object]] = {
            "raw read": raw_read(loaded.fleet),
            "plan (library)": library_plan(fleet_path, lab_dir),
            "plan (CLI)": cli("plan", *lab, "--detailed-exitcode"),
        }
        if not args.no_status:
            cases["status (CLI)"] = cli("status", *lab, "--format", "json")
        results = run_paired(cases, rounds=args.rounds, warmup=args.warmup)
        info = machine_info()
        print_machine(info)
        print(f"fleet: {len(HOSTS)} hosts x {per_host} running containers")
        goals = () if args.smoke else (Goal("plan (library)", "<=", 1.5),)
        print_table(results, baseline="raw read", goals=goals)
        write_json(args, "bench_plan", results, info, {"per_host": per_host})
    finally:
        if not args.keep:
            lab_down(lab_dir, progress=say)
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"lab kept in {work} (reuse it with --work-dir {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
