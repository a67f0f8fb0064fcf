"""A cluster host's members are each read over their own shell (``hosts.X.cluster.ssh``), in
the same observation, into ``HostSnapshot.member_facts``; the cluster's host-wide shell
(``hosts.X.ssh``, ``--local``) is not used for its host layer."""

from __future__ import annotations

from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.observe.host_facts import FactsQuery
from lxdgpu_reconcile.observe.hostshell import HostShell, HostShellError
from lxdgpu_reconcile.site import REAL
from lxdgpu_reconcile.state import HostErrorKind
from tests.unit.test_host_facts import FakeShell, answered

FLEET = Fleet.model_validate(
    {
        "version": 1,
        "hosts": {
            "dept": {
                "endpoint": "unix:///nonexistent/lxdgpu-dept.socket",
                "ssh": "root@dept",
                "cluster": {
                    "members": ["node1", "node2", "node3"],
                    "ssh": {"node1": "root@node1", "node2": "root@node2"},
                },
            },
        },
        "users": {"erin": {"host": "dept", "template": "base", "uid": 2001, "gid": 2001}},
        "templates": {"base": {"alias": "base", "base": "images:x", "build_host": "dept"}},
    }
)


class Opener:
    def __init__(self, members: dict[str, HostShell]) -> None:
        self.members = members
        self.hosts: list[str] = []
        self.asked: list[tuple[str, str]] = []

    def __call__(self, host: str) -> HostShell | None:
        self.hosts.append(host)
        return answered(b"V 1\nE\n")

    def member(self, host: str, member: str) -> HostShell | None:
        self.asked.append((host, member))
        return self.members.get(member)


def test_each_member_with_an_ssh_destination_is_read_over_its_own_shell() -> None:
    node1 = answered(b"V 1\nA erin:x:2001:2001::/home/erin:/usr/sbin/nologin\nE\n")
    node2 = FakeShell(
        error=HostShellError(
            "ssh root@node2: the host is unreachable", "x", kind=HostErrorKind.UNREACHABLE
        )
    )
    opener = Opener({"node1": node1, "node2": node2})

    snapshot = reading.observe_fleet(FLEET, timeout=5, open_shell=opener)

    dept = snapshot.hosts["dept"]
    assert dept.facts is None and opener.hosts == []
    assert sorted(opener.asked) == [("dept", "node1"), ("dept", "node2")]
    assert sorted(dept.member_facts) == ["node1", "node2"]
    found = dept.member_facts["node1"]
    assert found.readable and found.account("erin") is not None
    # One round trip per member, asking about the cluster's every user.
    assert node1.calls == [FactsQuery.of(FLEET, REAL, "dept").argv()]
    failed = dept.member_facts["node2"].error
    assert failed is not None and failed.message.startswith("host dept, member node2: ")


def test_without_a_member_opener_no_member_is_read() -> None:
    snapshot = reading.observe_fleet(FLEET, timeout=5, open_shell=lambda host: None)

    assert snapshot.hosts["dept"].member_facts == {}
