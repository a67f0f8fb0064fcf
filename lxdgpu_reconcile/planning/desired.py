"""Desired state: the LXD objects every host must have, expanded from the fleet file. Pure.

``expand`` reads the fleet, the observed snapshot and the site and returns, per host, the
profiles and containers as LXD must store them. It reads the snapshot only for three facts that
the fleet cannot know: the host's CPU count (``limits.cpu`` given as a share), its GPU ids (to
check ``gpus: [..]``) and the devices of profiles the fleet uses without declaring them (LXD's
``default``), whose GPU devices a container with a GPU list must override.

Layout of what is expanded:

- Profiles declared in the fleet, on every host with a user who uses them and on the hosts the
  profile lists under ``hosts``; tagged ``user.lxdgpu.managed``.
- One profile per CUDA version, ``cuda-VERSION``, with one read-only disk device ``cuda-VERSION``
  that mounts the host tree at the same path. A container gets the profiles of the versions its
  user lists, so two users on one host can have different versions; a version's profile exists
  on a host only while some user there lists it.
- One container per user: profiles ``defaults.profiles`` + CUDA profiles + the user's own,
  ``raw.idmap`` mapping the user's host uid and gid onto ``defaults.container_uid``, the home
  disk ``home``, ``limits.cpu``, ``security.protection.delete``, a ``gpuN`` device per listed GPU
  (inherited GPU devices overridden with ``type: none``) and the ownership tags, among them
  ``user.lxdgpu.created-as: HOST/NAME`` (its identity: a copy carries another container's).

Host-side paths (disk sources, CUDA trees) go through ``site.host_path``, homes through
``site.home_dir``; paths inside the container stay as declared. On a site without GPUs, GPU
devices and ``nvidia.*`` keys are left out of everything expanded.

``limits.cpu``: a count is used as given, capped at the host's CPU count; a share is
``floor(cpus * share)``, at least 1 (75% of 32 CPUs is 24, of 1 CPU is 1). When the host was not
observed the share cannot be resolved: the container is expanded without ``limits.cpu`` and the
plan marks that host as errored anyway (nothing observed to compare with).

This module expands the containers and the scope of each host; the profiles (declared and CUDA)
and the spec and start hashes are built in ``planning.desired_profiles``, whose public names
(``DesiredProfile``, ``spec_hash``, ``start_hash``, ``cuda_profile_name``, ...) are importable from
here as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import Field

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet import models
from lxdgpu_reconcile.fleet.host_needs import home_source
from lxdgpu_reconcile.gcpause import gc_paused
from lxdgpu_reconcile.planning import placement, rules
from lxdgpu_reconcile.planning.bulk import trusted
from lxdgpu_reconcile.planning.common import (
    ErrorCode,
    Frozen,
    ObjectKind,
    ObjectRef,
    PlanError,
    PowerState,
)

# The profiles and the hashes live in desired_profiles; their public names are part of this
# module's interface too (``desired.DesiredProfile``, ``desired.spec_hash``, ...).
from lxdgpu_reconcile.planning.desired_profiles import CUDA_PROFILE as CUDA_PROFILE
from lxdgpu_reconcile.planning.desired_profiles import ROLE_CUDA as ROLE_CUDA
from lxdgpu_reconcile.planning.desired_profiles import ROLE_PROFILE as ROLE_PROFILE
from lxdgpu_reconcile.planning.desired_profiles import DesiredProfile as DesiredProfile
from lxdgpu_reconcile.planning.desired_profiles import cuda_profile_name as cuda_profile_name
from lxdgpu_reconcile.planning.desired_profiles import profiles_for, sorted_devices, start_hash_once
from lxdgpu_reconcile.planning.desired_profiles import spec_hash as spec_hash
from lxdgpu_reconcile.planning.desired_profiles import start_hash as start_hash
from lxdgpu_reconcile.planning.host_layer import LayerSpec, layer_spec

#: The profile LXD creates on every host; used without being declared, managed once declared.
DEFAULT_PROFILE = "default"
#: Role tag value (``user.lxdgpu.role``) of a user container.
ROLE_CONTAINER = "container"
#: Name of the home disk device of a user container.
HOME_DEVICE = "home"
#: Name of the device for GPU ``id`` when a user lists GPU ids.
GPU_DEVICE = "gpu{id}"


class DesiredInstance(Frozen):
    """A user container as LXD must store it on ``host``; ``alias`` is its image at creation."""

    host: str
    name: str
    user: str
    template: str
    alias: str
    profiles: tuple[str, ...]
    config: dict[str, str] = Field(default_factory=dict)
    devices: dict[str, dict[str, str]] = Field(default_factory=dict)
    state: PowerState = PowerState.RUNNING
    #: ``paused: true`` on the user: the plan holds every action on the container back.
    paused: bool = False
    #: On a cluster host: the member it lives on (None: none could be chosen), and why
    #: (``planning.placement``).
    member: str | None = None
    placement: str = ""
    #: ``defaults.container_user``: gets a first password when the container is created.
    container_user: str = "ubuntu"
    #: The template runs VNC (``templates.X.vnc``): a first VNC password too.
    vnc: bool = False

    @property
    def spec_hash(self) -> str:
        return self.config.get(state.TAG_SPEC_HASH, "")


class PruneScope(Frozen):
    """Which managed objects on a host that are no longer desired may be planned for deletion.

    ``whole_host``: every tagged container and profile (no ``--target``, or the host is a
    target). Otherwise only tagged containers of the targeted ``users``, and no profile.
    """

    whole_host: bool = True
    users: tuple[str, ...] = ()


class DesiredHost(Frozen):
    """Everything one host must have, and what keeps it from being planned."""

    host: str
    profiles: dict[str, DesiredProfile] = Field(default_factory=dict)
    instances: dict[str, DesiredInstance] = Field(default_factory=dict)
    #: Profiles the containers use without the fleet declaring them (LXD's ``default``): they
    #: must exist on the host and are left as they are.
    external_profiles: tuple[str, ...] = ()
    prune: PruneScope = Field(default_factory=PruneScope)
    errors: tuple[PlanError, ...] = ()
    notes: tuple[str, ...] = ()
    #: ``paused: true`` on the host: the plan holds every action on it back.
    paused: bool = False
    #: Users paused in the fleet file: their tagged containers are left alone wherever they are.
    paused_users: tuple[str, ...] = ()
    #: The container name the fleet gives each of its users (``users.NAME.container``): a tagged
    #: container without ``user.lxdgpu.created-as`` under another name is a copy.
    container_names: dict[str, str] = Field(default_factory=dict)
    #: What the host layer (accounts, homes, delegations) and preflight need of the fleet and
    #: the site on this host (``planning.host_layer``).
    layer: LayerSpec = Field(default_factory=LayerSpec)


class DesiredState(Frozen):
    """The desired state of every host in scope, in fleet order."""

    hosts: dict[str, DesiredHost] = Field(default_factory=dict)
    preserve: rules.Preserve = Field(default_factory=rules.Preserve)
    attach_gpus: bool = True
    errors: tuple[PlanError, ...] = ()
    notes: tuple[str, ...] = ()


LAB_NOTE = "lab: GPUs are not attached"


def lab_note(fleet: models.Fleet) -> str:
    """The plan's one line in the lab: GPUs are not attached, and what the fleet would attach."""
    left_out = []
    for name, profile in fleet.profiles.items():
        items = [
            f"devices.{device}"
            for device, spec in profile.devices.items()
            if spec.get("type") in rules.GPU_DEVICE_TYPES
        ]
        items += [
            f"config.{key}" for key in profile.config if key.startswith(rules.GPU_CONFIG_PREFIXES)
        ]
        if items:
            left_out.append(f"profile {name}: {', '.join(items)}")
    for user, spec in fleet.users.items():
        if isinstance(spec.gpus, tuple) and spec.gpus:
            devices = ", ".join(GPU_DEVICE.format(id=i) for i in spec.gpus)
            left_out.append(f"{fleet.container_of(user)}: {devices}")
    if not left_out:
        return LAB_NOTE
    return f"{LAB_NOTE} (planned, not written: {'; '.join(left_out)})"


# --- entry point ----------------------------------------------------------------------------------


def expand(
    fleet: models.Fleet,
    snapshot: state.FleetSnapshot,
    site: sites.Site,
    *,
    targets: Iterable[str] = (),
) -> DesiredState:
    """The desired state of the hosts in scope: all of them, or those ``targets`` select.

    A target is a host name (the whole host) or a user name (that user's container and the
    profiles it uses; a user no longer in the fleet selects their tagged container for pruning).
    """
    scopes, errors = _scopes(fleet, snapshot, tuple(targets))
    errors += tuple(_homeless_users(fleet))
    shared = _Shared(
        paused_users=tuple(name for name, user in fleet.users.items() if user.paused),
        container_names={user: fleet.container_of(user) for user in fleet.users},
    )
    with gc_paused():
        hosts = {
            name: _expand_host(fleet, snapshot.hosts.get(name), site, name, scope, shared)
            for name, scope in scopes.items()
        }
    return DesiredState(
        hosts=hosts,
        preserve=rules.preserve_for(attach_gpus=site.attach_gpus),
        attach_gpus=site.attach_gpus,
        errors=errors,
        notes=() if site.attach_gpus else (lab_note(fleet),),
    )


class _Scope(Frozen):
    users: tuple[str, ...]
    prune: PruneScope


class _Shared(Frozen):
    """What every host's ``DesiredHost`` carries alike: computed once, not once per host."""

    paused_users: tuple[str, ...]
    container_names: dict[str, str]


def _scopes(
    fleet: models.Fleet, snapshot: state.FleetSnapshot, targets: tuple[str, ...]
) -> tuple[dict[str, _Scope], tuple[PlanError, ...]]:
    on = _users_by_host(fleet)
    if not targets:
        scopes = {host: _Scope(users=on.get(host, ()), prune=PruneScope()) for host in fleet.hosts}
        return scopes, ()
    whole: set[str] = set()
    picked: dict[str, list[str]] = {}
    errors = []
    for target in dict.fromkeys(targets):
        found = False
        if target in fleet.hosts:
            whole.add(target)
            found = True
        if target in fleet.users:
            picked.setdefault(fleet.users[target].host, []).append(target)
            found = True
        for host in _hosts_with_tagged_user(snapshot, target):
            if host in fleet.hosts:
                picked.setdefault(host, []).append(target)
                found = True
        if not found:
            errors.append(_unknown_target(fleet, target))
    scopes = {}
    for host in fleet.hosts:
        if host in whole:
            scopes[host] = _Scope(users=on.get(host, ()), prune=PruneScope())
        elif host in picked:
            users = tuple(dict.fromkeys(picked[host]))
            scopes[host] = _Scope(
                users=tuple(u for u in users if u in fleet.users and fleet.users[u].host == host),
                prune=PruneScope(whole_host=False, users=users),
            )
    return scopes, tuple(errors)


def _users_by_host(fleet: models.Fleet) -> dict[str, tuple[str, ...]]:
    """``fleet.users_on(host)`` of every host, in file order, in one pass over the users."""
    on: dict[str, list[str]] = {}
    for name, user in fleet.users.items():
        on.setdefault(user.host, []).append(name)
    return {host: tuple(names) for host, names in on.items()}


def _homeless_users(fleet: models.Fleet) -> Iterable[PlanError]:
    for user, spec in fleet.users.items():
        if spec.host not in fleet.hosts:
            yield PlanError(
                code=ErrorCode.UNKNOWN_HOST,
                message=f"user {user} is on host {spec.host!r}, which is not under hosts:",
                fixes=(f"declare hosts.{spec.host}, or move the user to a declared host",),
            )


def _hosts_with_tagged_user(snapshot: state.FleetSnapshot, user: str) -> list[str]:
    return [
        name
        for name, snap in snapshot.hosts.items()
        if any(
            obs.managed and obs.config.get(state.TAG_USER) == user
            for obs in snap.instances.values()
        )
    ]


def _unknown_target(fleet: models.Fleet, target: str) -> PlanError:
    return PlanError(
        code=ErrorCode.UNKNOWN_TARGET,
        message=f"--target {target}: no host or user of that name in the fleet file, and no "
        "managed container of such a user on any host",
        fixes=(
            f"hosts: {', '.join(fleet.hosts) or '(none)'}",
            f"users: {', '.join(fleet.users) or '(none)'}",
        ),
    )


# --- one host -------------------------------------------------------------------------------------


def _expand_host(
    fleet: models.Fleet,
    snap: state.HostSnapshot | None,
    site: sites.Site,
    host: str,
    scope: _Scope,
    shared: _Shared,
) -> DesiredHost:
    observed = snap if snap is not None and snap.reachable else None
    errors: list[PlanError] = []
    notes: list[str] = []
    profiles = profiles_for(
        fleet, site, host, users=scope.users, whole_host=scope.prune.whole_host, errors=errors
    )
    instances: dict[str, DesiredInstance] = {}
    external: list[str] = []
    start_hashes: dict[tuple[str, ...], str] = {}
    placed = placement.cluster_placements(fleet, host, observed, errors)
    for user in scope.users:
        where = placed.get(user)
        instance = _instance(
            fleet, site, host, user, profiles, observed, errors, notes, start_hashes, where
        )
        instances[instance.name] = instance
        external.extend(p for p in instance.profiles if p not in profiles)
    return trusted(
        DesiredHost,
        {
            "host": host,
            "profiles": dict(profiles),
            "instances": instances,
            "external_profiles": tuple(dict.fromkeys(external)),
            "prune": scope.prune,
            "errors": tuple(errors),
            "notes": tuple(notes),
            "paused": host in fleet.hosts and fleet.hosts[host].paused,
            "paused_users": shared.paused_users,
            "container_names": shared.container_names,
            "layer": layer_spec(
                fleet, site, host, scope.users, profiles=_used_profiles(instances, profiles)
            ),
        },
    )


def _used_profiles(
    instances: Mapping[str, DesiredInstance], profiles: Mapping[str, DesiredProfile]
) -> list[str]:
    """The profiles of the host: declared ones, then those its containers use besides."""
    used = dict.fromkeys(profiles)
    used.update((name, None) for i in instances.values() for name in i.profiles)
    return list(used)


# --- one container --------------------------------------------------------------------------------


def _instance(
    fleet: models.Fleet,
    site: sites.Site,
    host: str,
    user: str,
    profiles: Mapping[str, DesiredProfile],
    observed: state.HostSnapshot | None,
    errors: list[PlanError],
    notes: list[str],
    start_hashes: dict[tuple[str, ...], str],
    placed: placement.Placed | None = None,
) -> DesiredInstance:
    """``user``'s container on ``host``. ``start_hashes``: the start hash of each list of
    profile names met on this host so far (``start_hash`` depends on the names alone there).
    ``placed``: its member on a cluster host, whose CPUs and GPUs it is expanded against."""
    spec = fleet.users[user]
    observed = placement.on_member(observed, placed.member if placed else None)
    name = fleet.container_of(user)
    ref = ObjectRef(kind=ObjectKind.INSTANCE, name=name)
    cuda = tuple(cuda_profile_name(v) for v in spec.cuda)
    names = tuple(dict.fromkeys(fleet.defaults.profiles + cuda + spec.profiles))
    config = {
        "raw.idmap": raw_idmap(spec.uid, spec.gid, fleet.defaults.container_uid),
        "security.protection.delete": "true",
        state.TAG_MANAGED: "true",
        state.TAG_USER: user,
        state.TAG_ROLE: ROLE_CONTAINER,
        rules.TAG_START_HASH: start_hash_once(names, profiles, start_hashes),
    }
    cpu = _limits_cpu(fleet.cpu_of(user), observed, host, ref, errors, notes)
    if cpu is not None:
        config["limits.cpu"] = cpu
    devices = {HOME_DEVICE: _home_device(fleet.defaults, site, user)}
    if isinstance(spec.gpus, tuple):
        inherited = _inherited_devices(names, profiles, observed)
        devices.update(gpu_devices(spec.gpus, inherited))
        _check_gpus(spec.gpus, observed, host, ref, site, errors)
    config, devices = rules.without_gpu(config, devices, attach_gpus=site.attach_gpus)
    body = {"profiles": list(names), "config": config, "devices": devices}
    config[state.TAG_SPEC_HASH] = spec_hash(body)
    # Not part of the spec hash: written by the create only (``rules.CREATE_ONLY_KEYS``).
    config[state.TAG_CREATED_AS] = created_as(host, name)
    return trusted(
        DesiredInstance,
        {
            "host": host,
            "name": name,
            "user": user,
            "template": spec.template,
            "alias": _alias(fleet, spec.template),
            "profiles": names,
            "config": dict(sorted(config.items())),
            "devices": sorted_devices(devices),
            "state": PowerState(fleet.state_of(user)),
            "paused": spec.paused,
            "member": placed.member if placed else None,
            "placement": placed.why if placed else "",
            "container_user": fleet.defaults.container_user,
            "vnc": spec.template in fleet.templates and fleet.templates[spec.template].vnc,
        },
    )


def created_as(host: str, name: str) -> str:
    """The value of ``user.lxdgpu.created-as`` for container ``name`` created on ``host``."""
    return f"{host}/{name}"


def raw_idmap(uid: int, gid: int, container_id: int) -> str:
    """``raw.idmap`` mapping host ``uid``/``gid`` onto ``container_id`` (as ``lxc config set``)."""
    return f"uid {uid} {container_id}\ngid {gid} {container_id}"


def _home_device(defaults: models.Defaults, site: sites.Site, user: str) -> dict[str, str]:
    return {
        "type": "disk",
        "source": site.home_dir(home_source(defaults, user)),
        "path": home_path(defaults, user),
    }


def home_path(defaults: models.Defaults, user: str) -> str:
    """Where ``user``'s home is mounted in the container: ``defaults.home_path`` with
    ``{container_user}`` and ``{user}`` filled in."""
    return defaults.home_path.replace("{container_user}", defaults.container_user).replace(
        "{user}", user
    )


def _alias(fleet: models.Fleet, template: str) -> str:
    found = fleet.templates.get(template)
    return found.alias if found is not None else template


def resolve_cpu(limit: int | str, cpus: int) -> str | None:
    """``limits.cpu`` for a fleet CPU limit on a host with ``cpus`` CPUs (0: not known).

    A count is used as given, capped at ``cpus`` when known. A share ``"P%"`` is
    ``floor(cpus * P / 100)``, at least 1; ``None`` when ``cpus`` is not known.
    """
    if isinstance(limit, int):
        return str(min(limit, cpus) if cpus > 0 else limit)
    if cpus <= 0:
        return None
    percent = int(limit.rstrip("%"))
    return str(max(1, cpus * percent // 100))


def _limits_cpu(
    limit: int | str,
    observed: state.HostSnapshot | None,
    host: str,
    ref: ObjectRef,
    errors: list[PlanError],
    notes: list[str],
) -> str | None:
    cpus = observed.cpus if observed is not None else 0
    value = resolve_cpu(limit, cpus)
    if value is None and observed is not None:
        errors.append(
            PlanError(
                code=ErrorCode.CPU_COUNT_UNKNOWN,
                host=host,
                object=ref,
                message=f"limits.cpu is {limit} of the host's CPUs, but {host} reported no CPU "
                "count",
                fixes=(
                    f"check `lxc info --resources` on {host}",
                    "or give the user a CPU count (cpu: 16) instead of a share",
                ),
            )
        )
    if isinstance(limit, int) and value is not None and value != str(limit):
        notes.append(
            f"{host}: {ref.name} asks for {limit} CPUs; the host has {cpus}: limits.cpu is {value}"
        )
    return value


def _inherited_devices(
    names: Iterable[str],
    profiles: Mapping[str, DesiredProfile],
    observed: state.HostSnapshot | None,
) -> dict[str, dict[str, str]]:
    """The devices a container gets from its profiles, later profiles winning (as in LXD)."""
    devices: dict[str, dict[str, str]] = {}
    for name in names:
        if name in profiles:
            devices.update(profiles[name].devices)
        elif observed is not None and name in observed.profiles:
            devices.update(observed.profiles[name].devices)
    return devices


def gpu_devices(
    ids: Iterable[int], inherited: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """Local devices that give a container exactly the GPUs ``ids``.

    Every inherited ``gpu`` device is overridden with ``type: none`` (LXD's inheritance blocker),
    then ``gpuN`` selects GPU ``N`` by its DRM id. An inherited device that is itself named
    ``gpuN`` is replaced by the local ``gpuN``.
    """
    own = {GPU_DEVICE.format(id=i): {"type": "gpu", "id": str(i)} for i in ids}
    blocked = {
        name: {"type": "none"}
        for name, dev in inherited.items()
        if dev.get("type") == "gpu" and name not in own
    }
    return {**blocked, **own}


def _check_gpus(
    ids: Iterable[int],
    observed: state.HostSnapshot | None,
    host: str,
    ref: ObjectRef,
    site: sites.Site,
    errors: list[PlanError],
) -> None:
    if observed is None or not site.attach_gpus:
        return
    present = sorted(gpu.id for gpu in observed.gpus)
    for gpu in ids:
        if gpu not in present:
            errors.append(
                PlanError(
                    code=ErrorCode.GPU_NOT_ON_HOST,
                    host=host,
                    object=ref,
                    message=f"GPU {gpu} is not on {host} (its GPU ids: "
                    f"{', '.join(map(str, present)) or 'none'})",
                    fixes=(
                        f"check `lxc info --resources` on {host}: ids are DRM card ids, which "
                        "start at 1 on a machine with an onboard GPU",
                        "then correct the user's gpus: list",
                    ),
                )
            )
