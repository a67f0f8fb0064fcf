"""The host layer end to end, against real LXD daemons and each lab host's own system.

A user who has no account anywhere is one entry in the fleet file: apply makes the account
(locked, nologin), the home (owner, mode), the subuid/subgid delegations and the ledger on that
host only, then the container, whose user writes into the home as the host user; this
machine's own account files never change. Preflight stops a host whose CUDA tree or NIC parent
is missing before any write, and the other host is applied. A refused host key and an sshd that
does not answer are clear errors for that host alone. The first password is kept in the
credentials file and never shown.

GPU ids and the GPU count are not checked in the lab (it has no GPU, ``Site.attach_gpus`` is
false): ``tests/unit/planning/cases/113-preflight-gpu-count-and-ids.yaml`` and
``117-preflight-gpu-ids-hold-one-host.yaml`` check them in the planner.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lxdgpu_reconcile.lab import lab_up
from lxdgpu_reconcile.lab.system import pid_gone
from lxdgpu_reconcile.observe.host_facts import LEDGER
from tests.integration.conftest import LabHandle, output_of

pytestmark = pytest.mark.lxd

FLEET = """\
version: 1
defaults:
  profiles: [default]
  cpu: 1
hosts:
  hl1:
    endpoint: https://192.0.2.51:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/hl1.crt
  hl2:
    endpoint: https://192.0.2.52:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/hl2.crt
image_servers:
  lab-images:
    url: https://images.example.net/
    protocol: simplestreams
profiles:
  default:
    config:
      nvidia.runtime: "true"
    devices:
      root: {type: disk, path: /, pool: default}
      eth0: {type: nic, nictype: macvlan, parent: eno1, name: eth0}
cuda:
  "10.0": /usr/local/cuda-10.0
templates:
  base:
    alias: template-base
    base: lab-images:busybox
    build_host: hl1
users:
  tom: {host: hl1, template: base, uid: 1003, gid: 1003, cuda: ["10.0"]}
  amy: {host: hl2, template: base, uid: 1004, gid: 1004}
"""

#: This machine's own account files, which no lab host may ever write.
MACHINE_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/subuid", "/etc/subgid")


def _plan(handle: LabHandle) -> tuple[int, dict[str, Any]]:
    result = handle.cli("plan", "--format", "json")
    data: dict[str, Any] = json.loads(result.stdout)
    return result.exit_code, data


def _host(plan: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(h for h in plan["hosts"] if h["host"] == name)
    return found


def _machine_files() -> dict[str, tuple[int, bytes]]:
    return {path: (os.stat(path).st_ino, Path(path).read_bytes()) for path in MACHINE_FILES}


def _lines(handle: LabHandle, host: str, path: str) -> list[str]:
    return handle.exec(host, "cat", path).stdout.splitlines()


def _nothing_of(handle: LabHandle, host: str, user: str, uid: int) -> None:
    """``host``'s own system has nothing of ``user``: no account, home, delegation, container."""
    assert handle.exec(host, "getent", "passwd", user, check=False).returncode == 2
    assert handle.exec(host, "test", "-e", f"/home/{user}", check=False).returncode == 1
    for name in ("/etc/subuid", "/etc/subgid"):
        assert f"root:{uid}:1" not in _lines(handle, host, name)
    ledger = handle.exec(host, "cat", LEDGER, check=False).stdout.splitlines()
    assert f"subuid:{uid}" not in ledger
    listed = handle.lxc(host, "list", f"{user}-container", "--format", "csv", "-c", "n").stdout
    assert listed.strip() == ""


def test_a_new_user_is_one_fleet_entry_with_nothing_typed_on_the_host(
    lab_factory: Callable[[str], LabHandle],
) -> None:
    before = _machine_files()
    handle = lab_factory(FLEET)
    for host, user in (("hl1", "tom"), ("hl2", "amy")):
        assert handle.exec(host, "getent", "passwd", user, check=False).returncode == 2

    shown = handle.cli("plan")
    assert shown.exit_code == 0, output_of(shown)
    for line in (
        "+ host account tom (uid 1003, gid 1003, shell nologin, home /home/tom 0750)",
        "+ subuid root:1003:1",
        "+ subgid root:1003:1",
        "hl1: NVIDIA driver: not checked (no GPU in the lab)",
    ):
        assert line in shown.output, shown.output
    plan_json = handle.cli("plan", "--format", "json")
    applied = handle.cli("apply", "--yes")
    assert applied.exit_code == 0, output_of(applied)

    # The account: the fleet's uid and gid, the nologin shell, locked, no password.
    passwd = handle.exec("hl1", "getent", "passwd", "tom").stdout.strip()
    assert passwd == "tom:x:1003:1003::/home/tom:/usr/sbin/nologin"
    assert handle.exec("hl1", "getent", "group", "1003").stdout.startswith("tom:x:1003:")
    shadow = handle.exec("hl1", "getent", "shadow", "tom").stdout.split(":")
    assert shadow[1].startswith("!"), shadow
    # The home: owner and mode; the delegations in hl1's own files and the tool's ledger.
    home = handle.exec("hl1", "stat", "-c", "%u %g %a %F", "/home/tom").stdout.strip()
    assert home == "1003 1003 750 directory"
    assert "root:1003:1" in _lines(handle, "hl1", "/etc/subuid")
    assert "root:1003:1" in _lines(handle, "hl1", "/etc/subgid")
    assert {"subuid:1003", "subgid:1003"} <= set(_lines(handle, "hl1", LEDGER))
    listing = json.loads(handle.lxc("hl1", "list", "--format", "json").stdout)
    assert {i["name"]: i["status"] for i in listing} == {"tom-container": "Running"}

    # The container's user writes into the mounted home as tom, on hl1's own disk.
    handle.lxc(
        "hl1", "exec", "tom-container", "--user", "1000", "--group", "1000", "--",
        "sh", "-c", "echo hello > /home/ubuntu/tom/from-the-container",
    )  # fmt: skip
    owner = handle.exec("hl1", "stat", "-c", "%u %g", "/home/tom/from-the-container").stdout
    assert owner.split() == ["1003", "1003"]

    # tom lives on hl1 only; amy on hl2 only; this machine has neither.
    _nothing_of(handle, "hl2", "tom", 1003)
    amy = handle.exec("hl2", "getent", "passwd", "amy").stdout
    assert amy.startswith("amy:x:1004:1004:")
    assert handle.exec("hl1", "getent", "passwd", "amy", check=False).stdout == ""
    assert _machine_files() == before

    again = handle.cli("plan", "--detailed-exitcode")
    assert again.exit_code == 0, output_of(again)
    assert "No changes" in again.output

    # The first password: in the credentials file only, and kept by a second apply.
    store = handle.dir / "credentials"
    path = store / "tom.json"
    assert stat.S_IMODE(os.lstat(store).st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    kept = json.loads(path.read_text())
    assert kept["container_user"] == "ubuntu" and len(kept["password"]) >= 12
    second = handle.cli("apply", "--yes")
    assert second.exit_code == 0, output_of(second)
    assert json.loads(path.read_text()) == kept
    status = handle.cli("status", "--format", "json")
    texts = {
        "plan --format json": plan_json.stdout,
        "apply": output_of(applied),
        "second apply": output_of(second),
        "status --format json": status.stdout,
        **{
            f"sshd log of {host}": (handle.dir / "sys" / host / "sshd" / "sshd.log").read_text()
            for host in ("hl1", "hl2")
        },
    }
    secrets = [json.loads((store / f"{u}.json").read_text())["password"] for u in ("tom", "amy")]
    assert [name for name, text in texts.items() for s in secrets if s in text] == []


def test_preflight_stops_one_host_before_any_write_and_the_other_is_applied(
    lab_factory: Callable[[str], LabHandle],
) -> None:
    handle = lab_factory(FLEET)
    cuda = Path(handle.state.host_root) / "usr/local/cuda-10.0"
    assert cuda.is_dir()
    shutil.rmtree(cuda)

    code, plan = _plan(handle)
    assert code == 1
    hl1, hl2 = _host(plan, "hl1"), _host(plan, "hl2")
    assert [e["code"] for e in hl1["errors"]] == ["missing-source"], hl1["errors"]
    assert "/usr/local/cuda-10.0" in hl1["errors"][0]["message"]
    assert not hl1["applyable"]
    assert hl2["errors"] == [] and hl2["applyable"]
    assert any(a["object"]["name"] == "amy" for a in hl2["actions"])

    result = handle.cli("apply", "--yes")
    assert result.exit_code == 1
    assert "cuda-10.0" in result.output
    _nothing_of(handle, "hl1", "tom", 1003)
    assert handle.exec("hl2", "getent", "passwd", "amy").stdout.startswith("amy:x:1004:")
    assert "amy-container" in handle.lxc("hl2", "list", "--format", "csv", "-c", "n").stdout

    # The tree is back; now a profile tom gets names a NIC parent hl1 does not have.
    cuda.mkdir(parents=True)
    text = handle.fleet_path.read_text()
    lan2 = "  lan2:\n    devices:\n      eth1: {type: nic, nictype: macvlan, parent: lxnope9}\n"
    text = text.replace("cuda:\n", lan2 + "cuda:\n").replace(
        'cuda: ["10.0"]}', 'cuda: ["10.0"], profiles: [lan2]}'
    )
    text = text.replace(
        "  amy: {host: hl2, template: base,", "  amy: {host: hl2, cpu: 2, template: base,"
    )
    handle.fleet_path.write_text(text)
    code, plan = _plan(handle)
    assert code == 1
    hl1, hl2 = _host(plan, "hl1"), _host(plan, "hl2")
    assert [e["code"] for e in hl1["errors"]] == ["missing-nic-parent"], hl1["errors"]
    assert "lxnope9" in hl1["errors"][0]["message"]
    assert hl2["errors"] == []
    result = handle.cli("apply", "--yes")
    assert result.exit_code == 1
    _nothing_of(handle, "hl1", "tom", 1003)
    config = json.loads(handle.lxc("hl2", "query", "/1.0/instances/amy-container").stdout)
    assert config["config"]["limits.cpu"] == "2"  # the other host went on

    # Without the profile, hl1 is applied as any host.
    handle.fleet_path.write_text(text.replace(", profiles: [lan2]}", "}"))
    result = handle.cli("apply", "--yes")
    assert result.exit_code == 0, output_of(result)
    assert handle.exec("hl1", "getent", "passwd", "tom").stdout.startswith("tom:x:1003:")
    assert handle.cli("plan", "--detailed-exitcode").exit_code == 0


def test_a_refused_host_key_and_a_silent_sshd_are_errors_of_that_host_alone(
    lab_factory: Callable[[str], LabHandle], tmp_path: Path
) -> None:
    handle = lab_factory(FLEET)
    assert handle.state.ssh_config is not None
    known_hosts = handle.dir / "ssh" / "known_hosts"
    good = known_hosts.read_text()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    other = (tmp_path / "other.pub").read_text().split()
    lines = [
        f"hl1 {other[0]} {other[1]}" if line.startswith("hl1 ") else line
        for line in good.splitlines()
    ]
    assert lines != good.splitlines()
    known_hosts.write_text("\n".join(lines) + "\n")
    try:
        code, plan = _plan(handle)
    finally:
        known_hosts.write_text(good)
    assert code == 1
    (error,) = _host(plan, "hl1")["errors"]
    assert error["code"] == "host-layer-unreadable"
    assert "ssh hl1" in error["message"] and "host key" in error["message"], error
    assert any("known_hosts" in fix for fix in error["fixes"]), error
    hl2 = _host(plan, "hl2")
    assert hl2["errors"] == [] and any(a["object"]["name"] == "amy" for a in hl2["actions"])

    # hl2's sshd stops answering.
    sshd = handle.state.hosts["hl2"].sshd_pid
    assert sshd is not None and not pid_gone(sshd)
    os.kill(sshd, signal.SIGTERM)
    for _ in range(100):
        if pid_gone(sshd):
            break
        time.sleep(0.1)
    code, plan = _plan(handle)
    assert code == 1
    (error,) = _host(plan, "hl2")["errors"]
    assert error["code"] == "host-layer-unreadable"
    assert "ssh hl2" in error["message"] and "unreachable" in error["message"], error
    assert any("sshd" in fix for fix in error["fixes"]), error
    hl1 = _host(plan, "hl1")
    assert hl1["errors"] == [] and any(a["object"]["name"] == "tom" for a in hl1["actions"])
    result = handle.cli("apply", "--yes")
    assert result.exit_code == 1
    assert handle.exec("hl1", "getent", "passwd", "tom").stdout.startswith("tom:x:1003:")
    assert handle.exec("hl2", "getent", "passwd", "amy", check=False).returncode == 2

    lab_up(handle.spec, handle.dir)  # starts hl2's sshd again
    result = handle.cli("apply", "--yes")
    assert result.exit_code == 0, output_of(result)
    assert handle.cli("plan", "--detailed-exitcode").exit_code == 0
