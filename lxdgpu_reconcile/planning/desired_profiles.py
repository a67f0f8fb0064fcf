"""Desired profiles of one host, and the hashes tagged on desired objects. Pure: no I/O.

``profiles_for`` returns the profiles a host must have for the users in scope, as LXD must store
them: the profiles declared in the fleet that those users use (and, for a whole host, those that
list the host under ``hosts``), and one profile per CUDA version they list, ``cuda-VERSION``,
with one read-only disk device of the same name that mounts the host tree at the same path.
Host-side disk sources go through ``site.host_path``; on a site without GPUs, GPU devices and
``nvidia.*`` keys are left out. Every profile is tagged ``user.lxdgpu.managed`` and with its role.

``spec_hash`` (``user.lxdgpu.spec-hash`` on every desired container and profile) and
``start_hash`` (a container's ``rules.TAG_START_HASH``: what of its managed profiles LXD applies
only at start) are SHA-256 of canonical JSON; their values are stored on the hosts, so the
serialisation must not change. ``planning.desired`` expands the containers and re-exports the
names here that other modules use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from pydantic import Field

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet import models
from lxdgpu_reconcile.fleet.host_needs import disk_source, profiles_on
from lxdgpu_reconcile.planning import rules
from lxdgpu_reconcile.planning.common import ErrorCode, Frozen, ObjectKind, ObjectRef, PlanError

#: Name of the profile (and of its one disk device) of a CUDA version.
CUDA_PROFILE = "cuda-{version}"
#: Role tag values (``user.lxdgpu.role``) of profiles.
ROLE_PROFILE = "profile"
ROLE_CUDA = "cuda"


class DesiredProfile(Frozen):
    """A profile as LXD must store it on ``host``."""

    host: str
    name: str
    role: str
    description: str = ""
    config: dict[str, str] = Field(default_factory=dict)
    devices: dict[str, dict[str, str]] = Field(default_factory=dict)


def profiles_for(
    fleet: models.Fleet,
    site: sites.Site,
    host: str,
    *,
    users: Iterable[str],
    whole_host: bool,
    errors: list[PlanError],
) -> dict[str, DesiredProfile]:
    """The profiles ``host`` must have for ``users``, by name (declared ones sorted, then CUDA).

    ``whole_host``: also the declared profiles that list ``host`` under ``hosts``. A CUDA version
    that is not declared, or whose profile name a declared profile has, adds to ``errors``.
    """
    users = tuple(users)
    versions = [version for user in users for version in fleet.users[user].cuda]
    profiles: dict[str, DesiredProfile] = {}
    for name in profiles_on(fleet, host, users, whole_host=whole_host):
        if name in fleet.profiles:
            profiles[name] = _fleet_profile(fleet.profiles[name], site, host, name)
    for version in sorted(set(versions)):
        cuda = _cuda_profile(fleet, site, host, version, errors)
        if cuda is None:
            continue
        if cuda.name in profiles:
            errors.append(_name_taken(host, cuda.name, version))
            continue
        profiles[cuda.name] = cuda
    return profiles


def _fleet_profile(
    profile: models.Profile, site: sites.Site, host: str, name: str
) -> DesiredProfile:
    devices = {dev_name: _host_side(dev, site) for dev_name, dev in profile.devices.items()}
    config, devices = rules.without_gpu(profile.config, devices, attach_gpus=site.attach_gpus)
    return _tagged_profile(
        host=host,
        name=name,
        role=ROLE_PROFILE,
        description=profile.description,
        config=config,
        devices=devices,
    )


def _cuda_profile(
    fleet: models.Fleet, site: sites.Site, host: str, version: str, errors: list[PlanError]
) -> DesiredProfile | None:
    name = cuda_profile_name(version)
    tree = fleet.cuda.get(version)
    if tree is None:
        errors.append(
            PlanError(
                code=ErrorCode.UNKNOWN_CUDA,
                host=host,
                object=ObjectRef(kind=ObjectKind.PROFILE, name=name),
                message=f"CUDA {version} is listed by a user on {host} but not declared under "
                "cuda:",
                fixes=(f'declare it: cuda: {{"{version}": /usr/local/cuda-{version}}}',),
            )
        )
        return None
    device = {"type": "disk", "source": site.host_path(tree), "path": tree, "readonly": "true"}
    return _tagged_profile(
        host=host,
        name=name,
        role=ROLE_CUDA,
        description=f"CUDA {version} from the host, read-only at {tree}",
        config={},
        devices={name: device},
    )


def cuda_profile_name(version: str) -> str:
    """The profile (and device) name of CUDA ``version``: ``cuda-10.0``."""
    return CUDA_PROFILE.format(version=version)


def _tagged_profile(
    *,
    host: str,
    name: str,
    role: str,
    description: str,
    config: Mapping[str, str],
    devices: Mapping[str, Mapping[str, str]],
) -> DesiredProfile:
    tags = {state.TAG_MANAGED: "true", state.TAG_ROLE: role}
    full = {**dict(config), **tags}
    body = {"description": description, "config": full, "devices": devices}
    full[state.TAG_SPEC_HASH] = spec_hash(body)
    return DesiredProfile(
        host=host,
        name=name,
        role=role,
        description=description,
        config=dict(sorted(full.items())),
        devices=sorted_devices(devices),
    )


def _name_taken(host: str, name: str, version: str) -> PlanError:
    return PlanError(
        code=ErrorCode.PROFILE_NAME_TAKEN,
        host=host,
        object=ObjectRef(kind=ObjectKind.PROFILE, name=name),
        message=f"the fleet declares a profile {name!r}, which is the name of the profile of "
        f"CUDA {version}",
        fixes=(f"rename the declared profile {name!r}",),
    )


def _host_side(device: Mapping[str, str], site: sites.Site) -> dict[str, str]:
    """A profile device with its host-side ``source`` moved onto ``site``."""
    dev = dict(device)
    source = disk_source(dev)
    if source is not None:
        dev["source"] = site.host_path(source)
    return dev


# --- hashes ---------------------------------------------------------------------------------------


def spec_hash(body: Mapping[str, object]) -> str:
    """``sha256:`` + the SHA-256 of ``body`` as canonical JSON, ignoring any spec-hash tag and
    the identity tag ``user.lxdgpu.created-as`` (not part of the spec)."""
    config = body.get("config")
    if isinstance(config, Mapping):
        left_out = (state.TAG_SPEC_HASH, state.TAG_CREATED_AS)
        body = {**body, "config": {k: v for k, v in config.items() if k not in left_out}}
    return "sha256:" + _sha256(body)


def start_hash(names: Iterable[str], profiles: Mapping[str, DesiredProfile]) -> str:
    """Hash of what LXD applies only at start in the managed profiles ``names`` (in order)."""
    content = []
    for name in names:
        profile = profiles.get(name)
        if profile is None:
            continue
        config = {
            key: value
            for key, value in profile.config.items()
            if rules.config_key_timing(key) is rules.Timing.AT_START
        }
        devices = {
            dev_name: dev
            for dev_name, dev in profile.devices.items()
            if rules.device_timing(dev) is rules.Timing.AT_START
        }
        if config or devices:
            content.append([name, config, devices])
    return "sha256:" + _sha256(content)


def start_hash_once(
    names: tuple[str, ...],
    profiles: Mapping[str, DesiredProfile],
    known: dict[tuple[str, ...], str],
) -> str:
    """``start_hash(names, profiles)``, computed once per list of names: ``known`` holds those
    computed for ``profiles`` (one host's) so far."""
    found = known.get(names)
    if found is None:
        found = known[names] = start_hash(names, profiles)
    return found


def _sha256(data: object) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def sorted_devices(devices: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """``devices`` with the device names, and the keys of each device, in sorted order."""
    return {name: dict(sorted(dev.items())) for name, dev in sorted(devices.items())}
