"""The local lab against real LXD daemons: up, https with pinned certificates, a running
container, idempotent up, ``lab env`` with plain ``lxc``, and a down that leaves nothing behind."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml

from lxdgpu_reconcile.lab import hostsys, lab_up, load_lab, shared
from lxdgpu_reconcile.lab.idmap import SUBGID, SUBUID
from lxdgpu_reconcile.lab.netdev import exists as link_exists
from lxdgpu_reconcile.lab.netdev import peer_name
from lxdgpu_reconcile.lab.system import is_lxd_of, pid_gone
from tests.integration.conftest import LabHandle

pytestmark = pytest.mark.lxd


def _session(handle: LabHandle, pin: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = pin
    session.cert = (handle.state.client_cert, handle.state.client_key)
    return session


def test_every_host_answers_over_https_with_its_pinned_certificate(lab: LabHandle) -> None:
    assert set(lab.state.hosts) == {"server01", "server02"}
    for name, host in lab.fleet.hosts.items():
        assert host.endpoint.startswith("https://127.0.0.1:")
        assert host.server_cert is not None
        answer = _session(lab, host.server_cert).get(f"{host.endpoint}/1.0", timeout=30)
        assert answer.status_code == 200, name
        assert answer.json()["metadata"]["auth"] == "trusted", name


def test_a_wrong_pin_is_refused(lab: LabHandle) -> None:
    one, two = lab.fleet.hosts["server01"], lab.fleet.hosts["server02"]
    assert two.server_cert is not None
    with pytest.raises(requests.exceptions.SSLError):
        _session(lab, two.server_cert).get(f"{one.endpoint}/1.0", timeout=30)


def test_the_fleet_is_pointed_at_the_lab(lab: LabHandle) -> None:
    assert lab.site.attach_gpus is False
    assert lab.site.host_path("/usr/local/MATLAB") == f"{lab.dir}/root/usr/local/MATLAB"
    assert lab.site.home_dir("/home/tom") == "/home/tom"
    assert lab.site.ssh_config == f"{lab.dir}/ssh/config"
    for name, host in lab.fleet.hosts.items():
        assert host.endpoint == lab.state.hosts[name].endpoint
        assert host.client_cert == lab.state.client_cert
        assert Path(host.server_cert or "").is_file()
        assert host.ssh == name


def test_a_container_from_the_base_alias_runs_with_the_default_profile_minus_gpu(
    lab: LabHandle,
) -> None:
    # Ids of no fleet user: the host layer's own tests make tom's account and delegation.
    uid, gid = 2971, 2972
    exec_ = [sys.executable, "-m", "lxdgpu_reconcile", "lab", "exec", "--dir", str(lab.dir)]
    home = f"/home/labt-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(
        [*exec_, "server01", "--", "sh", "-c",
         'usermod --add-subuids "$1-$1" --add-subgids "$2-$2" root && mkdir "$3" && '
         'chown "$1:$2" "$3"', "sh", str(uid), str(gid), home],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert f"root:{uid}:1" not in SUBUID.read_text().splitlines()
    name, profile = f"labt-{uuid.uuid4().hex[:6]}", f"labt-{uuid.uuid4().hex[:6]}"
    default = lab.spec.profiles["default"]
    devices = {k: dict(v) for k, v in default.devices.items() if v.get("type") != "gpu"}
    devices["matlab"]["source"] = lab.site.host_path(devices["matlab"]["source"])
    config = {k: v for k, v in default.config.items() if not k.startswith("nvidia.")}
    body = {"config": config, "devices": devices, "description": "default minus gpu"}
    lab.lxc("server01", "profile", "create", profile)
    try:
        lab.lxc("server01", "profile", "edit", profile, input=yaml.safe_dump(body))
        lab.lxc(
            "server01",
            "init",
            "busybox",
            name,
            "-p",
            profile,
            "-c",
            f"raw.idmap=uid {uid} 1000\ngid {gid} 1000",
        )
        lab.lxc(
            "server01",
            "config",
            "device",
            "add",
            name,
            "home",
            "disk",
            f"source={home}",
            "path=/home/ubuntu/tom",
        )
        lab.lxc("server01", "start", name)
        state = lab.lxc("server01", "list", name, "--format", "csv", "-c", "s").stdout
        assert state.strip() == "RUNNING"
        lab.lxc(
            "server01",
            "exec",
            name,
            "--user",
            "1000",
            "--group",
            "1000",
            "--",
            "sh",
            "-c",
            f"echo hi > /home/ubuntu/tom/{name}",
        )
        # The home is server01's own: in its system's /home, not in this machine's.
        written = Path(lab.state.hosts["server01"].system or "") / home.lstrip("/") / name
        assert (written.stat().st_uid, written.stat().st_gid) == (uid, gid)
        assert not Path(home).exists()
    finally:
        lab.lxc("server01", "delete", "--force", name, check=False)
        lab.lxc("server01", "profile", "delete", profile, check=False)
        subprocess.run(
            [*exec_, "server01", "--", "sh", "-c",
             'usermod --del-subuids "$1-$1" --del-subgids "$2-$2" root; rm -rf "$3"',
             "sh", str(uid), str(gid), home],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip


def test_up_again_reuses_the_running_daemons_and_sshds(lab: LabHandle) -> None:
    before = {n: (h.pid, h.port, h.sshd_pid, h.ssh_port) for n, h in lab.state.hosts.items()}
    again = lab_up(lab.spec, lab.dir)
    assert {n: (h.pid, h.port, h.sshd_pid, h.ssh_port) for n, h in again.hosts.items()} == before
    assert again.subuid_lines == () and again.subgid_lines == ()
    for host in again.hosts.values():
        assert is_lxd_of(host.pid, host.lxd_dir)
    assert load_lab(lab.dir) == again


def test_lab_env_lets_plain_lxc_reach_the_host(lab: LabHandle) -> None:
    command = (
        f'eval "$({shlex.quote(sys.executable)} -m lxdgpu_reconcile lab env server02 '
        f'--dir {shlex.quote(str(lab.dir))})" && lxc image alias list --format csv '
        "&& lxc list server01: --format csv"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LXD_DIR", "LXD_CONF")}
    done = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    aliases = {line.split(",")[0] for line in done.stdout.splitlines()}
    assert {"busybox", "template-busybox"} <= aliases


DOWN_FLEET = """
version: 1
hosts:
  labx1:
    endpoint: https://192.0.2.21:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/labx1.crt
  labx2:
    endpoint: https://192.0.2.22:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/labx2.crt
image_servers:
  imgs: {url: "https://images.example.net/"}
profiles:
  default:
    devices:
      eth0: {type: nic, nictype: macvlan, parent: lxtest0, name: eth0}
      root: {type: disk, path: /, pool: default}
templates:
  t: {alias: labx-template, base: "imgs:busybox", build_host: labx1}
users:
  ann: {host: labx1, template: t, uid: 2901, gid: 2902}
  bob: {host: labx2, template: t, uid: 2903, gid: 2904}
"""


def _count(path: Path, lines: tuple[str, ...]) -> int:
    text = path.read_text().splitlines() if path.exists() else []
    return sum(text.count(line) for line in lines)


#: This machine's account and delegation files: a lab never changes them.
MACHINE_FILES = tuple(
    Path("/etc", name) for name in ("passwd", "group", "shadow", "subuid", "subgid")
)


def _machine_files() -> dict[Path, tuple[int, bytes]]:
    return {path: (path.stat().st_ino, path.read_bytes()) for path in MACHINE_FILES}


def _own_mounts() -> list[str]:
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())


def test_down_leaves_no_process_mount_veth_or_change_to_this_machine(
    lab_factory: Callable[[str], LabHandle],
) -> None:
    assert not link_exists("lxtest0"), "a previous run left lxtest0 behind"
    files, mounts = _machine_files(), _own_mounts()
    handle = lab_factory(DOWN_FLEET)
    state = handle.state
    assert [v.name for v in state.veths] == ["lxtest0"] and link_exists("lxtest0")
    assert state.subuid_lines == () and state.subgid_lines == ()
    name = f"labt-{uuid.uuid4().hex[:6]}"
    handle.lxc("labx1", "launch", "labx-template", name)
    pids = [p for h in state.hosts.values() for p in (h.pid, h.sshd_pid) if p]
    assert len(pids) == 4 and not any(pid_gone(pid) for pid in pids)
    # Held by the test, so that no other namespace can take their numbers meanwhile.
    with hostsys.holding(h.pid for h in state.hosts.values()) as namespaces:
        assert len(namespaces) == 2 and hostsys.own_namespace() not in namespaces
        _down_with_sessions_open(handle, namespaces)
        assert all(pid_gone(pid) for pid in pids)
        assert all(hostsys.processes_in(ns) == [] for ns in namespaces)
    assert _own_mounts() == mounts
    assert not link_exists("lxtest0") and not link_exists(state.veths[0].peer)
    assert _machine_files() == files
    assert not handle.dir.exists()


def _down_with_sessions_open(handle: LabHandle, namespaces: set[str]) -> None:
    """``lab down`` while something runs in each host's namespace: an ssh session on labx1 and
    a ``lab exec`` on labx2; both end with it."""
    assert handle.state.ssh_config is not None
    lingering = [
        subprocess.Popen(["ssh", "-F", handle.state.ssh_config, "labx1", "sleep 600"]),
        subprocess.Popen(
            [sys.executable, "-m", "lxdgpu_reconcile", "lab", "exec", "--dir", str(handle.dir),
             "labx2", "--", "sleep", "600"]
        ),
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not all(
            any(_cmdline(p) == b"sleep\x00600\x00" for p in hostsys.processes_in(ns))
            for ns in namespaces
        ):
            assert time.monotonic() < deadline, "the sessions did not start"
            time.sleep(0.2)
        down = subprocess.run(
            [sys.executable, "-m", "lxdgpu_reconcile", "lab", "down", "--dir", str(handle.dir)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert down.returncode == 0, down.stderr
        for process in lingering:
            process.wait(timeout=30)
    finally:
        for process in lingering:
            if process.poll() is None:
                process.kill()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


SHARED_FLEET = """
version: 1
hosts:
  {host}:
    endpoint: https://192.0.2.31:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/{host}.crt
image_servers:
  imgs: {{url: "https://images.example.net/"}}
profiles:
  default:
    devices:
      eth0: {{type: nic, nictype: macvlan, parent: eno1, name: eth0}}
      eth1: {{type: nic, nictype: macvlan, parent: lxshare0, name: eth1}}
      root: {{type: disk, path: /, pool: default}}
templates:
  t: {{alias: share-template, base: "imgs:busybox", build_host: {host}}}
users:
  {user}: {{host: {host}, template: t, uid: 2911, gid: 2912}}
"""


def _lab_down(lab_dir: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "lxdgpu_reconcile", "lab", "down", "--dir", str(lab_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _users_in_registry(*labs: Path) -> list[str]:
    with shared.open_registry() as registry:
        return [
            key
            for key, entry in registry.entries.items()
            if {str(lab) for lab in labs} & set(entry.users)
        ]


def test_two_labs_share_a_nic_parent_and_an_id_until_the_last_goes_down(
    lab_factory: Callable[[str], LabHandle],
) -> None:
    # eno1 may already be there (the session's lab uses it); lxshare0 is this test's alone, so
    # its whole life is checked. Id delegations are each lab host's own: none is shared.
    eno1_before = link_exists("eno1")
    assert not link_exists("lxshare0"), "a previous run left lxshare0 behind"
    files = _machine_files()
    one = lab_factory(SHARED_FLEET.format(host="sha1", user="ann"))
    two = lab_factory(SHARED_FLEET.format(host="sha2", user="bob"))
    assert "lxshare0" in [v.name for v in one.state.veths]
    assert {"eno1", "lxshare0"} <= {v.name for v in two.state.veths}
    for handle in (one, two):
        assert handle.state.subuid_lines == () and handle.state.subgid_lines == ()
    assert _machine_files() == files

    said = _lab_down(one.dir)

    assert f"leaving veth lxshare0 for the lab in {two.dir}" in said
    assert link_exists("lxshare0")
    delegate = subprocess.run(
        [sys.executable, "-m", "lxdgpu_reconcile", "lab", "exec", "--dir", str(two.dir), "sha2",
         "--", "usermod", "--add-subuids", "2911-2911", "--add-subgids", "2912-2912", "root"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert delegate.returncode == 0, delegate.stderr
    name = f"labt-{uuid.uuid4().hex[:6]}"
    two.lxc("sha2", "init", "share-template", name, "-c", "raw.idmap=uid 2911 1000\ngid 2912 1000")
    for nic, parent in (("eth0", "eno1"), ("eth1", "lxshare0")):
        two.lxc("sha2", "config", "device", "add", name, nic, "nic", "nictype=macvlan",
                f"parent={parent}", f"name={nic}")  # fmt: skip
    two.lxc("sha2", "start", name)
    state = two.lxc("sha2", "list", name, "--format", "csv", "-c", "s").stdout
    assert state.strip() == "RUNNING"

    said = _lab_down(two.dir)

    assert "deleting veth lxshare0" in said
    assert not link_exists("lxshare0") and not link_exists(peer_name("lxshare0"))
    assert link_exists("eno1") is eno1_before
    assert _count(SUBUID, ("root:2911:1",)) == 0
    assert _count(SUBGID, ("root:2912:1",)) == 0
    assert _machine_files() == files
    assert _users_in_registry(one.dir, two.dir) == []
    assert not one.dir.exists() and not two.dir.exists()
