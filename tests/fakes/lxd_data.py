"""Pure helpers of the in-memory LXD (``tests.fakes.lxd``): snapshot objects as LXD's JSON, the
config LXD computes or adds itself, ``raw.idmap`` parsing, ETags and listing filters. No I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Set
from typing import Any

from lxdgpu_reconcile import state

Json = dict[str, Any]

#: Keys LXD writes into a container's local config when it creates it from an image (besides
#: ``volatile.base_image`` and an ``image.KEY`` for each property of the image).
LXD_ADDED = {
    "volatile.apply_template": "create",  # until the first start
    "volatile.idmap.base": "0",
    "volatile.idmap.next": "[]",
    "volatile.last_state.idmap": "[]",
    "volatile.uuid": "5e1f0000-0000-4000-8000-000000000000",
}
#: Keys of an image's properties LXD copies as ``image.KEY`` when an image has none of its own.
DEFAULT_IMAGE_KEYS = {"image.os": "Ubuntu", "image.release": "bionic"}
#: The volatile idmap keys LXD refuses to let a ``PUT`` drop.
PROTECTED_IDMAP_KEYS = (
    "volatile.idmap.base",
    "volatile.idmap.current",
    "volatile.idmap.next",
    "volatile.last_state.idmap",
)
#: Directories every container has.
STANDARD_DIRS = frozenset(
    {"/", "/etc", "/opt", "/usr", "/usr/local", "/root", "/home", "/var", "/tmp", "/srv"}
)


def etag(data: Mapping[str, Any], fields: Iterable[str]) -> str:
    """An ETag over the writable ``fields`` of an object, as LXD computes one."""
    body = {key: data.get(key) for key in fields}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def instance_json(obs: state.InstanceObs) -> Json:
    """An observed instance as the fake stores it (its local, writable part and its status)."""
    network: dict[str, Json] = {}
    for address in obs.addresses:
        entry = network.setdefault(address.interface, {"addresses": []})
        entry["addresses"].append(
            {
                "family": address.family,
                "address": address.address,
                "netmask": address.netmask,
                "scope": address.scope,
            }
        )
    return {
        "name": obs.name,
        "type": obs.type,
        "status": obs.status,
        "description": obs.description,
        "profiles": list(obs.profiles),
        "config": dict(obs.config),
        "devices": {name: dict(dev) for name, dev in obs.devices.items()},
        "created_at": obs.created_at,
        "architecture": "x86_64",
        "ephemeral": False,
        "stateful": False,
        "network": network,
        "location": obs.location or "none",
    }


def profile_json(obs: state.ProfileObs) -> Json:
    return {
        "name": obs.name,
        "description": obs.description,
        "config": dict(obs.config),
        "devices": {name: dict(dev) for name, dev in obs.devices.items()},
    }


def image_json(obs: state.ImageObs) -> Json:
    return {
        "fingerprint": obs.fingerprint,
        "properties": dict(obs.properties),
        "public": obs.public,
        "size": obs.size,
        "created_at": obs.created_at,
        "architecture": obs.architecture,
    }


def resources_json(snap: state.HostSnapshot) -> Json:
    cards = [
        {
            "drm": {"id": gpu.id},
            "vendor": gpu.vendor,
            "product": gpu.product,
            "driver": gpu.driver,
            "pci_address": gpu.pci_address,
            "nvidia": {"uuid": gpu.nvidia_uuid} if gpu.nvidia_uuid else {},
        }
        for gpu in snap.gpus
    ]
    return {"cpu": {"total": snap.cpus}, "gpu": {"cards": cards}}


def expand(instance: Mapping[str, Any], profiles: Mapping[str, Json]) -> tuple[Json, Json]:
    """``expanded_config`` and ``expanded_devices``: the profiles in order, then the instance."""
    config: Json = {}
    devices: Json = {}
    for name in instance.get("profiles") or ():
        if name in profiles:
            config.update(profiles[name]["config"])
            devices.update(profiles[name]["devices"])
    config.update(instance["config"])
    devices.update(instance["devices"])
    return config, devices


def added_on_create(base_fingerprint: str, image_properties: Mapping[str, str]) -> dict[str, str]:
    """What LXD writes into a new container's config on its own."""
    image_keys = {f"image.{key}": value for key, value in image_properties.items()}
    return {
        "volatile.base_image": base_fingerprint,
        **LXD_ADDED,
        **(image_keys or DEFAULT_IMAGE_KEYS),
    }


def idmap_host_ids(raw: str) -> tuple[set[int], set[int]]:
    """The host uids and gids a ``raw.idmap`` value maps (``uid``/``gid``/``both`` lines, single
    ids or ``FIRST-LAST`` ranges)."""
    uids: set[int] = set()
    gids: set[int] = set()
    for line in raw.splitlines():
        words = line.split()
        if len(words) != 3:
            continue
        kind, host, _ = words
        first, _, last = host.partition("-")
        ids = set(range(int(first), int(last or first) + 1))
        if kind in ("uid", "both"):
            uids |= ids
        if kind in ("gid", "both"):
            gids |= ids
    return uids, gids


def matches(data: Mapping[str, Any], expression: str | None) -> bool:
    """Whether ``data`` passes an LXD listing filter of the form ``config.KEY eq VALUE``."""
    if not expression:
        return True
    field, operator, value = expression.split(" ", 2)
    if operator != "eq" or not field.startswith("config."):
        raise ValueError(f"the fake LXD does not understand the filter {expression!r}")
    return bool((data.get("config") or {}).get(field.removeprefix("config.")) == value)


def digest(*parts: object) -> str:
    """A 64-hex-digit fingerprint of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def undeletable(instance: Mapping[str, Any], profiles: Mapping[str, Json]) -> str:
    """Why LXD refuses to delete ``instance``, or ""."""
    if instance["status"] != "Stopped":
        return "Instance is running"
    expanded, _ = expand(instance, profiles)
    if expanded.get("security.protection.delete") == "true":
        return "Instance is protected"
    return ""


def drops_idmap_keys(current: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Whether the ``PUT`` ``body`` drops a volatile idmap key ``current`` has."""
    config = body.get("config") or {}
    return any(current["config"].get(k) and not config.get(k) for k in PROTECTED_IDMAP_KEYS)


def delegated(ids: Iterable[int], allowed: Set[int] | None) -> bool:
    """Whether every one of the host ``ids`` is delegated to root (``allowed`` None: any)."""
    return allowed is None or set(ids) <= allowed
