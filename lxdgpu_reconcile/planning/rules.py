"""When LXD applies a change to a running container, and what the plan leaves alone. Pure.

Timing of configuration keys follows the "Live update" column of LXD's instance configuration
reference (LXD 5.0, ``doc/instances.md`` in canonical/lxd; the same table is "Instance options"
in later releases):

- ``yes`` / ``yes (exec)``: applied to a running container at once (``Timing.LIVE``);
- ``no``: stored at once, applied when the container next starts (``Timing.AT_START``);
- ``n/a``: stored metadata that never needs a restart (``Timing.STORED``), e.g. ``boot.*``
  (read by LXD when it starts or stops instances) and ``user.*``.

Device timing follows the device reference pages (LXD 5.0 ``doc/reference/devices_*.md``):
``disk``, ``unix-char``, ``unix-block``, ``unix-hotplug``, ``usb``, ``proxy`` and ``infiniband``
devices hot-plug into containers; physical ``gpu`` devices hot-plug into containers; NICs
hot-plug except ``ipvlan``. Anything else (``tpm``, ``pci``, MIG GPUs, unknown types) is treated
as applied at start. Measured on LXD 5.0.2 (docs/lxd-facts, section 4): ``limits.cpu`` changes the
cpuset at once; ``raw.idmap`` and ``security.privileged`` are accepted but take effect only at the
next start; disk and bridged NIC devices appear and disappear live.

A key not in the table is treated as applied at start: a needless restart is visible in the plan
and held back without ``--allow-restart``, whereas a change wrongly called live would silently
not take effect.

The second half says which keys and devices the plan neither compares nor writes
(``Preserve``): LXD's own ``volatile.*`` and ``image.*`` keys, the container's identity tag
``user.lxdgpu.created-as`` (written by the create request only), and in the lab (no GPU) every
``gpu`` device and ``nvidia.*`` key.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning.common import Frozen

#: Hash of the start-time content (keys and devices LXD applies only at start) of the managed
#: profiles a container uses. A change of it means a profile change reaches the container only
#: after a restart, so it is planned as the container's restart until that has happened.
TAG_START_HASH = state.TAG_PREFIX + "profile-start-hash"


class Timing(StrEnum):
    """When a running container sees a change."""

    LIVE = "live"
    AT_START = "at-start"
    STORED = "stored"


# --- configuration keys: the "Live update" column ------------------------------------------------

_LIVE_KEYS = frozenset(
    {
        "boot.host_shutdown_timeout",
        "limits.cpu",
        "limits.cpu.allowance",
        "limits.cpu.priority",
        "limits.disk.priority",
        "limits.memory",
        "limits.memory.enforce",
        "limits.memory.swap",
        "limits.memory.swap.priority",
        "limits.network.priority",
        "limits.processes",
        "linux.kernel_modules",
        "raw.apparmor",
        "security.nesting",
        "security.protection.delete",
        "security.protection.shift",
        "security.syscalls.intercept.mount.allowed",
        "security.syscalls.intercept.mount.fuse",
        "security.syscalls.intercept.mount.shift",
    }
)
_LIVE_PREFIXES = ("environment.", "limits.hugepages.", "migration.incremental.memory")
_STORED_KEYS = frozenset(
    {
        "boot.autostart",
        "boot.autostart.delay",
        "boot.autostart.priority",
        "boot.stop.priority",
        "cluster.evacuate",
    }
)
_STORED_PREFIXES = ("user.",)


def config_key_timing(key: str) -> Timing:
    """When a running container sees a change of configuration ``key``.

    Documented "no" (applied at start), among others: ``raw.idmap``, ``raw.lxc``,
    ``raw.seccomp``, ``security.privileged``, ``security.idmap.*``, ``security.devlxd*``,
    ``security.syscalls.*`` (except the three ``intercept.mount`` options), ``nvidia.*``,
    ``linux.sysctl.*``, ``limits.kernel.*``, ``cloud-init.*`` and ``snapshots.*``.
    """
    if key == TAG_START_HASH:
        return Timing.AT_START
    if key in _LIVE_KEYS or key.startswith(_LIVE_PREFIXES):
        return Timing.LIVE
    if key in _STORED_KEYS or key.startswith(_STORED_PREFIXES):
        return Timing.STORED
    return Timing.AT_START


def config_change_timing(key: str, old: str | None, new: str | None) -> Timing:
    """When a running container sees ``key`` go from ``old`` to ``new`` (``None``: unset).

    The start hash is bookkeeping: writing it where it was missing (a container being adopted,
    or created before the tag existed) records the present state and needs no restart.
    """
    if key == TAG_START_HASH and old is None:
        return Timing.STORED
    return config_key_timing(key)


# --- devices: the "supports hotplugging" notes ----------------------------------------------------

_HOTPLUG_TYPES = frozenset(
    {"none", "disk", "unix-char", "unix-block", "unix-hotplug", "usb", "proxy", "infiniband"}
)


def device_timing(device: Mapping[str, str] | None) -> Timing:
    """When a running container sees ``device`` added, removed or changed.

    A changed device is stopped and started again by LXD, which is live for hot-pluggable types.
    The root disk (``path: /``) is the exception: it cannot be swapped under a running container.
    """
    if device is None:
        return Timing.LIVE
    kind = device.get("type", "")
    if kind == "disk" and device.get("path") == "/":
        return Timing.AT_START
    if kind in _HOTPLUG_TYPES:
        return Timing.LIVE
    if kind == "gpu":
        return Timing.LIVE if device.get("gputype", "physical") == "physical" else Timing.AT_START
    if kind == "nic":
        return Timing.AT_START if device.get("nictype") == "ipvlan" else Timing.LIVE
    return Timing.AT_START


def device_change_timing(old: Mapping[str, str] | None, new: Mapping[str, str] | None) -> Timing:
    """When a running container sees a device go from ``old`` to ``new`` (``None``: absent)."""
    if Timing.AT_START in (device_timing(old), device_timing(new)):
        return Timing.AT_START
    return Timing.LIVE


# --- what the plan leaves alone -------------------------------------------------------------------

#: Keys LXD writes into an instance's local config itself.
LXD_OWNED_PREFIXES = ("volatile.", "image.")
#: Keys the tool writes only when it creates a container (its identity, ``TAG_CREATED_AS``).
CREATE_ONLY_KEYS = (state.TAG_CREATED_AS,)
#: What every plan leaves alone in config: LXD's own keys, and what only a create writes.
KEPT_KEYS = LXD_OWNED_PREFIXES + CREATE_ONLY_KEYS
#: Keys that need the NVIDIA container runtime; kept out of the lab, which has no GPU.
GPU_CONFIG_PREFIXES = ("nvidia.",)
GPU_DEVICE_TYPES = ("gpu",)


class Preserve(Frozen):
    """Keys and devices a plan neither compares nor writes.

    The executor carries them over unchanged from the object as it reads it just before writing
    (``plan.put_request`` does this), so a write never removes them and a plan never shows them.
    """

    config_prefixes: tuple[str, ...] = KEPT_KEYS
    device_types: tuple[str, ...] = ()

    def keeps_key(self, key: str) -> bool:
        return key.startswith(self.config_prefixes)

    def keeps_device(self, device: Mapping[str, str]) -> bool:
        return device.get("type", "") in self.device_types


def preserve_for(*, attach_gpus: bool) -> Preserve:
    """What a plan leaves alone on a site that does (or, in the lab, does not) attach GPUs."""
    if attach_gpus:
        return Preserve()
    return Preserve(config_prefixes=KEPT_KEYS + GPU_CONFIG_PREFIXES, device_types=GPU_DEVICE_TYPES)


def without_gpu(
    config: Mapping[str, str],
    devices: Mapping[str, Mapping[str, str]],
    *,
    attach_gpus: bool,
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``config`` and ``devices`` minus what a site without GPUs must not write."""
    if attach_gpus:
        return dict(config), {name: dict(dev) for name, dev in devices.items()}
    keep = preserve_for(attach_gpus=False)
    return (
        {key: value for key, value in config.items() if not key.startswith(GPU_CONFIG_PREFIXES)},
        {name: dict(dev) for name, dev in devices.items() if not keep.keeps_device(dev)},
    )
