"""Observing a cluster host: what it costs (the instances with their location, the member list,
one resources read per online member, and not the host-wide resources), what a member that is
down does to the snapshot, a fleet that says cluster to a server that is not one, and the other
members' endpoints as fallbacks."""

from __future__ import annotations

from typing import Any

import pytest

from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet.models import Host
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.observe import members, reading
from lxdgpu_reconcile.state import HostErrorKind
from tests.fakes.cluster import FakeCluster
from tests.fakes.lxd import FakeLxd


def cluster_snapshot(*, node2: str = "Online") -> state.HostSnapshot:
    return state.HostSnapshot(
        host="dept",
        endpoint="https://192.0.2.21:8443",
        api_extensions=("resources", "clustering"),
        members=(
            state.MemberObs(name="node1", status="Online", cpus=8, gpus=(state.GpuObs(id=0),)),
            state.MemberObs(name="node2", status=node2, cpus=4),
        ),
        instances={
            "erin-container": state.InstanceObs(
                name="erin-container", status="Running", location="node2"
            ),
            "frank-container": state.InstanceObs(
                name="frank-container", status="Stopped", location="node1"
            ),
        },
    )


def read(client: Any) -> state.HostSnapshot:
    raw = reading.read_host(client, remaining=lambda: 5.0, cluster=True)
    return reading.host_snapshot("dept", "https://192.0.2.21:8443", raw)


def test_a_cluster_costs_its_member_list_and_one_resources_read_per_online_member() -> None:
    cluster = FakeCluster(cluster_snapshot())
    snap = read(cluster)
    assert cluster.requests == [
        "GET cluster/members",
        "GET resources?target=node1",
        "GET resources?target=node2",
        "GET instances",
    ]
    assert [(m.name, m.status, m.cpus, len(m.gpus)) for m in snap.members] == [
        ("node1", "Online", 8, 1),
        ("node2", "Online", 4, 0),
    ]
    assert snap.instances["erin-container"].location == "node2"
    assert snap.cpus == 4  # a share of "the host's CPUs" where no member is known: the fewest
    assert snap.unseen == {}


def test_a_member_that_is_down_is_not_asked_and_its_containers_are_unseen() -> None:
    cluster = FakeCluster(cluster_snapshot())
    cluster.member_down("node2")
    snap = read(cluster)
    assert "GET resources?target=node2" not in cluster.requests
    assert snap.member("node2") is not None and not snap.member("node2").online  # type: ignore[union-attr]
    assert snap.unseen == {"erin-container": "node2"}
    assert list(snap.instances) == ["frank-container"]


def test_a_member_that_stopped_answering_before_lxd_lists_it_offline_is_not_observed() -> None:
    # LXD 5.0.2 lists the member Online until its heartbeats are overdue, but lists its
    # instances as Error with null config, and a read of its resources fails.
    cluster = FakeCluster(cluster_snapshot())
    cluster.member_down("node2", listed=False)
    snap = read(cluster)
    node2 = snap.member("node2")
    assert node2 is not None and node2.status == members.NOT_ANSWERING and not node2.online
    assert snap.unseen == {"erin-container": "node2"}
    assert list(snap.instances) == ["frank-container"]


def test_a_fleet_cluster_that_is_a_single_server_is_a_config_error(monkeypatch: Any) -> None:
    single = FakeLxd(state.HostSnapshot(host="dept", endpoint="unix:///x"))
    with pytest.raises(members.NotACluster):
        reading.read_host(single, remaining=lambda: 5.0, cluster=True)
    monkeypatch.setattr(connecting, "connect", lambda *a, **k: single)
    host = Host(endpoint="unix:///x", cluster={})  # type: ignore[arg-type]
    snap = reading.observe_host("dept", host, timeout=5.0)
    assert snap.error is not None and snap.error.kind is HostErrorKind.CONFIG
    assert "not clustered" in snap.error.message


def test_a_single_server_lists_its_instances_with_no_location() -> None:
    data = {"name": "c", "status": "Running", "location": "none"}
    assert reading.parse_instance(data).location == ""
    assert reading.parse_instance({**data, "location": "node1"}).location == "node1"


def test_another_member_answers_when_the_endpoint_does_not(monkeypatch: Any) -> None:
    tried: list[str] = []

    def one(name: str, host: Host, **kwargs: Any) -> Any:
        tried.append(host.endpoint)
        if host.endpoint.endswith(".21:8443"):
            raise connecting.HostConnectError(HostErrorKind.UNREACHABLE, "refused")
        return host.endpoint

    monkeypatch.setattr(connecting, "_connect_one", one)
    cluster = {"endpoints": ["https://192.0.2.22:8443", "https://192.0.2.23:8443"]}
    host = Host(endpoint="https://192.0.2.21:8443", cluster=cluster)  # type: ignore[arg-type]
    assert connecting.connect("dept", host, timeout=1.0) == "https://192.0.2.22:8443"
    assert tried == ["https://192.0.2.21:8443", "https://192.0.2.22:8443"]


def test_a_refused_certificate_is_not_retried_elsewhere(monkeypatch: Any) -> None:
    tried: list[str] = []

    def one(name: str, host: Host, **kwargs: Any) -> Any:
        tried.append(host.endpoint)
        raise connecting.HostConnectError(HostErrorKind.CERTIFICATE, "fingerprint")

    monkeypatch.setattr(connecting, "_connect_one", one)
    host = Host(
        endpoint="https://192.0.2.21:8443", cluster={"endpoints": ["https://192.0.2.22:8443"]}
    )  # type: ignore[arg-type]
    with pytest.raises(connecting.HostConnectError):
        connecting.connect("dept", host, timeout=1.0)
    assert tried == ["https://192.0.2.21:8443"]
