"""Helpers for the planner tests: fleets and snapshots from YAML data, and an in-memory "apply".

``simulate_apply`` runs the real executor (``execute.executor.apply_plan``) on in-memory LXD hosts
(``tests.fakes.lxd.FakeLxd``) made from a snapshot, and returns the snapshot they then give. The
fake adds the keys LXD adds on its own (``volatile.*``, ``image.*``) and refuses what LXD refuses
(deleting a running or protected container or a profile in use, a stale ``If-Match``); the
executor refuses an action whose dependency did not succeed and a write to an object that is no
longer what the plan saw (``Action.observed``) or that is untagged without ``Action.adopt``. Any
action that fails or is skipped raises ``Refused``. Planning again on the result is the
idempotency check.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.execute.results import Outcome
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe import members
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner
from tests.fakes.cluster import FakeCluster
from tests.fakes.fleet import FakeFleet
from tests.fakes.host import Account, FakeHost, Node

#: What every case starts from; a case's ``fleet`` is merged onto it key by key.
BASE_FLEET: dict[str, Any] = {
    "version": 1,
    "hosts": {"h1": {"endpoint": "unix:///var/lib/lxd/unix.socket"}},
    "templates": {"desk": {"alias": "tpl-desk", "base": "tpl-base", "build_host": "h1"}},
    "cuda": {"9.0": "/usr/local/cuda-9.0", "10.0": "/usr/local/cuda-10.0"},
}

#: The default profile of a fresh host, as ``lxd init`` leaves it.
FRESH_DEFAULT: dict[str, Any] = {
    "devices": {
        "root": {"type": "disk", "path": "/", "pool": "default"},
        "eth0": {"type": "nic", "nictype": "macvlan", "parent": "eno1", "name": "eth0"},
    }
}

#: Keys LXD writes into a container's local config when it creates it from an image.
LXD_ADDED = {
    "volatile.apply_template": "create",  # until the first start
    "volatile.base_image": "0123abcd",
    "volatile.idmap.base": "0",
    "volatile.idmap.next": "[]",
    "volatile.last_state.idmap": "[]",
    "volatile.uuid": "5e1f0000-0000-4000-8000-000000000000",
    "image.os": "Ubuntu",
    "image.release": "bionic",
}


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, mappings key by key; a ``None`` value deletes."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fleet_from(data: Mapping[str, Any] | str | None) -> Fleet:
    extra: Mapping[str, Any] = yaml.safe_load(data) if isinstance(data, str) else data or {}
    return Fleet.model_validate(merge(BASE_FLEET, extra))


def site_from(data: Mapping[str, Any] | None) -> sites.Site:
    return sites.Site.model_validate(data or {})


# --- snapshots from case data ---------------------------------------------------------------------


def snapshot_from(
    observed: Mapping[str, Any], fleet: Fleet, site: sites.Site
) -> state.FleetSnapshot:
    """A snapshot from a case's ``observed`` mapping (host -> description).

    Per host: ``cpus`` (32), ``gpus`` (ids, none), ``images`` (aliases, ``[tpl-desk]``),
    ``unreachable`` (a message), ``profiles`` (``{default: FRESH_DEFAULT}`` when absent),
    ``members`` (a cluster: see ``_members``; an instance's ``location`` names its member, and
    one on a member that is not online is unseen) and ``instances``. A profile or instance
    with ``as_desired: true`` starts from what the plan would write (for an instance: plus
    what LXD adds itself); ``config``/``devices`` entries are then merged onto it (``null``
    removes), ``untag: true`` drops every ``user.lxdgpu.*`` key.
    """
    first = state.FleetSnapshot(
        hosts={name: _host(name, data, {}) for name, data in observed.items()}
    )
    want = desiring.expand(fleet, first, site)
    hosts = {name: _host(name, data, _desired_of(want, name)) for name, data in observed.items()}
    # ``facts``: the host's own system (``host_facts``); without it the host layer is not managed.
    # ``member_facts``: a cluster member's own system, by member (the same keys as ``facts``).
    return state.FleetSnapshot(
        hosts={
            name: snap.model_copy(
                update={
                    "facts": host_facts(name, data, fleet, site),
                    "member_facts": {
                        member: found
                        for member, spec in ((data or {}).get("member_facts") or {}).items()
                        if (found := host_facts(member, {"facts": spec}, fleet, site, name))
                        is not None
                    },
                }
            )
            if snap.error is None
            else snap
            for (name, snap), data in zip(hosts.items(), observed.values(), strict=True)
        }
    )


def host_facts(
    name: str,
    data: Mapping[str, Any] | None,
    fleet: Fleet,
    site: sites.Site,
    host_of: str = "",
) -> state.HostFacts | None:
    """A host's facts from a case's ``facts`` (None without it): ``error`` (a message: the
    facts could not be read), or the host's system: ``accounts`` (``{name, uid, gid}``),
    ``groups`` (name -> gid), ``dirs`` (path -> ``{uid, gid, mode}``, owner root and mode 755
    when left out), ``files`` (paths of plain files), ``subuid``/``subgid`` (``root:1000:1000``
    lines), ``ledger`` (``subuid:1003`` lines), ``nics`` (interface names the host has) and
    ``nvidia`` (``nvidia-smi -L`` lines; absent: no ``nvidia-smi``). Read as the facts reader
    would for ``fleet`` (``tests.fakes.host.FakeHost.facts``). ``host_of``: the fleet host
    of cluster member ``name``."""
    spec = (data or {}).get("facts")
    if spec is None:
        return None
    if "error" in spec:
        return state.HostFacts(
            via=f"ssh root@{name}",
            error=state.HostError(
                kind=state.HostErrorKind.UNREACHABLE, message=spec["error"], hint="start sshd"
            ),
        )
    host = FakeHost(
        name=name, host=host_of, nvidia=tuple(spec["nvidia"]) if "nvidia" in spec else None
    )
    for account in spec.get("accounts") or ():
        host.accounts[account["name"]] = Account(account["name"], account["uid"], account["gid"])
    host.groups.update(spec.get("groups") or {})
    for path, node in (spec.get("dirs") or {}).items():
        node = node or {}
        mode = int(str(node.get("mode", "755")), 8)
        host.nodes[path] = Node("directory", node.get("uid", 0), node.get("gid", 0), mode)
    for path in spec.get("files") or ():
        host.nodes[path] = Node("regular file")
    for file in ("subuid", "subgid"):
        for line in spec.get(file) or ():
            owner, start, count = line.split(":")
            getattr(host, file).append((owner, int(start), int(count)))
    host.ledger = list(spec.get("ledger") or ())
    host.nics = set(spec.get("nics") or ())
    return host.facts(fleet, site)


def _desired_of(want: desiring.DesiredState, host: str) -> dict[str, Any]:
    found = want.hosts.get(host)
    if found is None:
        return {}
    return {"profiles": found.profiles, "instances": found.instances}


def _host(name: str, data: Mapping[str, Any] | None, want: Mapping[str, Any]) -> state.HostSnapshot:
    data = data or {}
    if "unreachable" in data:
        return state.HostSnapshot(
            host=name,
            endpoint="unix:///x",
            error=state.HostError(
                kind=state.HostErrorKind.UNREACHABLE,
                message=data["unreachable"],
                hint=f"start LXD on {name}",
            ),
        )
    profiles = {
        pname: _profile(pname, pdata or {}, want.get("profiles", {}))
        for pname, pdata in (data.get("profiles") or {"default": FRESH_DEFAULT}).items()
    }
    instances = {
        iname: _instance(iname, idata or {}, want.get("instances", {}), profiles)
        for iname, idata in (data.get("instances") or {}).items()
        if not (idata or {}).get("as_desired") or want
    }
    cluster = _members(data.get("members") or {})
    seen, unseen = members.split_unseen(instances.values(), cluster)
    instances = {inst.name: inst for inst in seen}
    return state.HostSnapshot(
        host=name,
        endpoint="unix:///x",
        cpus=members.host_figures(cluster)["cpus"] if cluster else data.get("cpus", 32),
        gpus=tuple(state.GpuObs(id=i) for i in data.get("gpus", ())),
        members=cluster,
        unseen=unseen,
        images=tuple(
            state.ImageObs(fingerprint=f"fp-{alias}", aliases=(alias,))
            for alias in data.get("images", ["tpl-desk"])
        ),
        pools={
            pool: state.PoolObs(name=pool, driver="dir", status="Created")
            for pool in data.get("pools", ["default"])
        },
        profiles=profiles,
        instances=instances,
    )


def _members(data: Mapping[str, Any]) -> tuple[state.MemberObs, ...]:
    """A cluster's members from a case: name -> ``status`` (Online), ``cpus`` (32), ``gpus``
    (ids, none)."""
    return tuple(
        state.MemberObs(
            name=name,
            status=(spec or {}).get("status", "Online"),
            cpus=(spec or {}).get("cpus", 32),
            gpus=tuple(state.GpuObs(id=i) for i in (spec or {}).get("gpus", ())),
        )
        for name, spec in data.items()
    )


def _profile(
    name: str, data: Mapping[str, Any], want: Mapping[str, desiring.DesiredProfile]
) -> state.ProfileObs:
    base: dict[str, Any] = {"description": "", "config": {}, "devices": {}}
    if data.get("as_desired") and name in want:
        base = want[name].model_dump(include={"description", "config", "devices"})
    body = _overlay(base, data)
    return state.ProfileObs(name=name, **body)


def _instance(
    name: str,
    data: Mapping[str, Any],
    want: Mapping[str, desiring.DesiredInstance],
    profiles: Mapping[str, state.ProfileObs],
) -> state.InstanceObs:
    base: dict[str, Any] = {"profiles": ["default"], "config": dict(LXD_ADDED), "devices": {}}
    if data.get("as_desired") and name in want:
        found = want[name]
        base = {
            "profiles": list(found.profiles),
            "config": {**found.config, **LXD_ADDED},
            "devices": found.devices,
        }
    body = _overlay(base, data)
    return expanded(
        state.InstanceObs(
            name=name,
            type=data.get("type", "container"),
            status=data.get("status", "Running"),
            profiles=tuple(data.get("profiles", body["profiles"])),
            config=body["config"],
            devices=body["devices"],
            location=data.get("location", ""),
        ),
        profiles,
    )


def _overlay(base: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key in ("config", "devices"):
        out[key] = merge(out.get(key) or {}, data.get(key) or {})
    if "description" in data:
        out["description"] = data["description"]
    if data.get("untag"):
        out["config"] = {k: v for k, v in out["config"].items() if not k.startswith("user.lxdgpu.")}
    return out


def expanded(obs: state.InstanceObs, profiles: Mapping[str, state.ProfileObs]) -> state.InstanceObs:
    """``obs`` with ``expanded_config``/``expanded_devices`` as LXD computes them."""
    config: dict[str, str] = {}
    devices: dict[str, dict[str, str]] = {}
    for name in obs.profiles:
        if name in profiles:
            config.update(profiles[name].config)
            devices.update(profiles[name].devices)
    config.update(obs.config)
    devices.update(obs.devices)
    return obs.model_copy(update={"expanded_config": config, "expanded_devices": devices})


# --- apply with the real executor on in-memory hosts ----------------------------------------------


class Refused(AssertionError):
    """An action the executor did not perform: LXD or the executor refused it, or it was skipped."""


def simulate_apply(
    p: planning.Plan,
    snapshot: state.FleetSnapshot,
    fleet: Fleet | None = None,
    site: sites.Site = sites.REAL,
) -> state.FleetSnapshot:
    """``snapshot`` after the real executor performed ``p``'s non-pending actions on in-memory
    LXD hosts (``tests.fakes.lxd``); raises ``Refused`` when an action failed or was skipped.

    ``fleet`` (and its ``site``) is what ``p`` was planned from: the executor checks the bodies
    against it (a container's ``raw.idmap``, its profiles, profiles with ``allow_unsafe``)."""
    hosts = FakeFleet(snapshot)
    fleet = fleet or Fleet.model_validate(
        {"version": 1, "hosts": {n: {"endpoint": h.endpoint} for n, h in snapshot.hosts.items()}}
    )
    # The host layer of each host whose facts were read: a FakeHost, whose delegations are
    # what that host's LXD lets containers map.
    systems = {
        name: FakeHost.from_facts(name, snap.facts)
        for name, snap in snapshot.hosts.items()
        if snap.facts is not None and snap.facts.readable and name in hosts.hosts
    }
    for name, system in systems.items():
        hosts.hosts[name].delegated_uids = system.delegated("subuid")
        hosts.hosts[name].delegated_gids = system.delegated("subgid")
    # A cluster's members: a FakeHost each, whose delegations the cluster checks per member.
    member_systems = {
        (name, member): FakeHost.from_facts(member, facts, host_of=name)
        for name, snap in snapshot.hosts.items()
        for member, facts in snap.member_facts.items()
        if facts.readable and name in hosts.hosts
    }
    for (name, member), system in member_systems.items():
        cluster = hosts.hosts[name]
        assert isinstance(cluster, FakeCluster)
        cluster.member_delegated[member] = (system.delegated("subuid"), system.delegated("subgid"))
    # The authority ``apply`` gives the plan it made: its --adopt and --prune.
    authority = executor.Authority(
        adopt=p.options.adopt, prune=p.options.prune, host_root=site.host_root
    )
    report = executor.apply_plan(
        p,
        fleet,
        timeout=5.0,
        connect=hosts.connect,
        authority=authority,
        open_shell=Shells(systems, member_systems),
    )
    refused = [r for r in report.results if r.outcome in (Outcome.FAILED, Outcome.SKIPPED)]
    if refused:
        raise Refused("; ".join(f"{r.id}: {r.outcome}: {r.message} ({r.hint})" for r in refused))
    after = hosts.snapshot()
    return state.FleetSnapshot(
        hosts={
            name: snap.model_copy(
                update={
                    "facts": systems[name].facts(fleet, site)
                    if name in systems
                    else snapshot.hosts[name].facts,
                    "member_facts": {
                        member: member_systems[name, member].facts(fleet, site)
                        if (name, member) in member_systems
                        else facts
                        for member, facts in snapshot.hosts[name].member_facts.items()
                    },
                }
            )
            for name, snap in after.hosts.items()
        }
    )


class Shells:
    """The shells of fake hosts, and of cluster members (``hostshell.member_shell``)."""

    def __init__(
        self, hosts: Mapping[str, FakeHost], members: Mapping[tuple[str, str], FakeHost]
    ) -> None:
        self.hosts = hosts
        self.members = members

    def __call__(self, host: str) -> FakeHost | None:
        return self.hosts.get(host)

    def member(self, host: str, member: str) -> FakeHost | None:
        return self.members.get((host, member))


# --- scenarios and golden files -------------------------------------------------------------------


def plan_scenario(scenario: Mapping[str, Any], **options: Any) -> planning.Plan:
    """The plan of a scenario (``fleet``, ``observed`` and an optional ``site``)."""
    fleet = fleet_from(scenario["fleet"])
    site = site_from(scenario.get("site"))
    snapshot = snapshot_from(scenario["observed"], fleet, site)
    return planner.make_plan(fleet, snapshot, site, **options)


def check_golden(path: Path, text: str) -> None:
    """``text`` equals the golden file at ``path`` (rewritten instead with ``UPDATE_GOLDEN=1``)."""
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()
