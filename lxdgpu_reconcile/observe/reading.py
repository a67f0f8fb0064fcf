"""Read the live state of every host into a ``FleetSnapshot``; never writes.

Two halves. ``read_host`` and the ``observe_*`` functions do I/O, through
``observe.lxdapi.LxdApi``: one connection per host and per thread, every host read concurrently,
each against its own deadline. The ``parse_*`` functions and ``host_snapshot`` are pure: they
turn LXD's JSON (as the API returns it) into the frozen types of ``lxdgpu_reconcile.state`` and
are tested without a daemon.

An observation sends a fixed number of requests per host, whatever the number of objects on it:
``GET /1.0`` (opening the client), then one recursive listing each of instances, profiles, images
and storage pools, and ``GET /1.0/resources``. Instances are listed with recursion=1 (what
planning needs); with ``addresses=True`` (``status``) with recursion=2, which adds the state and
addresses of running instances and costs LXD a state collection per running instance (seconds for
hundreds; one request is still cheaper than one ``/state`` request per instance, even in
parallel: see docs/performance.md).

A host that cannot be read is not an exception: its snapshot carries a ``HostError`` that says
why and what to do, and the other hosts are observed all the same.

Given a way to reach each host's own system (``open_shell``, ``observe.transport``), the
facts of its host layer (accounts, homes, paths, delegations: ``observe.host_facts``) are read in
the same pass, in parallel with its LXD observation and within the same timeout, into
``HostSnapshot.facts`` (None for a host whose host layer is not managed). A cluster host's
members are each read over their own shell (``hosts.NAME.cluster.ssh``), in parallel too, into
``HostSnapshot.member_facts``. A failed read is ``HostFacts.error``, as a failed LXD read is
``HostSnapshot.error``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from lxdgpu_reconcile.fleet.models import Fleet, Host
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.observe import members
from lxdgpu_reconcile.observe.host_facts import FactsQuery, read_facts
from lxdgpu_reconcile.observe.hostshell import HostShell, OpenShell, member_shell
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.site import REAL, Site
from lxdgpu_reconcile.state import (
    Address,
    FleetSnapshot,
    GpuObs,
    HostError,
    HostErrorKind,
    HostFacts,
    HostSnapshot,
    ImageObs,
    InstanceObs,
    PoolObs,
    ProfileObs,
)

#: Seconds ``observe_fleet`` waits past a host's own deadline before reporting it as timed out
#: (the host's thread normally reports its own timeout first, naming the host's endpoint).
DEADLINE_GRACE = 2.0

Json = Mapping[str, Any]


@dataclass(frozen=True)
class RawHost:
    """The answers one observation of a host reads, as LXD returned them (the ``metadata``)."""

    server: Json  # GET /1.0
    resources: Json = field(default_factory=dict)  # GET /1.0/resources
    instances: Sequence[Json] = ()  # GET /1.0/instances?recursion=1 (2 for addresses)
    profiles: Sequence[Json] = ()  # GET /1.0/profiles?recursion=1
    images: Sequence[Json] = ()  # GET /1.0/images?recursion=1
    pools: Sequence[Json] = ()  # GET /1.0/storage-pools?recursion=1
    #: A cluster host's GET /1.0/cluster/members?recursion=1, and GET /1.0/resources?target=M
    #: of each online member (``observe.members``); empty for a single server.
    members: Sequence[Json] = ()
    member_resources: Mapping[str, Json] = field(default_factory=dict)


# --- I/O ------------------------------------------------------------------------------------------


def observe_fleet(
    fleet: Fleet,
    *,
    timeout: float = 30.0,
    hosts: Iterable[str] | None = None,
    counter: connecting.RequestCounter | None = None,
    addresses: bool = False,
    open_shell: OpenShell | None = None,
    site: Site = REAL,
) -> FleetSnapshot:
    """Observe ``hosts`` (default: every host of ``fleet``) concurrently.

    ``addresses``: also read the addresses of running instances (``status``); without it,
    ``InstanceObs.addresses`` is empty. ``open_shell``: read the host facts of each host it
    opens a shell for (at the paths of ``site``), alongside its LXD observation. Each host gets
    ``timeout`` seconds. Never raises for a host problem: that host's snapshot carries the
    error. Raises ``ValueError`` for a host name that is not in the fleet.
    """
    names = list(fleet.hosts) if hosts is None else list(dict.fromkeys(hosts))
    unknown = [name for name in names if name not in fleet.hosts]
    if unknown:
        raise ValueError(
            f"no host {', '.join(unknown)} in the fleet; its hosts are: {', '.join(fleet.hosts)}"
        )
    if not names:
        return FleetSnapshot()
    shells = {
        name: shell
        for name in (names if open_shell is not None else ())
        if fleet.hosts[name].cluster is None
        and open_shell is not None
        and (shell := open_shell(name)) is not None
    }
    # A cluster's members, each read over its own shell (``hosts.NAME.cluster.ssh``).
    member_shells = {
        (name, member): shell
        for name, member in _cluster_members(fleet, names if open_shell is not None else ())
        if (shell := member_shell(open_shell, name, member)) is not None
    }
    workers = len(names) + len(shells) + len(member_shells)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="observe")
    try:
        facts = {
            name: pool.submit(_facts_of, shell, FactsQuery.of(fleet, site, name), timeout)
            for name, shell in shells.items()
        }
        of_members = {
            key: pool.submit(
                _facts_of,
                shell,
                FactsQuery.of(fleet, site, key[0]).model_copy(update={"member": key[1]}),
                timeout,
            )
            for key, shell in member_shells.items()
        }
        futures = {
            name: pool.submit(
                observe_host,
                name,
                fleet.hosts[name],
                timeout=timeout,
                counter=counter,
                addresses=addresses,
            )
            for name in names
        }
        deadline = time.monotonic() + timeout + DEADLINE_GRACE
        snapshots: dict[str, HostSnapshot] = {}
        for name, future in futures.items():
            try:
                snapshots[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                host = fleet.hosts[name]
                error = connecting.timed_out(name, host, timeout).to_host_error()
                snapshots[name] = HostSnapshot(host=name, endpoint=host.endpoint, error=error)
        for name, read in facts.items():
            try:
                found = read.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                found = _facts_timed_out(name, shells[name], timeout)
            snapshots[name] = snapshots[name].model_copy(update={"facts": found})
        by_member: dict[str, dict[str, HostFacts]] = {}
        for (name, member), read in of_members.items():
            try:
                found = read.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                found = _facts_timed_out(
                    f"{name}, member {member}", member_shells[name, member], timeout
                )
            by_member.setdefault(name, {})[member] = found
        for name, found_by_member in by_member.items():
            snapshots[name] = snapshots[name].model_copy(update={"member_facts": found_by_member})
    finally:
        # A host past its deadline is not waited for; its requests carry their own timeouts.
        pool.shutdown(wait=False, cancel_futures=True)
    return FleetSnapshot(hosts=snapshots)


def observe_host(
    name: str,
    host: Host,
    *,
    timeout: float,
    counter: connecting.RequestCounter | None = None,
    addresses: bool = False,
) -> HostSnapshot:
    """Observe one host within ``timeout`` seconds; a failure is reported in the snapshot.

    ``addresses``: as for ``observe_fleet``."""
    deadline = time.monotonic() + timeout
    try:
        client = connecting.connect(name, host, timeout=timeout, counter=counter)
        try:
            raw = read_host(
                client,
                remaining=lambda: _remaining(name, host, deadline, timeout),
                addresses=addresses,
                cluster=host.cluster is not None,
            )
        finally:
            client.close()
        return host_snapshot(name, host.endpoint, raw)
    except members.NotACluster:
        error = connecting.HostConnectError(
            HostErrorKind.CONFIG,
            f"host {name}: the fleet file says it is a cluster (hosts.{name}.cluster), and "
            f"{host.endpoint} is a server that is not clustered",
            f"remove hosts.{name}.cluster, or point the endpoint at a member of the cluster",
        )
    except (KeyError, TypeError, ValueError) as exc:
        error = connecting.HostConnectError(
            HostErrorKind.ERROR,
            f"host {name}: unexpected answer from LXD ({type(exc).__name__}: {exc})",
            "check that the endpoint is an LXD server; report this with `lxc version` output",
        )
    except Exception as exc:
        error = connecting.classify(name, host, exc, timeout=timeout)
    return HostSnapshot(host=name, endpoint=host.endpoint, error=error.to_host_error())


def _cluster_members(fleet: Fleet, names: Iterable[str]) -> list[tuple[str, str]]:
    """``(host, member)`` of each member with an ssh destination of the cluster hosts among
    ``names``."""
    found: list[tuple[str, str]] = []
    for name in names:
        cluster = fleet.hosts[name].cluster
        found.extend((name, member) for member in (cluster.ssh if cluster is not None else ()))
    return found


def _facts_of(shell: HostShell, query: FactsQuery, timeout: float) -> HostFacts:
    """``read_facts``, with any failure (even a bug) as the facts' error, not an exception."""
    try:
        return read_facts(shell, query, timeout=timeout)
    except Exception as exc:
        return HostFacts(
            via=shell.via,
            error=HostError(
                kind=HostErrorKind.ERROR,
                message=f"host {query.host}: reading its own system ({shell.via}) failed: "
                f"{type(exc).__name__}: {exc}",
                hint="report this error as a bug, with the command that showed it",
            ),
        )


def _facts_timed_out(name: str, shell: HostShell, timeout: float) -> HostFacts:
    return HostFacts(
        via=shell.via,
        error=HostError(
            kind=HostErrorKind.TIMEOUT,
            message=f"host {name}: its own system ({shell.via}) did not answer within "
            f"{timeout:g} s",
            hint="check that the host answers over ssh; give more time with --timeout",
        ),
    )


def read_host(
    client: LxdApi,
    *,
    remaining: Callable[[], float],
    addresses: bool = False,
    cluster: bool = False,
) -> RawHost:
    """The raw state of the host behind ``client``: five requests, whatever it holds.

    ``remaining()`` gives the seconds left for the next request (and raises when none are).
    ``addresses``: list instances with recursion=2 (their state, with addresses), else 1.
    ``cluster``: the host is a cluster: its members and their resources instead of the
    host-wide resources (``observe.members``; raises ``members.NotACluster`` when it is not).
    """

    def listing(collection: str, recursion: int) -> list[Json]:
        return list(client.list(collection, recursion=recursion, timeout=remaining()))

    server = client.host_info
    resources: Json = {}
    member_list: list[Json] = []
    member_resources: dict[str, Json] = {}
    if cluster:
        member_list, member_resources = members.read_members(client, remaining=remaining)
    elif "resources" in server.get("api_extensions", ()):
        resources = client.resources(timeout=remaining())
    return RawHost(
        server=server,
        resources=resources,
        members=member_list,
        member_resources=member_resources,
        instances=listing("instances", 2 if addresses else 1),
        profiles=listing("profiles", 1),
        images=listing("images", 1),
        pools=listing("storage-pools", 1),
    )


def _remaining(name: str, host: Host, deadline: float, timeout: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise connecting.timed_out(name, host, timeout)
    return left


# --- pure conversion ------------------------------------------------------------------------------


def host_snapshot(name: str, endpoint: str, raw: RawHost) -> HostSnapshot:
    """The snapshot of host ``name`` from the raw answers of one observation."""
    environment: Json = raw.server.get("environment") or {}
    instances = [parse_instance(item) for item in raw.instances]
    profiles = (parse_profile(item) for item in raw.profiles)
    pools = (parse_pool(item) for item in raw.pools)
    memory = parse_memory(raw.resources)
    figures: dict[str, Any] = {
        "cpus": int((raw.resources.get("cpu") or {}).get("total", 0)),
        "memory_total": memory.get("total"),
        "memory_used": memory.get("used"),
    }
    cluster = members.parse_members(raw.members, raw.member_resources, parse_gpus, parse_memory)
    instances, unseen = members.split_unseen(instances, cluster)
    if cluster:
        figures = members.host_figures(cluster)
    return HostSnapshot(
        host=name,
        endpoint=endpoint,
        server_version=str(environment.get("server_version", "")),
        api_extensions=tuple(raw.server.get("api_extensions") or ()),
        cpus=figures["cpus"],
        memory_total=figures["memory_total"],
        memory_used=figures["memory_used"],
        gpus=parse_gpus(raw.resources),
        members=cluster,
        unseen=unseen,
        instances={i.name: i for i in sorted(instances, key=lambda i: i.name)},
        profiles={p.name: p for p in sorted(profiles, key=lambda p: p.name)},
        images=tuple(sorted((parse_image(i) for i in raw.images), key=lambda i: i.fingerprint)),
        pools={p.name: p for p in sorted(pools, key=lambda p: p.name)},
    )


def parse_instance(data: Json) -> InstanceObs:
    """An instance from ``GET /1.0/instances?recursion=2`` (or 1, then without addresses)."""
    state: Json = data.get("state") or {}
    return InstanceObs(
        name=data["name"],
        type=data.get("type") or "container",
        status=data["status"],
        description=data.get("description") or "",
        profiles=tuple(data.get("profiles") or ()),
        config=_strings(data.get("config")),
        devices=_devices(data.get("devices")),
        expanded_config=_strings(data.get("expanded_config")),
        expanded_devices=_devices(data.get("expanded_devices")),
        addresses=parse_addresses(state.get("network")),
        created_at=data.get("created_at") or "",
        location=_location(data.get("location")),
    )


def _location(value: Any) -> str:
    """An instance's cluster member; LXD says ``none`` (or nothing) on a single server."""
    text = str(value or "")
    return "" if text == "none" else text


def parse_addresses(network: Json | None) -> tuple[Address, ...]:
    """Every address of an instance's ``state.network``, by interface name then as listed."""
    addresses: list[Address] = []
    for interface, info in sorted((network or {}).items()):
        for item in info.get("addresses") or ():
            addresses.append(
                Address(
                    interface=interface,
                    family=item["family"],
                    address=item["address"],
                    netmask=str(item.get("netmask", "")),
                    scope=item.get("scope") or "",
                )
            )
    return tuple(addresses)


def parse_profile(data: Json) -> ProfileObs:
    """A profile from ``GET /1.0/profiles?recursion=1``."""
    return ProfileObs(
        name=data["name"],
        description=data.get("description") or "",
        config=_strings(data.get("config")),
        devices=_devices(data.get("devices")),
        used_by=tuple(_instance_name(url) for url in data.get("used_by") or ()),
    )


def parse_image(data: Json) -> ImageObs:
    """An image from ``GET /1.0/images?recursion=1``; aliases by name."""
    return ImageObs(
        fingerprint=data["fingerprint"],
        aliases=tuple(sorted(alias["name"] for alias in data.get("aliases") or ())),
        properties=_strings(data.get("properties")),
        public=bool(data.get("public", False)),
        size=int(data.get("size") or 0),
        created_at=data.get("created_at") or "",
        architecture=data.get("architecture") or "",
    )


def parse_pool(data: Json) -> PoolObs:
    """A storage pool from ``GET /1.0/storage-pools?recursion=1``."""
    return PoolObs(name=data["name"], driver=data["driver"], status=data.get("status") or "")


def parse_memory(resources: Json) -> dict[str, int]:
    """``total`` and ``used`` bytes of ``GET /1.0/resources`` ``memory``, those that are
    whole non-negative numbers (the figures are shown only: another value is left out rather
    than making the host unreadable)."""
    memory = resources.get("memory")
    if not isinstance(memory, Mapping):
        return {}
    return {
        key: value
        for key in ("total", "used")
        if type(value := memory.get(key)) is int and value >= 0
    }


def parse_gpus(resources: Json) -> tuple[GpuObs, ...]:
    """The GPU cards of ``GET /1.0/resources``.

    A card's ``id`` is its DRM id (what a ``gpu`` device's ``id=`` selects) when the card has
    one, else its index in the list.
    """
    cards: Sequence[Json] = (resources.get("gpu") or {}).get("cards") or ()
    gpus = []
    for index, card in enumerate(cards):
        drm: Json = card.get("drm") or {}
        nvidia: Json = card.get("nvidia") or {}
        gpus.append(
            GpuObs(
                id=int(drm["id"]) if "id" in drm else index,
                vendor=card.get("vendor") or "",
                product=card.get("product") or "",
                driver=card.get("driver") or "",
                pci_address=card.get("pci_address") or "",
                nvidia_uuid=nvidia.get("uuid") or "",
            )
        )
    return tuple(gpus)


_INSTANCE_URL = re.compile(r"^/1\.0/(?:instances|containers|virtual-machines)/([^/]+)$")


def _instance_name(url: str) -> str:
    """``/1.0/instances/NAME?project=p`` -> ``NAME``; any other URL is kept as it is."""
    match = _INSTANCE_URL.match(urlsplit(url).path)
    return unquote(match.group(1)) if match else url


def _strings(data: Json | None) -> dict[str, str]:
    return {str(key): str(value) for key, value in (data or {}).items()}


def _devices(data: Json | None) -> dict[str, dict[str, str]]:
    return {str(name): _strings(device) for name, device in (data or {}).items()}
