"""Preflight: what a host must have before anything is written to it. Pure: no I/O.

``preflight`` checks one host against what its plan needs and returns plan errors (each with
the fix) and notes; a host with errors gets no writes, the other hosts go on. It checks:

- the GPU count ``hosts.NAME.gpus`` against the GPUs LXD lists (``/1.0/resources``; on a
  cluster, the GPUs of all members together, ``/1.0/resources?target=MEMBER``, checked when
  every member is online); the GPU ids
  users list are checked where containers are expanded (``planning.desired``,
  ``GPU_NOT_ON_HOST``), not again here. Not on a site without GPUs (the lab);
- the storage pool of every root disk the containers get (declared profiles, profiles used
  without being declared such as LXD's ``default``, and the containers' own devices) against
  the pools LXD lists; a snapshot that lists no pool at all is not checked;
- from the host's own facts (``state.HostFacts``; not checked when the host layer is not
  managed, ``facts is None``): the parent interface of every ``macvlan``/``ipvlan`` NIC, every
  disk source (CUDA trees, profile disk sources; homes are the host layer's, which creates
  them), the subuid/subgid delegation of each container's ``raw.idmap`` ids (present, or
  planned by the host layer), and an NVIDIA driver (``nvidia-smi -L``) when a profile the host
  gets sets ``nvidia.runtime``. In the lab, which has no GPU, a note says the driver is not
  checked. On a cluster host the checks of a system's own facts run per member
  (``facts_preflight``, from ``planning.member_layer``) for the containers placed there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet.host_needs import disk_source, nic_parent
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning.common import ErrorCode, ObjectKind, ObjectRef, PlanError
from lxdgpu_reconcile.planning.host_layer import LayerSpec, delegation_name, idmap_ids

#: The note of a host whose profiles set ``nvidia.runtime`` on a site without GPUs.
LAB_DRIVER_NOTE = "{host}: NVIDIA driver: not checked (no GPU in the lab)"


def preflight(
    want: desiring.DesiredHost,
    snap: state.HostSnapshot,
    *,
    planned: Iterable[str] = (),
) -> tuple[list[PlanError], list[str]]:
    """The preflight errors and notes of ``want``'s host, observed as ``snap``; ``planned``:
    the delegations (``subuid:1003``) the plan adds on the host."""
    spec = want.layer
    if not spec.active:
        return [], []
    host = want.host
    errors: list[PlanError] = []
    notes: list[str] = []
    if snap.clustered:
        gpu_errors, gpu_notes = _cluster_gpu_count(spec, host, snap)
        errors.extend(gpu_errors)
        notes.extend(gpu_notes)
    else:
        errors.extend(_gpu_count(spec, host, snap))
    devices = _devices(want, snap)
    errors.extend(_pools(host, devices, snap))
    facts = snap.facts
    runtime = spec.nvidia_runtime
    if runtime is not None and not spec.attach_gpus:
        notes.append(LAB_DRIVER_NOTE.format(host=host))
    if facts is None or facts.error is not None:
        return errors, notes
    errors.extend(facts_preflight(want, snap, facts, planned=planned, runtime=runtime))
    return errors, notes


def facts_preflight(
    want: desiring.DesiredHost,
    snap: state.HostSnapshot,
    facts: state.HostFacts,
    *,
    planned: Iterable[str] = (),
    runtime: str | None = None,
    where: str | None = None,
) -> list[PlanError]:
    """The checks of ``want`` against one system's own ``facts``: NIC parents, disk sources,
    delegations (present or ``planned``), the NVIDIA driver when profile ``runtime`` sets
    ``nvidia.runtime``. ``where`` names the system in messages (``member node2`` of a cluster;
    the host by default); errors are the host's."""
    host = want.host
    place = where or host
    spec = want.layer
    devices = _devices(want, snap)
    errors = [
        *_nic_parents(place, devices, facts),
        *_sources(spec, place, want, facts),
        *_delegations(place, want, facts, set(planned)),
    ]
    if runtime is not None and spec.attach_gpus and not facts.nvidia:
        errors.append(
            PlanError(
                code=ErrorCode.NO_NVIDIA_DRIVER,
                host=host,
                object=ObjectRef(kind=ObjectKind.PROFILE, name=runtime),
                message=f"profile {runtime} sets nvidia.runtime, and {place} has no working "
                "NVIDIA driver (nvidia-smi -L "
                + ("lists no GPU)" if facts.nvidia == () else "is not there)"),
                fixes=(
                    f"install the NVIDIA driver on {place} (nvidia-smi -L must list the GPUs)",
                    f"or take nvidia.runtime out of profile {runtime}",
                ),
            )
        )
    return [e if e.host == host else e.model_copy(update={"host": host}) for e in errors]


# --- LXD's own view -------------------------------------------------------------------------------


def _gpu_count(spec: LayerSpec, host: str, snap: state.HostSnapshot) -> list[PlanError]:
    if spec.gpus is None or not spec.attach_gpus:
        return []
    present = sorted(gpu.id for gpu in snap.gpus)
    if len(present) == spec.gpus:
        return []
    return [
        PlanError(
            code=ErrorCode.GPU_COUNT,
            host=host,
            message=f"{host} has {len(present)} GPU(s) (ids: "
            f"{', '.join(map(str, present)) or 'none'}), and hosts.{host}.gpus says {spec.gpus}",
            fixes=(
                f"check `lxc info --resources` on {host} (a GPU lost, or its driver not loaded)",
                f"or correct hosts.{host}.gpus in the fleet file",
            ),
        )
    ]


def _cluster_gpu_count(
    spec: LayerSpec, host: str, snap: state.HostSnapshot
) -> tuple[list[PlanError], list[str]]:
    """``hosts.NAME.gpus`` of a cluster: the GPUs of all its members together, checked when
    every member is online (a member that is not lists none)."""
    if spec.gpus is None or not spec.attach_gpus:
        return [], []
    down = [m.name for m in snap.members_down]
    if down:
        return [], [
            f"{host}: hosts.{host}.gpus not checked: member {', '.join(down)} is not online "
            "(it is the GPUs of all members together)"
        ]
    counts = {m.name: len(m.gpus) for m in snap.members}
    total = sum(counts.values())
    if total == spec.gpus:
        return [], []
    shown = ", ".join(f"{name} {count}" for name, count in counts.items())
    return [
        PlanError(
            code=ErrorCode.GPU_COUNT,
            host=host,
            message=f"cluster {host} has {total} GPU(s) in all ({shown}), and hosts.{host}.gpus "
            f"says {spec.gpus}",
            fixes=(
                f"check `lxc info --resources --target MEMBER` on {host}'s members (a GPU lost, "
                "or its driver not loaded)",
                f"or correct hosts.{host}.gpus in the fleet file (on a cluster: the GPUs of all "
                "members together)",
            ),
        )
    ], []


def _devices(
    want: desiring.DesiredHost, snap: state.HostSnapshot
) -> list[tuple[ObjectRef, Mapping[str, str]]]:
    """Every device the host's containers get: from the desired profiles, the profiles they use
    without the fleet declaring them (as observed), and their own."""
    found: list[tuple[ObjectRef, Mapping[str, str]]] = []
    for name, profile in want.profiles.items():
        ref = ObjectRef(kind=ObjectKind.PROFILE, name=name)
        found.extend((ref, device) for device in profile.devices.values())
    for name in want.external_profiles:
        observed = snap.profiles.get(name)
        if observed is not None:
            ref = ObjectRef(kind=ObjectKind.PROFILE, name=name)
            found.extend((ref, device) for device in observed.devices.values())
    for name, instance in want.instances.items():
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=name)
        found.extend((ref, device) for device in instance.devices.values())
    return found


def _pools(
    host: str, devices: Iterable[tuple[ObjectRef, Mapping[str, str]]], snap: state.HostSnapshot
) -> list[PlanError]:
    if not snap.pools:
        return []
    errors = []
    seen = set()
    for ref, device in devices:
        pool = device.get("pool")
        if device.get("type") != "disk" or device.get("path") != "/" or not pool:
            continue
        if pool in snap.pools or (ref.name, pool) in seen:
            continue
        seen.add((ref.name, pool))
        errors.append(
            PlanError(
                code=ErrorCode.MISSING_POOL,
                host=host,
                object=ref,
                message=f"{ref} puts root disks on storage pool {pool}, which {host} does not "
                f"have (its pools: {', '.join(sorted(snap.pools))})",
                fixes=(
                    f"create it on {host}: lxc storage create {pool} dir (or the driver you use)",
                    f"or use one of {host}'s pools in {ref}'s root disk",
                ),
            )
        )
    return errors


# --- the host's own facts -------------------------------------------------------------------------


def _nic_parents(
    host: str, devices: Iterable[tuple[ObjectRef, Mapping[str, str]]], facts: state.HostFacts
) -> list[PlanError]:
    errors = []
    seen = set()
    for ref, device in devices:
        parent = nic_parent(device)
        if parent is None or facts.nics.get(parent, True) or (ref.name, parent) in seen:
            continue
        seen.add((ref.name, parent))
        errors.append(
            PlanError(
                code=ErrorCode.MISSING_NIC_PARENT,
                host=host,
                object=ref,
                message=f"{ref} puts a {device.get('nictype')} NIC on {parent}, and {host} has "
                f"no network interface {parent}",
                fixes=(
                    f"list {host}'s interfaces (ip -br link) and set the NIC's parent to one",
                    f"or give {host} a profile of its own with its interface name",
                ),
            )
        )
    return errors


def _sources(
    spec: LayerSpec, host: str, want: desiring.DesiredHost, facts: state.HostFacts
) -> list[PlanError]:
    """Disk sources of the profiles (CUDA trees among them) that the host does not have; homes
    are left to the host layer."""
    cuda = spec.cuda
    errors = []
    for name, profile in want.profiles.items():
        for device in profile.devices.values():
            source = disk_source(device)
            if source is None:
                continue
            found = facts.paths.get(source)
            if found is None or found.exists:
                continue
            ref = ObjectRef(kind=ObjectKind.PROFILE, name=name)
            if name in cuda:
                what = f"the CUDA {cuda[name]} tree {source} (cuda: in the fleet file)"
                fix = f"install CUDA {cuda[name]} on {host} at {source}"
            else:
                what = f"{source}, a disk source of profile {name},"
                fix = f"create or mount {source} on {host}"
            errors.append(
                PlanError(
                    code=ErrorCode.MISSING_SOURCE,
                    host=host,
                    object=ref,
                    message=f"{what} is not on {host}",
                    fixes=(fix, "or correct the path in the fleet file"),
                )
            )
    return errors


def _delegations(
    host: str, want: desiring.DesiredHost, facts: state.HostFacts, planned: set[str]
) -> list[PlanError]:
    errors = []
    for name, instance in sorted(want.instances.items()):
        missing = [
            delegation_name(file, ident)
            for file, ident in idmap_ids(instance.config.get("raw.idmap", ""))
            if not facts.delegates(file, ident) and delegation_name(file, ident) not in planned
        ]
        if not missing:
            continue
        lines = ", ".join(m.replace(":", " root:", 1) + ":1" for m in missing)
        errors.append(
            PlanError(
                code=ErrorCode.MISSING_DELEGATION,
                host=host,
                object=ObjectRef(kind=ObjectKind.INSTANCE, name=name),
                message=f"{name} maps host ids root may not map on {host} ({lines}): LXD "
                "would refuse to start it",
                fixes=(f"add the lines to /etc/subuid and /etc/subgid on {host}",),
            )
        )
    return errors
