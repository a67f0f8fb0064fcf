"""The safety rules of LXD config and devices: what gives a container power over the host. Pure.

One set of rules for two callers. ``validate`` (``fleet.checks``) applies them to the fleet file's
profiles and host paths, and reports each with its line. The executor (``execute.invariants``)
applies them to the config and devices of every body it writes, whatever the plan says, so that a
plan file edited by hand cannot write what ``validate`` refuses.

Each rule yields an ``Unsafe``: the path of the key below the config or devices it concerns, the
message, and whether it is an error (refused) or a warning (reported only).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

#: Keys that give a container power over the host (docs/fleet-file.md lists why, key by key);
#: a profile may set them only with ``allow_unsafe: true``.
UNSAFE_CONFIG_KEYS = (
    "security.privileged",
    "raw.lxc",
    "raw.apparmor",
    "raw.seccomp",
    "raw.idmap",
    "raw.qemu",
    "raw.qemu.conf",
    "security.idmap.base",
    "security.idmap.size",
    "security.syscalls.allow",
    "security.syscalls.deny_default",
    "security.syscalls.intercept.bpf",
    "security.syscalls.intercept.bpf.devices",
    "security.syscalls.intercept.mount",
    "security.syscalls.intercept.mount.allowed",
    "security.syscalls.intercept.mount.fuse",
    "security.syscalls.intercept.mount.shift",
    "linux.kernel_modules",
    "linux.kernel_modules.load",
    "boot.host_shutdown_timeout",
)
#: Key prefixes with the same power: every ``raw.*`` key hands text to LXC, AppArmor, seccomp
#: or QEMU unchecked.
UNSAFE_CONFIG_PREFIXES = ("raw.",)
#: Device types that hand the container something of the host's own: its sockets and ports
#: (proxy), device nodes (unix-char, unix-block, unix-hotplug), USB and PCI devices, and
#: InfiniBand adapters.
UNSAFE_DEVICE_TYPES = (
    "proxy",
    "unix-char",
    "unix-block",
    "unix-hotplug",
    "usb",
    "pci",
    "infiniband",
)
#: Device options with the same power, as ``(type, option, values)``; an empty ``values``
#: means any value. A nic of nictype physical takes the host's own interface; a shifted disk
#: lets container root write host files as host root; shared propagation lets mounts made in
#: the container appear on the host; raw mount options are passed to the host's mount().
UNSAFE_DEVICE_OPTIONS = (
    ("nic", "nictype", ("physical",)),
    ("disk", "shift", ("true", "1", "yes", "on")),
    ("disk", "propagation", ("shared", "rshared")),
    ("disk", "raw.mount.options", ()),
)

#: Host paths that must never be mounted into a container, whole or below.
FORBIDDEN_TREES = (
    "/etc",
    "/root",
    "/boot",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/run",
    "/var/lib/lxd",
    "/var/snap/lxd",
    "/var/lib/incus",
    "/var/lib/lxcfs",
    "/snap/lxd",
)
#: Host paths that must not be mounted whole (a tree below them is fine, e.g. /usr/local/MATLAB).
FORBIDDEN_EXACT = (
    "/",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
    "/var",
    "/var/lib",
    "/var/log",
    "/home",
    "/opt",
    "/srv",
    "/mnt",
    "/media",
    "/tmp",
    "/var/tmp",
)


@dataclass(frozen=True)
class Unsafe:
    """One broken rule: ``path`` below the config (``("config", KEY)``) or devices
    (``("devices", NAME, ...)``), what is wrong, and whether it is refused (``error``)."""

    path: tuple[str, ...]
    message: str
    severity: str = "error"
    at_key: bool = False


def config_rules(config: Mapping[str, str], *, allow_unsafe: bool) -> Iterator[Unsafe]:
    """The keys of ``config`` that give a container a way onto the host: errors unless
    ``allow_unsafe``; with it, a privileged container is still a warning."""
    if not allow_unsafe:
        for key in sorted(config):
            if key in UNSAFE_CONFIG_KEYS or key.startswith(UNSAFE_CONFIG_PREFIXES):
                yield Unsafe(
                    ("config", key),
                    f"{key} gives a container a way onto the host; if this profile really "
                    "needs it, set 'allow_unsafe: true' on the profile",
                    at_key=True,
                )
    elif config.get("security.privileged", "false").lower() == "true":
        yield Unsafe(
            ("config", "security.privileged"),
            "privileged containers share root with the host: users would be root on the server",
            severity="warning",
        )


def device_rules(devices: Mapping[str, Mapping[str, str]]) -> Iterator[Unsafe]:
    """Devices without a type, and disks whose host ``source`` is not a safe host path."""
    for device, spec in devices.items():
        if "type" not in spec:
            yield Unsafe(
                ("devices", device),
                "a device needs a 'type' (disk, nic, gpu, ...)",
                at_key=True,
            )
        if spec.get("type") == "disk" and "source" in spec and "pool" not in spec:
            for message in host_path_rules(spec["source"]):
                yield Unsafe(("devices", device, "source"), message)


def unsafe_device_rules(
    devices: Mapping[str, Mapping[str, str]], *, allow_unsafe: bool
) -> Iterator[Unsafe]:
    """Devices whose type or options give a container power over the host
    (``UNSAFE_DEVICE_TYPES``, ``UNSAFE_DEVICE_OPTIONS``): errors unless ``allow_unsafe``."""
    if allow_unsafe:
        return
    allow = "if this profile really needs it, set 'allow_unsafe: true' on the profile"
    for device, spec in devices.items():
        kind = spec.get("type", "")
        if kind in UNSAFE_DEVICE_TYPES:
            yield Unsafe(
                ("devices", device, "type"),
                f"{kind} devices give a container a way onto the host; {allow}",
            )
        for option_type, option, values in UNSAFE_DEVICE_OPTIONS:
            value = spec.get(option)
            if kind != option_type or value is None:
                continue
            if not values or value.lower() in values:
                yield Unsafe(
                    ("devices", device, option),
                    f"{option}: {value} on a {kind} device gives a container a way onto the "
                    f"host; {allow}",
                )


def host_path_rules(value: str) -> Iterator[str]:
    """Why ``value`` may not be mounted from the host: relative, with ``..``, or exposing the
    host's own system files."""
    if not value.startswith("/"):
        yield f"{value!r} is relative: host paths must be absolute"
        return
    if ".." in value.split("/"):
        yield f"{value!r} contains '..': write the path without it"
        return
    yield from host_path_safety(value)


def host_path_safety(value: str) -> Iterator[str]:
    """Why mounting ``value`` would expose the host's own system files (at most one message)."""
    normal = "/" + "/".join(part for part in value.split("/") if part and part != ".")
    exposed = normal in FORBIDDEN_EXACT or any(
        normal == tree or normal.startswith(tree + "/") for tree in FORBIDDEN_TREES
    )
    if exposed:
        yield (
            f"{value!r} would expose the host's own system files to the container; mount a "
            "dedicated directory instead"
        )


def refused(
    config: Mapping[str, str],
    devices: Mapping[str, Mapping[str, str]],
    *,
    allow_unsafe: bool,
) -> tuple[Unsafe, ...]:
    """Every error (not warning) of ``config`` and ``devices``: what must never be written."""
    found = (
        *config_rules(config, allow_unsafe=allow_unsafe),
        *device_rules(devices),
        *unsafe_device_rules(devices, allow_unsafe=allow_unsafe),
    )
    return tuple(u for u in found if u.severity == "error")
