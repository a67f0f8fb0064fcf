"""Faults of a host's LXD daemon during an apply, against real LXD daemons of the local lab.

- LXD killed (SIGKILL) during a create leaves the container in its database without a root
  filesystem; once LXD runs again, the next apply recreates it and converges.
- LXD that stops answering (SIGSTOP) mid-apply: the apply ends within seconds of the first
  timeout, the rest of that host's actions skipped as "host stopped answering", the other host
  applied; once it answers again (SIGCONT), one apply converges and the next plan is empty.

Each test runs the command line in a child process, so that the daemon can be signalled while
the apply runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lxdgpu_reconcile.execute.executor import DEFAULT_PARALLEL
from lxdgpu_reconcile.fleet.loading import load_fleet
from lxdgpu_reconcile.lab import lab_up, load_lab
from tests.integration.conftest import LabHandle, bring_down, bring_up, new_lab_dir

pytestmark = pytest.mark.lxd

FAULT_FLEET = """
version: 1
defaults:
  container_user: ubuntu
  container_uid: 1000
  home_source: /home/{user}
  home_path: /home/ubuntu/{user}
  profiles: [default]
hosts:
  flt1:
    endpoint: https://192.0.2.41:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/flt1.crt
  flt2:
    endpoint: https://192.0.2.42:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/flt2.crt
image_servers:
  lab-images:
    url: https://images.example.net/
    protocol: simplestreams
profiles:
  default:
    description: root disk only
    devices:
      root: {type: disk, path: /, pool: default}
templates:
  base:
    alias: template-busybox
    base: lab-images:busybox
    build_host: flt1
    hosts: [flt1, flt2]
    steps:
      - echo lab > /etc/motd
users:
  ann: {host: flt1, template: base, uid: 2921, gid: 2921}
  bob: {host: flt1, template: base, uid: 2922, gid: 2922}
  cat: {host: flt2, template: base, uid: 2923, gid: 2923}
"""
#: Users added for the hang: two more containers on flt1, one on flt2.
MORE_USERS = {
    "dan": {"host": "flt1", "template": "base", "uid": 2924, "gid": 2924},
    "eve": {"host": "flt1", "template": "base", "uid": 2925, "gid": 2925},
    "fay": {"host": "flt2", "template": "base", "uid": 2926, "gid": 2926},
}


class Faults:
    def __init__(self, handle: LabHandle, work: Path) -> None:
        self.handle = handle
        self.work = work

    def argv(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "lxdgpu_reconcile",
            *args,
            "-f",
            str(self.handle.fleet_path),
            "--lab",
            str(self.handle.dir),
        ]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=600, check=False
        )

    def start_apply(self, timeout: int) -> subprocess.Popen[str]:
        lock = str(self.work / "apply.lock")
        argv = self.argv("apply", "--yes", "--timeout", str(timeout), "--lock-file", lock)
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def apply(self) -> subprocess.CompletedProcess[str]:
        return self.run("apply", "--yes", "--timeout", "30", "--lock-file", str(self.work / "l"))

    def plan(self) -> dict[str, Any]:
        done = self.run("plan", "--format", "json")
        assert done.returncode in (0, 2), done.stderr
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def pid(self, host: str) -> int:
        pid = load_lab(self.handle.dir).hosts[host].pid
        assert pid
        return pid

    def volume(self, host: str, name: str) -> Path:
        lxd_dir = Path(self.handle.state.hosts[host].lxd_dir)
        return lxd_dir / "storage-pools" / "default" / "containers" / name

    def relab(self) -> None:
        """``lab up`` again: restarts a daemon that is gone, delegates new users' ids."""
        loaded = load_fleet(self.handle.fleet_path)
        assert loaded.fleet is not None
        lab_up(loaded.fleet, self.handle.dir)

    def instance(self, host: str, name: str) -> dict[str, Any]:
        done = self.handle.lxc(host, "query", f"/1.0/instances/{name}")
        data: dict[str, Any] = json.loads(done.stdout)
        return data


def wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.001)
    return False


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faults]:
    work = tmp_path_factory.mktemp("faults")
    fleet_path = work / "fleet.yaml"
    fleet_path.write_text(FAULT_FLEET)
    lab_dir = new_lab_dir()
    try:
        yield Faults(bring_up(fleet_path, lab_dir), work)
    finally:
        bring_down(lab_dir)


def test_lxd_killed_mid_create_converges_on_the_next_apply(faults: Faults) -> None:
    apply = faults.start_apply(timeout=20)
    if not wait_for(faults.volume("flt1", "ann-container"), 60):
        apply.kill()
        pytest.fail(f"the create of ann-container never started: {apply.communicate()[0]}")
    os.kill(faults.pid("flt1"), signal.SIGKILL)
    first = apply.communicate(timeout=300)[0]
    assert apply.returncode == 1, first

    faults.relab()  # LXD runs again
    half = faults.instance("flt1", "ann-container")
    assert half["status"] == "Stopped"
    assert "volatile.apply_template" not in half["config"], "the kill came after the create"
    assert "volatile.last_state.power" not in half["config"]
    start = faults.handle.lxc("flt1", "start", "ann-container", check=False)
    assert "idmapped storage" in start.stderr  # what every apply hit before

    again = faults.apply()

    assert again.returncode == 0, again.stdout + again.stderr
    assert "delete instance ann-container done" in again.stdout + again.stderr
    for host, name in (("flt1", "ann-container"), ("flt1", "bob-container")):
        assert faults.instance(host, name)["status"] == "Running"
    assert [h["actions"] for h in faults.plan()["hosts"] if h["actions"]] == []


def test_a_host_that_stops_answering_is_skipped_within_seconds(faults: Faults) -> None:
    data = yaml.safe_load(faults.handle.fleet_path.read_text())
    data["users"].update(MORE_USERS)
    faults.handle.fleet_path.write_text(yaml.safe_dump(data, sort_keys=False))
    faults.relab()
    pid = faults.pid("flt1")

    apply = faults.start_apply(timeout=5)
    try:
        if not wait_for(faults.volume("flt1", "dan-container"), 60):
            apply.kill()
            pytest.fail(f"the create of dan-container never started: {apply.communicate()[0]}")
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        out = apply.communicate(timeout=120)[0]
        took = time.monotonic() - stopped
    finally:
        os.kill(pid, signal.SIGCONT)

    assert apply.returncode == 1, out
    # Only the actions already running when LXD stopped wait their timeout (5 s), at most
    # `--parallel` of them; every other action of that host is skipped at once as "host stopped
    # answering", without asking it. The other host's work, its accounts over ssh included, runs
    # meanwhile, so the wall time is only bounded loosely, against a hang.
    waited = {
        line.split(" failed:")[0]
        for line in out.splitlines()
        if line.lstrip().startswith("✗ flt1:") and "within 5 s" in line
    }
    assert 1 <= len(waited) <= DEFAULT_PARALLEL, out
    assert "skipped: not run: host stopped answering" in out, out
    assert took < 60, f"the apply took {took:.1f}s after LXD stopped answering:\n{out}"
    assert "host stopped answering" in out
    assert "HTTPSConnectionPool" not in out and "Max retries" not in out
    assert "flt2: start instance fay-container done" in out
    assert faults.instance("flt2", "fay-container")["status"] == "Running"

    time.sleep(2)  # LXD finishes what it was doing when it was stopped
    again = faults.apply()
    assert again.returncode == 0, again.stdout + again.stderr
    for name in ("dan-container", "eve-container"):
        assert faults.instance("flt1", name)["status"] == "Running"
    assert [h["actions"] for h in faults.plan()["hosts"] if h["actions"]] == []
