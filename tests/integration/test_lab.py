"""The local lab against real LXD daemons: up, https with pinned certificates, a running
container, idempotent up, ``lab env`` with plain ``lxc``, and a down that leaves nothing behind."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml

from lxdgpu_reconcile.lab import lab_up, load_lab, shared
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
    assert lab.site.host_path("/home/tom") == f"{lab.dir}/root/home/tom"
    for name, host in lab.fleet.hosts.items():
        assert host.endpoint == lab.state.hosts[name].endpoint
        assert host.client_cert == lab.state.client_cert
        assert Path(host.server_cert or "").is_file()


def test_a_container_from_the_base_alias_runs_with_the_default_profile_minus_gpu(
    lab: LabHandle,
) -> None:
    name, profile = f"labt-{uuid.uuid4().hex[:6]}", f"labt-{uuid.uuid4().hex[:6]}"
    default = lab.spec.profiles["default"]
    devices = {k: dict(v) for k, v in default.devices.items() if v.get("type") != "gpu"}
    devices["matlab"]["source"] = lab.site.host_path(devices["matlab"]["source"])
    config = {k: v for k, v in default.config.items() if not k.startswith("nvidia.")}
    body = {"config": config, "devices": devices, "description": "default minus gpu"}
    lab.lxc("server01", "profile", "create", profile)
    try:
        lab.lxc("server01", "profile", "edit", profile, input=yaml.safe_dump(body))
        tom = lab.spec.users["tom"]
        lab.lxc(
            "server01",
            "init",
            "busybox",
            name,
            "-p",
            profile,
            "-c",
            f"raw.idmap=uid {tom.uid} 1000\ngid {tom.gid} 1000",
        )
        home = lab.site.host_path("/home/tom")
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
        written = Path(home) / name
        assert (written.stat().st_uid, written.stat().st_gid) == (tom.uid, tom.gid)
        written.unlink()
    finally:
        lab.lxc("server01", "delete", "--force", name, check=False)
        lab.lxc("server01", "profile", "delete", profile, check=False)


def test_up_again_reuses_the_running_daemons(lab: LabHandle) -> None:
    before = {n: (h.pid, h.port) for n, h in lab.state.hosts.items()}
    again = lab_up(lab.spec, lab.dir)
    assert {n: (h.pid, h.port) for n, h in again.hosts.items()} == before
    assert again.subuid_lines == lab.state.subuid_lines
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


def test_down_leaves_no_daemon_veth_or_delegation(
    lab_factory: Callable[[str], LabHandle],
) -> None:
    assert not link_exists("lxtest0"), "a previous run left lxtest0 behind"
    handle = lab_factory(DOWN_FLEET)
    state = handle.state
    assert [v.name for v in state.veths] == ["lxtest0"] and link_exists("lxtest0")
    assert "root:2901:1" in state.subuid_lines and "root:2904:1" in state.subgid_lines
    assert _count(SUBUID, state.subuid_lines) == len(state.subuid_lines)
    name = f"labt-{uuid.uuid4().hex[:6]}"
    handle.lxc("labx1", "launch", "labx-template", name)
    pids = [h.pid for h in state.hosts.values()]
    assert all(pid and not pid_gone(pid) for pid in pids)

    down = subprocess.run(
        [sys.executable, "-m", "lxdgpu_reconcile", "lab", "down", "--dir", str(handle.dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert down.returncode == 0, down.stderr

    assert all(pid_gone(pid) for pid in pids if pid)
    assert not link_exists("lxtest0") and not link_exists(state.veths[0].peer)
    assert _count(SUBUID, state.subuid_lines) == 0
    assert _count(SUBGID, state.subgid_lines) == 0
    assert not handle.dir.exists()


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
    # eno1 may already be there (the session's lab uses it); lxshare0 and uid 2911 are this
    # test's alone, so their whole life is checked.
    eno1_before = link_exists("eno1")
    assert not link_exists("lxshare0"), "a previous run left lxshare0 behind"
    assert _count(SUBUID, ("root:2911:1",)) == 0, "a previous run left root:2911:1 behind"
    one = lab_factory(SHARED_FLEET.format(host="sha1", user="ann"))
    two = lab_factory(SHARED_FLEET.format(host="sha2", user="bob"))
    assert "lxshare0" in [v.name for v in one.state.veths]
    assert {"eno1", "lxshare0"} <= {v.name for v in two.state.veths}
    for handle in (one, two):
        assert "root:2911:1" in handle.state.subuid_lines
        assert "root:2912:1" in handle.state.subgid_lines
    assert _count(SUBUID, ("root:2911:1",)) == 1

    said = _lab_down(one.dir)

    assert f"leaving veth lxshare0 for the lab in {two.dir}" in said
    assert f"leaving root:2911:1 in {SUBUID} for the lab in {two.dir}" in said
    assert link_exists("lxshare0") and _count(SUBUID, ("root:2911:1",)) == 1
    name = f"labt-{uuid.uuid4().hex[:6]}"
    two.lxc("sha2", "init", "share-template", name, "-c", "raw.idmap=uid 2911 1000\ngid 2912 1000")
    for nic, parent in (("eth0", "eno1"), ("eth1", "lxshare0")):
        two.lxc("sha2", "config", "device", "add", name, nic, "nic", "nictype=macvlan",
                f"parent={parent}", f"name={nic}")  # fmt: skip
    two.lxc("sha2", "start", name)
    state = two.lxc("sha2", "list", name, "--format", "csv", "-c", "s").stdout
    assert state.strip() == "RUNNING"

    said = _lab_down(two.dir)

    assert "deleting veth lxshare0" in said and "root:2911:1" in said
    assert not link_exists("lxshare0") and not link_exists(peer_name("lxshare0"))
    assert link_exists("eno1") is eno1_before
    assert _count(SUBUID, ("root:2911:1",)) == 0
    assert _count(SUBGID, ("root:2912:1",)) == 0
    assert _users_in_registry(one.dir, two.dir) == []
    assert not one.dir.exists() and not two.dir.exists()
