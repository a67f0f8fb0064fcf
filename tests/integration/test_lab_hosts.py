"""Each lab host has a system of its own, reached over SSH as a real host is: ``lab exec`` and
the lab's sshds land in that host's namespace (its /etc and /home), never in this machine's."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from lxdgpu_reconcile.lab import hostsys, lab_up
from lxdgpu_reconcile.lab.system import pid_gone
from lxdgpu_reconcile.observe.host_facts import LEDGER
from lxdgpu_reconcile.observe.transport import open_shell
from tests.integration.conftest import LabHandle

pytestmark = pytest.mark.lxd

PASSWD = Path("/etc/passwd")


def lab_exec(handle: LabHandle, host: str, *command: str) -> subprocess.CompletedProcess[str]:
    """``lxdgpu-reconcile lab exec HOST -- COMMAND`` for ``handle``'s lab."""
    return subprocess.run(
        [sys.executable, "-m", "lxdgpu_reconcile", "lab", "exec", "--dir", str(handle.dir),
         host, "--", *command],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def ssh(handle: LabHandle, host: str, *command: str) -> subprocess.CompletedProcess[str]:
    """``ssh -F <lab>/ssh/config HOST 'COMMAND'`` (quoted: the remote shell runs COMMAND)."""
    assert handle.state.ssh_config is not None
    return subprocess.run(
        ["ssh", "-F", handle.state.ssh_config, "--", host, shlex.join(command)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_account_made_on_one_lab_host_is_on_no_other_and_not_on_this_machine(
    lab: LabHandle,
) -> None:
    name = f"labt{uuid.uuid4().hex[:6]}"
    passwd = (PASSWD.stat().st_ino, PASSWD.read_bytes())
    made = lab_exec(lab, "server01", "useradd", "-M", "-u", "2981", "-s", "/usr/sbin/nologin", name)
    try:
        assert made.returncode == 0, made.stderr
        on_one = lab_exec(lab, "server01", "getent", "passwd", name)
        assert on_one.returncode == 0 and on_one.stdout.startswith(f"{name}:x:2981:")
        on_two = lab_exec(lab, "server02", "getent", "passwd", name)
        assert on_two.returncode == 2 and on_two.stdout == ""  # getent: not found
        assert (PASSWD.stat().st_ino, PASSWD.read_bytes()) == passwd
        system = Path(lab.state.hosts["server01"].system or "")
        assert f"\n{name}:x:2981:" in (system / "etc" / "passwd").read_text()
    finally:
        lab_exec(lab, "server01", "userdel", name)
    assert (PASSWD.stat().st_ino, PASSWD.read_bytes()) == passwd


def test_the_tools_ledger_on_a_lab_host_is_that_hosts_own(lab: LabHandle) -> None:
    ledger = Path(LEDGER)
    before = ledger.read_bytes() if ledger.exists() else None
    line = f"subuid:{2983 + uuid.uuid4().int % 1000}"
    append = 'mkdir -p "$1" && printf "%s\\n" "$2" >> "$1/delegations"'
    wrote = lab_exec(lab, "server01", "sh", "-c", append, "sh", str(ledger.parent), line)
    try:
        assert wrote.returncode == 0, wrote.stderr
        system = Path(lab.state.hosts["server01"].system or "")
        own = system / ledger.relative_to("/")
        assert line in own.read_text().splitlines()
        other = lab_exec(lab, "server02", "cat", str(ledger))
        assert line not in other.stdout.splitlines()
        assert (ledger.read_bytes() if ledger.exists() else None) == before
    finally:
        lab_exec(lab, "server01", "sed", "-i", f"/^{line}$/d", str(ledger))


def test_lab_exec_passes_the_commands_exit_status_and_lxd_dir(lab: LabHandle) -> None:
    done = lab_exec(lab, "server02", "sh", "-c", 'echo "$LXD_DIR"; exit 7')
    assert done.returncode == 7
    assert done.stdout.strip() == lab.state.hosts["server02"].lxd_dir


def test_ssh_with_the_labs_configuration_lands_in_each_hosts_own_system(lab: LabHandle) -> None:
    marker = f"lab-marker-{uuid.uuid4().hex[:6]}"
    try:
        for host in ("server01", "server02"):
            wrote = lab_exec(lab, host, "sh", "-c", f'echo "$1" > /etc/{marker}', "sh", host)
            assert wrote.returncode == 0, wrote.stderr
        assert not Path("/etc", marker).exists()
        for host in ("server01", "server02"):
            seen = ssh(lab, host, "cat", f"/etc/{marker}")
            assert seen.returncode == 0, seen.stderr
            assert seen.stdout == f"{host}\n"
            # lxc over SSH talks to that host's own daemon (SetEnv LXD_DIR).
            who = ssh(lab, host, "sh", "-c", 'echo "$LXD_DIR" && lxc image list -c l -f csv')
            assert who.returncode == 0, who.stderr
            assert who.stdout.splitlines()[0] == lab.state.hosts[host].lxd_dir
            assert "template-busybox" in who.stdout.splitlines()[1:]
    finally:
        for host in ("server01", "server02"):
            lab_exec(lab, host, "rm", "-f", f"/etc/{marker}")


def test_the_tools_transport_reaches_each_lab_host_through_the_fleet(lab: LabHandle) -> None:
    opener = open_shell(lab.fleet, lab.site)
    for host in ("server01", "server02"):
        shell = opener(host)
        assert shell is not None and shell.via == f"ssh {host}"
        done = shell.run(["sh", "-c", 'readlink /proc/self/ns/mnt; echo "$LXD_DIR"'])
        assert done.ok, done.error_text()
        namespace, lxd_dir = done.stdout.decode().split()
        assert namespace == hostsys.namespace_of(lab.state.hosts[host].pid)
        assert namespace != hostsys.own_namespace()
        assert lxd_dir == lab.state.hosts[host].lxd_dir


def test_the_lab_key_is_the_only_way_in(lab: LabHandle, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30
    )
    assert lab.state.ssh_config is not None
    # The lab's configuration with another key in place of the lab's own.
    config = tmp_path / "config"
    config.write_text(
        "".join(
            line
            for line in Path(lab.state.ssh_config).read_text().splitlines(keepends=True)
            if "IdentityFile" not in line
        )
    )
    refused = subprocess.run(
        ["ssh", "-F", str(config), "-i", str(other), "server01", "true"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


ONE_HOST = """
version: 1
hosts:
  rst1:
    endpoint: https://192.0.2.51:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/rst1.crt
image_servers:
  imgs: {url: "https://images.example.net/"}
profiles:
  default:
    devices:
      root: {type: disk, path: /, pool: default}
templates:
  t: {alias: rst-template, base: "imgs:busybox", build_host: rst1}
users:
  ann: {host: rst1, template: t, uid: 2991, gid: 2991}
"""


def test_up_again_restarts_a_dead_daemon_and_its_sshd_in_the_same_system(
    lab_factory: Callable[[str], LabHandle],
) -> None:
    handle = lab_factory(ONE_HOST)
    before = handle.state.hosts["rst1"]
    made = lab_exec(handle, "rst1", "useradd", "-M", "-u", "2991", "-s", "/usr/sbin/nologin", "ann")
    assert made.returncode == 0, made.stderr
    assert before.pid is not None and before.sshd_pid is not None
    with hostsys.holding([before.pid]) as held:  # its number is not reused while held
        (old_namespace,) = held
        os.kill(before.pid, signal.SIGKILL)  # the sshd lives on in the old namespace

        again = lab_up(handle.spec, handle.dir).hosts["rst1"]

        assert again.pid != before.pid and again.sshd_pid != before.sshd_pid
        assert pid_gone(before.sshd_pid)
        assert hostsys.processes_in(old_namespace) == []
        namespace = hostsys.namespace_of(again.pid)
        assert namespace is not None and namespace != old_namespace
    assert (again.port, again.ssh_port) == (before.port, before.ssh_port)
    assert {again.pid, again.sshd_pid} <= set(hostsys.processes_in(namespace))
    seen = ssh(handle, "rst1", "sh", "-c", "readlink /proc/self/ns/mnt; getent passwd ann")
    assert seen.returncode == 0, seen.stderr
    in_ssh, account = seen.stdout.splitlines()
    assert in_ssh == namespace
    assert account.startswith("ann:x:2991:")
