"""Field-by-field comparison of a desired and an observed LXD object. Pure: no I/O.

Both sides are first reduced to their ``Essence``: the part this tool owns and compares. For an
instance that is its local ``config`` and ``devices`` and its ordered ``profiles`` (never the
``expanded_*`` views: a key that comes from a profile changes with the profile); for a profile,
its ``description``, ``config`` and ``devices``. Keys and devices covered by ``rules.Preserve``
(``volatile.*``, ``image.*``, and in the lab GPU devices and ``nvidia.*``) are dropped from both
sides. LXD stores every value as a string, and so do the fleet models, so values compare as
strings.

``diff`` returns ordered ``FieldChange``s; ``apply_changes`` is its inverse, which is what makes
"plan again after apply shows nothing" checkable: ``diff(d, apply_changes(o, diff(d, o)))`` is
empty for every ``d`` and ``o``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from pydantic import Field

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import rules
from lxdgpu_reconcile.planning.bulk import trusted
from lxdgpu_reconcile.planning.common import Frozen

#: A compared value: a config value or device key (str), a profile list, or a whole device.
Value = str | tuple[str, ...] | dict[str, str]
Devices = dict[str, dict[str, str]]
_V = TypeVar("_V")


class FieldChange(Frozen):
    """One field that differs. ``old`` is None for an addition, ``new`` is None for a removal.

    ``path`` names the field: ``("config", "limits.cpu")``, ``("devices", "home", "source")``, a
    whole device ``("devices", "gpu0")``, ``("profiles",)``, ``("description",)`` or, on start
    and stop actions, ``("state",)``. ``timing`` says when a running container sees the change.
    """

    path: tuple[str, ...]
    old: Value | None = None
    new: Value | None = None
    timing: rules.Timing = rules.Timing.LIVE

    @property
    def dotted(self) -> str:
        """The path as text, e.g. ``config.limits.cpu``."""
        return ".".join(self.path)

    @property
    def at_start(self) -> bool:
        return self.timing is rules.Timing.AT_START


class Essence(Frozen):
    """The compared part of an LXD object. ``None`` fields are not managed for that kind."""

    description: str | None = None
    profiles: tuple[str, ...] | None = None
    config: dict[str, str] = Field(default_factory=dict)
    devices: Devices = Field(default_factory=dict)


EMPTY = Essence()


def essence(
    *,
    config: Mapping[str, str],
    devices: Mapping[str, Mapping[str, str]],
    preserve: rules.Preserve,
    profiles: Iterable[str] | None = None,
    description: str | None = None,
) -> Essence:
    """The essence of an object with these fields, minus what ``preserve`` leaves alone."""
    kept = preserve.config_prefixes  # ``preserve.keeps_key``, once per key of every object
    return trusted(
        Essence,
        {
            "description": description,
            "profiles": None if profiles is None else tuple(profiles),
            "config": {k: str(v) for k, v in sorted(config.items()) if not k.startswith(kept)},
            "devices": {
                name: {k: str(v) for k, v in sorted(dev.items())}
                for name, dev in sorted(devices.items())
                if not preserve.keeps_device(dev)
            },
        },
    )


def instance_essence(obs: state.InstanceObs, preserve: rules.Preserve) -> Essence:
    """What is compared of an observed instance: local config and devices, profiles."""
    return essence(config=obs.config, devices=obs.devices, profiles=obs.profiles, preserve=preserve)


def profile_essence(obs: state.ProfileObs, preserve: rules.Preserve) -> Essence:
    """What is compared of an observed profile: description, config and devices."""
    return essence(
        config=obs.config, devices=obs.devices, description=obs.description, preserve=preserve
    )


def diff(desired: Essence, observed: Essence) -> tuple[FieldChange, ...]:
    """The changes that turn ``observed`` into ``desired``, in a stable order.

    Order: description, profiles, config keys (sorted), devices (by name, then key). A device
    whose ``type`` changes is replaced whole; otherwise it changes key by key.
    """
    return tuple(_diff(desired, observed))


def _diff(desired: Essence, observed: Essence) -> Iterator[FieldChange]:
    # LXD stores no description as "": absent and empty are the same.
    if desired.description is not None and desired.description != (observed.description or ""):
        yield FieldChange(
            path=("description",),
            old=observed.description,
            new=desired.description,
            timing=rules.Timing.STORED,
        )
    if desired.profiles is not None and desired.profiles != observed.profiles:
        # What a profile brings is timed by the container's start hash (rules.TAG_START_HASH).
        yield FieldChange(path=("profiles",), old=observed.profiles, new=desired.profiles)
    yield from _config_changes(desired.config, observed.config)
    yield from _device_changes(desired.devices, observed.devices)


def _config_changes(want: Mapping[str, str], have: Mapping[str, str]) -> Iterator[FieldChange]:
    for key in sorted(want.keys() | have.keys()):
        old, new = have.get(key), want.get(key)
        if old != new:
            timing = rules.config_change_timing(key, old, new)
            yield trusted(
                FieldChange, {"path": ("config", key), "old": old, "new": new, "timing": timing}
            )


def _device_changes(want: Devices, have: Devices) -> Iterator[FieldChange]:
    for name in sorted(want.keys() | have.keys()):
        old, new = have.get(name), want.get(name)
        if old == new:
            continue
        timing = rules.device_change_timing(old, new)
        if old is None or new is None or old.get("type") != new.get("type"):
            yield trusted(
                FieldChange,
                {
                    "path": ("devices", name),
                    "old": None if old is None else dict(old),
                    "new": None if new is None else dict(new),
                    "timing": timing,
                },
            )
            continue
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key):
                path = ("devices", name, key)
                fields = {"path": path, "old": old.get(key), "new": new.get(key), "timing": timing}
                yield trusted(FieldChange, fields)


def apply_changes(base: Essence, changes: Iterable[FieldChange]) -> Essence:
    """``base`` with ``changes`` made: what the object is after a write of them."""
    description, profiles = base.description, base.profiles
    config = dict(base.config)
    devices = {name: dict(dev) for name, dev in base.devices.items()}
    for change in changes:
        head, *rest = change.path
        new = change.new
        if head == "description":
            description = new if isinstance(new, str) else None
        elif head == "profiles":
            profiles = new if isinstance(new, tuple) else None
        elif head == "config":
            _put(config, rest[0], new if isinstance(new, str) else None)
        elif head == "devices" and len(rest) == 1:
            _put(devices, rest[0], dict(new) if isinstance(new, dict) else None)
        elif head == "devices":
            _put(devices.setdefault(rest[0], {}), rest[1], new if isinstance(new, str) else None)
    return Essence(
        description=description,
        profiles=profiles,
        config=dict(sorted(config.items())),
        devices={name: dict(sorted(dev.items())) for name, dev in sorted(devices.items())},
    )


def _put(mapping: dict[str, _V], key: str, value: _V | None) -> None:
    if value is None:
        mapping.pop(key, None)
    else:
        mapping[key] = value
