"""``FakeCluster``: an in-memory LXD cluster behind one endpoint, a ``FakeLxd`` with members.
No I/O.

It models what the tool relies on in LXD 5.0's clustering:

- ``GET /1.0`` says ``server_clustered: true``; ``list("cluster/members", recursion=1)`` gives
  each member's ``server_name``, ``url``, ``status`` (``Online``, or ``Offline`` once
  ``member_down`` is called) and ``message``;
- ``resources(target=MEMBER)`` is that member's (CPUs, GPUs, memory); an offline or unknown
  member's fails;
- every instance has a ``location``; ``create(..., target=MEMBER)`` puts it there (an unknown
  member: 404; an offline one: refused), without a target LXD's own choice (the online member
  with the fewest instances, then by name);
- ``move_to_member`` moves a stopped instance (a running one is refused, as LXD 5.0 without
  CRIU does), keeping its files, to another online member; as LXD 5.0.2 does (checked against
  a real lab cluster), a source with ``security.protection.delete`` fails the move and leaves
  LXD's copy ``lxd-move-of-UUID`` on the target, whose presence fails the next move;
- an instance on an offline member is listed as LXD 5.0.2 lists it (checked against a real
  lab cluster): ``status: Error``, ``status_code: 112``, its name and location, ``type: ""``
  and ``null`` config, devices and profiles; reading, starting, stopping or moving it fails.
  ``member_down(name, listed=False)`` is the moment before LXD calls the member offline: the
  member list still says ``Online`` while its instances are listed so.

``requests`` records every cluster request (members, resources with their target, creates
with their target, moves) in order, for the tests of what an observation costs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Set
from typing import Any

from lxdgpu_reconcile import state
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.observe.lxderrors import LxdError
from tests.fakes import lxd_data as data
from tests.fakes.lxd import FakeLxd, _error, _not_found
from tests.fakes.lxd_data import Json


class FakeCluster(FakeLxd):
    """A ``FakeLxd`` that is a cluster of ``snap.members``."""

    def __init__(self, snap: state.HostSnapshot, **options: Any) -> None:
        super().__init__(snap, **options)
        self._server["environment"]["server_clustered"] = True
        self.members: dict[str, Json] = {
            m.name: {
                "server_name": m.name,
                "url": m.url or f"https://{m.name}.invalid:8443",
                "status": m.status,
                "message": m.message or "Fully operational",
                "roles": ["database"],
            }
            for m in snap.members
        }
        self.member_resources: dict[str, Json] = {
            m.name: {
                "cpu": {"total": m.cpus},
                "gpu": {"cards": [{"drm": {"id": g.id}} for g in m.gpus], "total": len(m.gpus)},
                "memory": {"total": m.memory_total or 0, "used": m.memory_used or 0},
            }
            for m in snap.members
        }
        for name, where in snap.unseen.items():
            self.instances[name] = {
                **data.instance_json(state.InstanceObs(name=name, status="Error")),
                "location": where,
            }
        self.requests: list[str] = []
        #: Member -> the host uids and gids root may map there (``_check_idmap_delegated``).
        self.member_delegated: dict[str, tuple[Set[int], Set[int]]] = {}
        #: Members that do not answer (``member_down``), listed offline or not yet.
        self.unreachable: set[str] = {m.name for m in snap.members if m.status != "Online"}

    # --- test controls -------------------------------------------------------------------------

    def member_down(self, name: str, *, listed: bool = True) -> None:
        """Member ``name`` stops answering: LXD then lists it ``Offline`` (``listed=False``:
        not yet, its heartbeats are not overdue, but its instances are out of reach)."""
        self.unreachable.add(name)
        if listed:
            self.members[name].update(
                status="Offline", message="No heartbeat for 11.4s (2026-12-01 14:45:27 UTC)"
            )

    def location(self, name: str) -> str:
        return str(self.instances[name]["location"])

    def snapshot(self) -> state.HostSnapshot:
        with self._lock:
            members = self.list("cluster/members", recursion=1)
            raw = reading.RawHost(
                server=self.host_info,
                instances=self.list("instances", recursion=2),
                profiles=self.list("profiles", recursion=1),
                images=self.list("images", recursion=1),
                pools=self.list("storage-pools", recursion=1),
                members=members,
                member_resources={
                    m["server_name"]: self.resources(target=m["server_name"])
                    for m in members
                    if m["status"] == "Online"
                },
            )
            self.requests.clear()
            return reading.host_snapshot(self.name, self.endpoint, raw)

    # --- reads ---------------------------------------------------------------------------------

    def list(
        self,
        collection: str,
        *,
        recursion: int,
        filter: str | None = None,
        timeout: float | None = None,
        what: str = "",
    ) -> list[Json]:
        if collection == "cluster/members":
            with self._lock:
                self.requests.append("GET cluster/members")
                return [copy.deepcopy(m) for _, m in sorted(self.members.items())]
        found = super().list(
            collection, recursion=recursion, filter=filter, timeout=timeout, what=what
        )
        if collection != "instances":
            return found
        self.requests.append("GET instances")
        return [self._as_listed(item) for item in found]

    def resources(self, *, timeout: float | None = None, target: str | None = None) -> Json:
        with self._lock:
            self.requests.append(f"GET resources?target={target}" if target else "GET resources")
            if target is None:
                return super().resources(timeout=timeout)
            self._online(target, f"read resources of member {target}")
            return copy.deepcopy(self.member_resources[target])

    def get(self, collection: str, name: str, *, what: str = "") -> tuple[Json, str]:
        if collection == "cluster/members":
            with self._lock:
                self.requests.append(f"GET cluster/members/{name}")
                if name not in self.members:
                    raise _error(what or f"read member {name}", 404, "Member not found")
                return copy.deepcopy(self.members[name]), ""
        if collection == "instances" and name in self.instances:
            self._online(self.location(name), what or f"read instance {name}")
        return super().get(collection, name, what=what)

    # --- writes --------------------------------------------------------------------------------

    def create(
        self,
        collection: str,
        body: Mapping[str, Any],
        *,
        timeout: float,
        what: str = "",
        target: str | None = None,
    ) -> Json:
        name = str(body.get("name", ""))
        with self._lock:
            if collection == "instances":
                self.requests.append(f"POST instances?target={target}")
            result = super().create(collection, body, timeout=timeout, what=what, target=target)
            if collection == "instances":
                self.instances[name]["location"] = target or self._lxd_choice()
            return result

    def set_state(self, name: str, action: str, *, timeout: float, force: bool = False) -> None:
        if name in self.instances:
            self._online(self.location(name), f"{action} instance {name}")
        super().set_state(name, action, timeout=timeout, force=force)

    def move_to_member(self, name: str, member: str, *, timeout: float) -> None:
        what = f"move instance {name} to member {member}"
        with self._write(f"POST instances/{name}?target={member} migration"):
            self.requests.append(f"POST instances/{name}?target={member}")
            instance = self.instances.get(name)
            if instance is None:
                raise _not_found(what, "instances")
            self._online(str(instance["location"]), what)
            self._online(member, what)
            if instance["status"] == "Running":
                raise _error(
                    what,
                    400,
                    "Unable to perform container live migration. CRIU isn't installed on the "
                    "source server",
                )
            self._injected("move", name, what)
            # LXD 5.0.2 copies it to the member as lxd-move-of-UUID, deletes the source, then
            # renames the copy: a protected source fails the move and leaves the copy.
            copy_name = f"lxd-move-of-{instance['config'].get('volatile.uuid', '')}"
            if copy_name in self.instances:
                raise _error(
                    what,
                    500,
                    "Copy instance operation failed: Failed instance creation: Failed creating "
                    'instance record: Add instance info to the database: This "instances" '
                    "entry already exists",
                )
            if instance["config"].get("security.protection.delete") == "true":
                self.instances[copy_name] = {
                    **copy.deepcopy(instance),
                    "name": copy_name,
                    "location": member,
                }
                raise _error(what, 500, "Delete instance operation failed: Container is protected")
            instance["location"] = member
            instance["config"]["volatile.uuid"] = f"uuid-moved-to-{member}"

    # --- internals -----------------------------------------------------------------------------

    def _check_target(self, target: str | None, what: str) -> None:
        if target is not None:
            self._online(target, what)

    def _online(self, member: str, what: str) -> None:
        found = self.members.get(member)
        if found is None:
            raise _error(what, 404, "Member not found")
        if found["status"] != "Online" or member in self.unreachable:
            raise LxdError(
                f"{what}: Failed to connect to cluster member {member}: the member is offline",
                status=503,
            )

    def _check_idmap_delegated(self, name: str, what: str) -> None:
        """A start is refused when root may not map the container's ids on the member it is
        on (``member_delegated``: member -> the uids and gids, as ``FakeHost.delegated``
        gives them; a member not there: any)."""
        found = self.member_delegated.get(self.location(name))
        if found is None:
            super()._check_idmap_delegated(name, what)
            return
        expanded, _ = data.expand(self.instances[name], self.profiles)
        uids, gids = data.idmap_host_ids(expanded.get("raw.idmap", ""))
        if not data.delegated(uids, found[0]) or not data.delegated(gids, found[1]):
            raise _error(
                what,
                400,
                f"Failed to run: /usr/bin/lxd forkstart {name} /var/lib/lxd/containers "
                f"/var/log/lxd/{name}/lxc.conf: exit status 1",
            )

    def _lxd_choice(self) -> str:
        online = [n for n, m in sorted(self.members.items()) if m["status"] == "Online"]
        count = {
            n: sum(1 for i in self.instances.values() if i.get("location") == n) for n in online
        }
        return min(online, key=lambda n: (count[n], n))

    def _as_listed(self, item: Json) -> Json:
        """An instance as LXD lists it: with no more than its name, status and location when
        its member is offline."""
        member = str(item.get("location", ""))
        if member not in self.unreachable:
            return item
        return {
            "name": item["name"],
            "type": "",
            "status": "Error",
            "status_code": 112,
            "location": member,
            "config": None,
            "devices": None,
            "profiles": None,
        }
