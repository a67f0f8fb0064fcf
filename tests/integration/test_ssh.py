"""The host layer's transport against a real OpenSSH server on loopback (``tests/sshd.py``):
facts read over SSH are what getent and stat say here, ssh's failures (a refused host key, a
refused key, a closed port, a timeout) are clear per-host errors in the facts, and values with
shell metacharacters reach the host as data. Needs root (marker ``ssh``)."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.observe.host_facts import FactsQuery, read_facts
from lxdgpu_reconcile.observe.hostshell import HostShellError
from lxdgpu_reconcile.observe.transport import LocalShell, SshShell, open_shell
from lxdgpu_reconcile.site import Site
from lxdgpu_reconcile.state import HostErrorKind
from tests.helpers import closed_port
from tests.sshd import Sshd, keygen
from tests.sshd import sshd as sshd  # the fixture

pytestmark = pytest.mark.ssh

HOSTILE = ["a b", "it's", 'say "hi"', "x; touch pwned", "$(touch pwned)", "`touch pwned`", "*", ""]


def fleet_for(sshd: Sshd, tmp: Path, hosts: dict[str, str]) -> Fleet:
    """A fleet whose hosts (name -> ssh destination) have nobody's home under ``tmp``, a disk
    source with metacharacters in its name and a macvlan NIC on ``lo``."""
    odd = tmp / "src a b'c;$(touch pwned)"
    return Fleet.model_validate(
        {
            "version": 1,
            "defaults": {"home_source": f"{tmp}/homes/{{user}}", "profiles": ["default", "lan"]},
            "hosts": {
                name: {"endpoint": f"unix://{tmp}/{name}/unix.socket", "ssh": destination}
                for name, destination in hosts.items()
            },
            "profiles": {
                "lan": {
                    "devices": {
                        "eth0": {"type": "nic", "nictype": "macvlan", "parent": "lo"},
                        "odd": {"type": "disk", "source": str(odd), "path": "/odd"},
                        "gone": {"type": "disk", "source": f"{tmp}/gone", "path": "/gone"},
                    }
                }
            },
            "templates": {"t": {"alias": "t", "base": "busybox", "build_host": next(iter(hosts))}},
            "users": {
                name: {"host": host, "template": "t", "uid": uid, "gid": uid}
                for host in hosts
                for name, uid in (("nobody", 65534), ("lxdgpu-absent", 3999999))
            }
            if len(hosts) == 1
            else {
                f"u-{host}": {"host": host, "template": "t", "uid": 3999990, "gid": 3999990}
                for host in hosts
            },
        }
    )


def test_facts_over_ssh_are_what_getent_and_stat_say_here(sshd: Sshd, tmp_path: Path) -> None:
    home = tmp_path / "homes" / "nobody"
    home.mkdir(parents=True)
    home.chmod(0o750)
    os.chown(home, 65534, 65534)
    (tmp_path / "src a b'c;$(touch pwned)").mkdir()
    fleet = fleet_for(sshd, tmp_path, {"here": sshd.destination})
    site = Site(ssh_config=str(sshd.config))
    query = FactsQuery.of(fleet, site, "here")
    shell = open_shell(fleet, site)("here")
    assert isinstance(shell, SshShell)

    facts = read_facts(shell, query, timeout=30)

    assert facts.error is None, facts.error
    assert facts.via == f"ssh {sshd.destination}"
    nobody = pwd.getpwnam("nobody")
    assert facts.account("nobody") is not None
    assert facts.account("nobody") == facts.account_with_uid(nobody.pw_uid)
    assert (facts.account("nobody").home, facts.account("nobody").shell) == (  # type: ignore[union-attr]
        nobody.pw_dir,
        nobody.pw_shell,
    )
    assert facts.account("lxdgpu-absent") is None
    got = facts.paths[str(home)]
    assert (got.exists, got.kind, got.uid, got.gid, got.mode) == (
        True,
        "directory",
        65534,
        65534,
        "750",
    )
    assert facts.paths[str(tmp_path / "src a b'c;$(touch pwned)")].exists
    assert not facts.paths[f"{tmp_path}/gone"].exists
    assert facts.nics == {"lo": True}
    assert not list(tmp_path.rglob("pwned")) and not Path("/root/pwned").exists()
    # Over ssh and on this machine directly: the same facts.
    local = read_facts(LocalShell(), query, timeout=30)
    assert facts.model_copy(update={"via": "local"}) == local


def test_each_host_gets_its_own_clear_error(sshd: Sshd, tmp_path: Path) -> None:
    # One alias per failure, each in the same ssh configuration file.
    wrong = sshd.known_hosts_file("wrong_known_hosts", keygen(tmp_path / "other"))
    stranger = tmp_path / "stranger"
    keygen(stranger)
    config = tmp_path / "ssh_config"
    config.write_text(
        sshd.config.read_text()
        + _alias(sshd, "refused-hostkey", known_hosts=wrong)
        + _alias(sshd, "refused-key", key=stranger)
        + _alias(sshd, "closed", port=closed_port())
    )
    hosts = {
        "good": sshd.destination,
        "hostkey": "root@refused-hostkey",
        "key": "root@refused-key",
        "down": "root@closed",
    }
    fleet = fleet_for(sshd, tmp_path, hosts)
    site = Site(ssh_config=str(config))

    snapshot = reading.observe_fleet(
        fleet, timeout=20, open_shell=open_shell(fleet, site), site=site
    )

    facts = {name: snap.facts for name, snap in snapshot.hosts.items()}
    assert facts["good"] is not None and facts["good"].readable
    expected = {
        "hostkey": (HostErrorKind.CERTIFICATE, "host key", "known_hosts"),
        "key": (HostErrorKind.UNTRUSTED, "refused this machine's key", "authorized_keys"),
        "down": (HostErrorKind.UNREACHABLE, "Connection refused", "sshd runs on closed"),
    }
    for name, (kind, says, hint) in expected.items():
        found = facts[name]
        assert found is not None and found.error is not None, name
        assert found.error.kind is kind, (name, found.error)
        assert found.error.message.startswith(f"host {name}: ssh {hosts[name]}: ")
        assert says in found.error.message and hint in found.error.hint, found.error


def _alias(
    sshd: Sshd,
    alias: str,
    *,
    port: int | None = None,
    known_hosts: Path | None = None,
    key: Path | None = None,
) -> str:
    text = sshd.client_config(f"cfg-{alias}", port=port, known_hosts=known_hosts, key=key)
    return text.read_text().replace(f"Host {sshd.alias}\n", f"Host {alias}\n")


def test_an_unknown_host_key_is_refused_too(sshd: Sshd) -> None:
    empty = sshd.dir / "empty_known_hosts"
    empty.write_text("")
    config = sshd.client_config("cfg-unknown", known_hosts=empty)

    with pytest.raises(HostShellError) as caught:
        SshShell(sshd.destination, ssh_config=str(config)).run(["true"])

    assert caught.value.kind is HostErrorKind.CERTIFICATE
    assert "Host key verification failed" in caught.value.message


def test_values_with_shell_metacharacters_arrive_as_data(sshd: Sshd, tmp_path: Path) -> None:
    shell = SshShell(sshd.destination, ssh_config=str(sshd.config))

    result = shell.run(
        ["sh", "-c", 'cd "$1" && shift && printf "%s\\n" "$@"', "sh", str(tmp_path), *HOSTILE]
    )

    assert result.ok, result.error_text()
    assert result.stdout.decode().split("\n")[:-1] == HOSTILE
    assert not list(tmp_path.rglob("pwned"))


def test_stdin_reaches_the_command_and_no_argument(sshd: Sshd) -> None:
    shell = SshShell(sshd.destination, ssh_config=str(sshd.config))

    result = shell.run(["sh", "-c", "cat; ps -o args= -p $$"], stdin=b"pw-not-in-argv\n")

    assert result.stdout.startswith(b"pw-not-in-argv\n")
    assert b"pw-not-in-argv" not in result.stdout.splitlines()[1]


def test_a_command_past_its_timeout_is_stopped(sshd: Sshd) -> None:
    shell = SshShell(sshd.destination, ssh_config=str(sshd.config))
    marker = "4.321"  # a sleep of its own, to find it afterwards

    with pytest.raises(HostShellError) as caught:
        shell.run(["sleep", marker], timeout=1)

    assert caught.value.kind is HostErrorKind.TIMEOUT
    assert not _processes(f"ssh -o BatchMode=yes -o ConnectTimeout=10 -F {sshd.config}")
    # The remote sleep ends on its own (sshd does not kill it); wait so the test leaves nothing.
    deadline = time.monotonic() + 15
    while _processes(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.2)


def _processes(cmdline: str) -> list[int]:
    done = subprocess.run(["pgrep", "-f", "--", cmdline], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


def test_a_refused_host_key_is_a_plan_error_for_that_host_only(sshd: Sshd, tmp_path: Path) -> None:
    from lxdgpu_reconcile.planning import planner
    from lxdgpu_reconcile.planning.common import ErrorCode
    from lxdgpu_reconcile.state import FleetSnapshot, HostSnapshot

    wrong = sshd.known_hosts_file("wrong_known_hosts", keygen(tmp_path / "other"))
    config = tmp_path / "ssh_config"
    config.write_text(sshd.config.read_text() + _alias(sshd, "refused", known_hosts=wrong))
    hosts = {"good": sshd.destination, "bad": "root@refused"}
    fleet = fleet_for(sshd, tmp_path, hosts)
    site = Site(ssh_config=str(config))
    read = reading.observe_fleet(fleet, timeout=20, open_shell=open_shell(fleet, site), site=site)
    # LXD's half as an empty, reachable server: the host layer's facts are the real ones.
    snapshot = FleetSnapshot(
        hosts={
            name: HostSnapshot(host=name, endpoint="unix:///x", cpus=4, facts=snap.facts)
            for name, snap in read.hosts.items()
        }
    )

    plan = planner.make_plan(fleet, snapshot, site)

    unreadable = [e for e in plan.all_errors if e.code is ErrorCode.HOST_LAYER_UNREADABLE]
    assert [e.host for e in unreadable] == ["bad"]
    assert "host key" in unreadable[0].message and "ssh root@refused" in unreadable[0].message
