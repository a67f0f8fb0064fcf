"""``FakeFleet``: one in-memory LXD host (``tests.fakes.lxd.FakeLxd``, or
``tests.fakes.cluster.FakeCluster`` for a snapshot with members) per reachable host of a
snapshot; its ``connect`` is what the executor opens hosts with. No I/O."""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile import state
from lxdgpu_reconcile.observe.connect import HostConnectError
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from tests.fakes.cluster import FakeCluster
from tests.fakes.lxd import FakeLxd


class FakeFleet:
    """One ``FakeLxd`` per reachable host of ``snapshot`` (``options`` go to each); connecting
    to an unreachable one fails with its snapshot's error. ``opened`` lists every connect."""

    def __init__(self, snapshot: state.FleetSnapshot, **options: Any) -> None:
        self.original = snapshot
        self.hosts: dict[str, FakeLxd] = {}
        for index, (name, snap) in enumerate(snapshot.hosts.items(), start=1):
            if snap.error is None:
                address = f"127.0.0.{index}:8443"
                kind = FakeCluster if snap.members else FakeLxd
                self.hosts[name] = kind(snap, address=address, peers=self.hosts, **options)
        self.opened: list[str] = []

    def connect(self, host: str) -> LxdApi:
        self.opened.append(host)
        error = self.original.hosts[host].error
        if error is not None:
            raise HostConnectError(error.kind, error.message, error.hint)
        return self.hosts[host]

    def snapshot(self) -> state.FleetSnapshot:
        """Every host as it is now; an unreadable host as it was."""
        return state.FleetSnapshot(
            hosts={
                name: self.hosts[name].snapshot() if name in self.hosts else snap
                for name, snap in self.original.hosts.items()
            }
        )
