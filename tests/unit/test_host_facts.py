"""Host facts (``observe.host_facts``): what each host is asked, the one script's command line,
its answer parsed into ``HostFacts`` (real getent, stat and subuid shapes), failures as data,
the script run on this machine, the facts in ``observe_fleet`` and in snapshot files."""

from __future__ import annotations

import datetime
import grp
import os
import pwd
from collections.abc import Sequence
from pathlib import Path

import pytest

from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe import reading, snapshot_file
from lxdgpu_reconcile.observe.host_facts import (
    LEDGER,
    SCRIPT,
    FactsParseError,
    FactsQuery,
    UserQuery,
    parse_facts,
    read_facts,
)
from lxdgpu_reconcile.observe.hostshell import CommandResult, HostShell, HostShellError
from lxdgpu_reconcile.observe.transport import LocalShell
from lxdgpu_reconcile.site import REAL, Site
from lxdgpu_reconcile.state import (
    AccountObs,
    FleetSnapshot,
    GroupObs,
    HostErrorKind,
    HostFacts,
    HostSnapshot,
    PathObs,
    SubId,
)

FLEET = Fleet.model_validate(
    {
        "version": 1,
        "defaults": {"profiles": ["default", "net"]},
        "hosts": {
            "h1": {"endpoint": "unix:///nonexistent/h1.sock", "ssh": "root@h1"},
            "h2": {"endpoint": "unix:///nonexistent/h2.sock"},
        },
        "cuda": {"10.0": "/usr/local/cuda-10.0", "11.8": "/usr/local/cuda-11.8"},
        "profiles": {
            "net": {
                "devices": {
                    "eth0": {"type": "nic", "nictype": "macvlan", "parent": "eno1"},
                    "eth1": {"type": "nic", "network": "lxdbr0"},
                    "root": {"type": "disk", "pool": "default", "path": "/"},
                }
            },
            "matlab": {
                "devices": {
                    "matlab": {"type": "disk", "source": "/opt/matlab", "path": "/opt/matlab"},
                    "lan": {"type": "nic", "nictype": "ipvlan", "parent": "bond0"},
                }
            },
            "shared": {
                "hosts": ["h1"],
                "devices": {"data": {"type": "disk", "source": "/srv/data", "path": "/data"}},
            },
            "h2only": {
                "devices": {"x": {"type": "disk", "source": "/srv/h2", "path": "/x"}},
            },
        },
        "templates": {"desk": {"alias": "desk", "base": "busybox", "build_host": "h1"}},
        "users": {
            "tom": {
                "host": "h1",
                "template": "desk",
                "uid": 1003,
                "gid": 1003,
                "cuda": ["10.0"],
                "profiles": ["matlab"],
            },
            "ann": {"host": "h1", "template": "desk", "uid": 1004, "gid": 1100},
            "bob": {
                "host": "h2",
                "template": "desk",
                "uid": 1005,
                "gid": 1005,
                "cuda": ["11.8"],
                "profiles": ["h2only"],
            },
        },
    }
)


def test_a_host_is_asked_about_its_users_their_homes_sources_and_nic_parents() -> None:
    query = FactsQuery.of(FLEET, Site(host_root="/l/root"), "h1")

    assert query.users == (
        UserQuery(name="tom", uid=1003, gid=1003),
        UserQuery(name="ann", uid=1004, gid=1100),
    )
    assert query.homes == ("/l/root/home/tom", "/l/root/home/ann")
    assert query.paths == (
        "/l/root/home/tom",
        "/l/root/home/ann",
        "/l/root/opt/matlab",
        "/l/root/srv/data",
        "/l/root/usr/local/cuda-10.0",
    )
    assert query.nics == ("bond0", "eno1")
    assert query.ledger == LEDGER == "/etc/lxdgpu-reconcile/delegations"


def test_another_host_is_asked_about_its_own_users_only() -> None:
    query = FactsQuery.of(FLEET, REAL, "h2")

    assert [u.name for u in query.users] == ["bob"]
    assert query.paths == ("/home/bob", "/srv/h2", "/usr/local/cuda-11.8")
    assert query.nics == ("eno1",)


def test_the_fleet_values_are_arguments_of_the_one_fixed_script() -> None:
    query = FactsQuery(
        host="h1",
        users=(UserQuery(name="tom", uid=1003, gid=1003),),
        paths=("/home/tom", "/srv/a b'c;$(id)"),
        nics=("eno1",),
    )

    argv = query.argv()

    assert argv[:4] == ["sh", "-c", SCRIPT, "lxdgpu-facts"]
    assert argv[4:] == [
        *("1", "tom", "1003", "1003"),
        *("2", "/home/tom", "/srv/a b'c;$(id)"),
        LEDGER,
        "eno1",
    ]
    assert "tom" not in SCRIPT and "/srv" not in SCRIPT


# What the script prints on a Debian server: real getent, stat and subuid shapes.
ANSWER = b"""\
Welcome (a greeting from a login file, before the answer)
V 1
A tom:x:1003:1003:Tom Smith,,,:/home/tom:/usr/sbin/nologin
A tom:x:1003:1003:Tom Smith,,,:/home/tom:/usr/sbin/nologin
G tom:x:1003:
G tom:x:1003:
A ann2:x:1004:1004::/home/ann2:/bin/bash
G staff:x:1100:ann2,tom
P 0 1003 1003 750 directory
P 1 -
P 2 0 0 644 regular empty file
SU _lxd:100000:10000001
SU root:100000:10000001
SU root:1003:1
SU # a comment
SU
SG root:100000:10000001
SG root:1003:1
L subuid:1003
L subgid:1003
N 0 1
N 1 0
GPU
GL GPU 0: NVIDIA GeForce RTX 3090 (UUID: GPU-5d8f0a4e-0c4b-9d3c-1f2e-a1b2c3d4e5f6)
GL GPU 1: NVIDIA GeForce RTX 3090 (UUID: GPU-7e9a1b5f-1d5c-ae4d-2a3f-b2c3d4e5f6a7)
E
"""
QUERY = FactsQuery(
    host="h1",
    users=(UserQuery(name="tom", uid=1003, gid=1003), UserQuery(name="ann", uid=1004, gid=1100)),
    paths=("/home/tom", "/home/ann", "/opt/matlab"),
    homes=("/home/tom", "/home/ann"),
    nics=("eno1", "bond0"),
)


def test_the_answer_becomes_host_facts() -> None:
    facts = parse_facts(ANSWER, QUERY, via="ssh root@h1")

    assert facts.readable and facts.via == "ssh root@h1"
    assert facts.accounts == (
        AccountObs(name="tom", uid=1003, gid=1003, home="/home/tom", shell="/usr/sbin/nologin"),
        AccountObs(name="ann2", uid=1004, gid=1004, home="/home/ann2", shell="/bin/bash"),
    )
    assert facts.account("ann") is None and facts.account_with_uid(1004).name == "ann2"  # type: ignore[union-attr]
    assert facts.groups == (GroupObs(name="tom", gid=1003), GroupObs(name="staff", gid=1100))
    assert facts.paths == {
        "/home/tom": PathObs(
            path="/home/tom", exists=True, kind="directory", uid=1003, gid=1003, mode="750"
        ),
        "/home/ann": PathObs(path="/home/ann", exists=False),
        "/opt/matlab": PathObs(
            path="/opt/matlab", exists=True, kind="regular empty file", uid=0, gid=0, mode="644"
        ),
    }
    assert facts.subuid == (
        SubId(owner="_lxd", start=100000, count=10000001),
        SubId(owner="root", start=100000, count=10000001),
        SubId(owner="root", start=1003, count=1),
    )
    assert facts.delegates("subgid", 1003) and not facts.delegates("subuid", 99)
    assert facts.delegated == ("subuid:1003", "subgid:1003")
    assert facts.nics == {"eno1": True, "bond0": False}
    assert facts.nvidia is not None and len(facts.nvidia) == 2
    assert facts.nvidia[0].startswith("GPU 0: NVIDIA GeForce RTX 3090")


def test_no_nvidia_smi_is_none_and_nothing_found_is_still_every_path() -> None:
    facts = parse_facts(b"V 1\nP 1 -\nE\n", QUERY, via="local")

    assert facts.nvidia is None and facts.accounts == () and facts.subuid == ()
    assert set(facts.paths) == {"/home/tom", "/home/ann", "/opt/matlab"}
    assert not any(p.exists for p in facts.paths.values())
    assert facts.nics == {"eno1": False, "bond0": False}


def test_nvidia_smi_with_no_gpu_is_an_empty_list() -> None:
    assert parse_facts(b"V 1\nGPU\nE\n", QUERY, via="local").nvidia == ()


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"V 1\nA tom:x:1003:1003::/home/tom:/bin/sh\n", "cut short"),
        (b"", "does not start"),
        (b"bash: sh: command not found\n", "does not start"),
        (b"V 1\nX what\nE\n", "unknown record"),
        (b"V 1\nP 7 0 0 755 directory\nE\n", "no item '7'"),
        (b"V 1\nA tom:x:1003:1003\nE\n", "not a passwd entry"),
        (b"V 1\nA tom:x:abc:1003::/home/tom:/bin/sh\nE\n", "line 2"),
        (b"V 1\nP 0 0 0 9z9 directory\nE\n", "not a mode"),
        (b"V 1\nGL GPU 0: x\nE\n", "without nvidia-smi"),
        (b"V 1\nE\nA root:x:0:0::/root:/bin/sh\n", "after the end"),
    ],
)
def test_an_answer_that_is_not_the_scripts_is_refused(answer: bytes, says: str) -> None:
    with pytest.raises(FactsParseError, match=says):
        parse_facts(answer, QUERY, via="local")


class FakeShell:
    """A ``HostShell`` that answers every command with ``result``, or raises ``error``."""

    def __init__(self, result: CommandResult | None = None, error: Exception | None = None) -> None:
        self.via = "ssh root@h1"
        self.result = result
        self.error = error
        self.calls: list[Sequence[str]] = []

    def run(
        self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60.0
    ) -> CommandResult:
        self.calls.append(argv)
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def answered(stdout: bytes, returncode: int = 0, stderr: bytes = b"") -> FakeShell:
    return FakeShell(CommandResult(argv=(), returncode=returncode, stdout=stdout, stderr=stderr))


def test_facts_are_read_in_one_command() -> None:
    shell = answered(ANSWER)

    facts = read_facts(shell, QUERY)

    assert facts.readable and shell.calls == [QUERY.argv()]


def test_an_unreachable_host_is_facts_with_its_error_never_an_exception() -> None:
    refused = HostShellError(
        "ssh root@h1: the host key was refused (Host key verification failed.)",
        "check known_hosts",
        kind=HostErrorKind.CERTIFICATE,
    )

    facts = read_facts(FakeShell(error=refused), QUERY)

    assert facts.error is not None and not facts.readable
    assert facts.error.kind is HostErrorKind.CERTIFICATE
    assert facts.error.message == (
        "host h1: ssh root@h1: the host key was refused (Host key verification failed.)"
    )
    assert facts.error.hint == "check known_hosts" and facts.via == "ssh root@h1"


def test_a_failed_script_and_an_unreadable_answer_are_errors_too() -> None:
    failed = read_facts(answered(b"", 127, b"sh: not found"), QUERY)
    garbled = read_facts(answered(b"V 1\nA x\n"), QUERY)

    assert failed.error is not None and "sh: not found" in failed.error.message
    assert garbled.error is not None and "cannot be read" in garbled.error.message
    assert "~/.bashrc" in garbled.error.hint


# --- the script on this machine -------------------------------------------------------------------


def test_the_script_says_what_getent_and_stat_say_here(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o750)
    if os.geteuid() == 0:
        os.chown(home, 65534, 65534)
    hostile = tmp_path / "a b'c;$(touch pwned)\nd"
    hostile.mkdir()
    ledger = tmp_path / "delegations"
    ledger.write_text("subuid:1003\nsubgid:1003")  # no final newline
    me = pwd.getpwuid(os.getuid())
    query = FactsQuery(
        host="here",
        users=(
            UserQuery(name=me.pw_name, uid=me.pw_uid, gid=me.pw_gid),
            UserQuery(name="lxdgpu-nobody-here", uid=4294967200, gid=4294967200),
        ),
        paths=(str(home), str(hostile), str(tmp_path / "missing")),
        nics=("lo", "lxdgpu-none0", "../.."),
        ledger=str(ledger),
    )

    facts = read_facts(LocalShell(), query)

    assert facts.error is None, facts.error
    assert facts.account(me.pw_name) == AccountObs(
        name=me.pw_name, uid=me.pw_uid, gid=me.pw_gid, home=me.pw_dir, shell=me.pw_shell
    )
    assert facts.account("lxdgpu-nobody-here") is None
    assert facts.group_with_gid(me.pw_gid) == GroupObs(
        name=grp.getgrgid(me.pw_gid).gr_name, gid=me.pw_gid
    )
    found = os.stat(home)
    assert facts.paths[str(home)] == PathObs(
        path=str(home),
        exists=True,
        kind="directory",
        uid=found.st_uid,
        gid=found.st_gid,
        mode="750",
    )
    assert facts.paths[str(hostile)].exists and facts.paths[str(hostile)].kind == "directory"
    assert not facts.paths[str(tmp_path / "missing")].exists
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert facts.delegated == ("subuid:1003", "subgid:1003")
    assert facts.nics == {"lo": True, "lxdgpu-none0": False, "../..": False}
    subuid = Path("/etc/subuid")
    if subuid.is_file():
        lines = [line for line in subuid.read_text().splitlines() if line.count(":") == 2]
        assert [f"{s.owner}:{s.start}:{s.count}" for s in facts.subuid] == lines


# --- in the observation, and in snapshot files ----------------------------------------------------


def test_observe_fleet_reads_the_facts_of_hosts_with_a_shell_only() -> None:
    shell = answered(ANSWER)
    opened: list[str] = []

    def open_shell(host: str) -> HostShell | None:
        opened.append(host)
        return shell if host == "h1" else None

    snapshot = reading.observe_fleet(
        FLEET, timeout=5, open_shell=open_shell, site=Site(host_root="/l/root")
    )

    h1, h2 = snapshot.hosts["h1"], snapshot.hosts["h2"]
    assert not h1.reachable  # no LXD daemon at that socket: the facts are read all the same
    assert h1.facts is not None and h1.facts.readable
    assert h1.facts.account("tom") is not None
    assert shell.calls == [FactsQuery.of(FLEET, Site(host_root="/l/root"), "h1").argv()]
    assert h2.facts is None
    assert sorted(opened) == ["h1", "h2"]


def test_observe_fleet_keeps_a_facts_error_per_host() -> None:
    down = FakeShell(
        error=HostShellError(
            "ssh root@h1: the host is unreachable", "x", kind=HostErrorKind.UNREACHABLE
        )
    )

    snapshot = reading.observe_fleet(FLEET, timeout=5, open_shell=lambda host: down)

    for name in ("h1", "h2"):
        facts = snapshot.hosts[name].facts
        assert facts is not None and facts.error is not None
        assert facts.error.message.startswith(f"host {name}: ")


def test_without_a_shell_nothing_is_read() -> None:
    snapshot = reading.observe_fleet(FLEET, timeout=5)

    assert all(snap.facts is None for snap in snapshot.hosts.values())


def test_a_snapshot_file_keeps_the_facts(tmp_path: Path) -> None:
    facts = parse_facts(ANSWER, QUERY, via="ssh root@h1")
    snapshot = FleetSnapshot(
        hosts={
            "h1": HostSnapshot(host="h1", endpoint="unix:///x", facts=facts),
            "h2": HostSnapshot(
                host="h2",
                endpoint="unix:///y",
                facts=HostFacts(via="local", error=read_facts(answered(b""), QUERY).error),
            ),
            "h3": HostSnapshot(host="h3", endpoint="unix:///z"),
        }
    )
    path = tmp_path / "snap.json"
    text = snapshot_file.dumps(
        snapshot,
        taken_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        tool_version="0",
        hostname="here",
        live=frozenset(),
    )
    snapshot_file.write(path, text)

    back = snapshot_file.read(path).snapshot

    assert back == snapshot
    assert back.hosts["h1"].facts == facts and back.hosts["h3"].facts is None
