"""The JSON of the LXD requests that perform a plan's actions, from their bodies. Pure.

The plan (``planning.model``) says what an object must become; this module says how LXD's REST
API is asked for it: ``POST /1.0/instances``, ``POST /1.0/profiles`` and the ``PUT`` of an
update, which replaces the whole object and so carries over what the plan leaves alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxdgpu_reconcile.planning import model


def create_instance_request(body: model.CreateInstanceBody) -> dict[str, Any]:
    """The JSON of ``POST /1.0/instances``: the container is created stopped, from the alias."""
    return {
        "name": body.name,
        "type": "container",
        "source": {"type": "image", "alias": body.alias},
        "profiles": list(body.profiles),
        "config": dict(body.config),
        "devices": {name: dict(dev) for name, dev in body.devices.items()},
    }


def create_profile_request(body: model.ProfileBody) -> dict[str, Any]:
    """The JSON of ``POST /1.0/profiles``."""
    return {
        "name": body.name,
        "description": body.description,
        "config": dict(body.config),
        "devices": {name: dict(dev) for name, dev in body.devices.items()},
    }


_INSTANCE_PUT_FIELDS = ("architecture", "description", "ephemeral", "stateful")


def put_request(
    body: model.InstanceBody | model.ProfileBody, current: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON of the ``PUT`` that performs an update, from the object as just read.

    ``current`` is the ``metadata`` of ``GET /1.0/instances/NAME`` or ``/1.0/profiles/NAME``.
    Config keys and devices that ``body.preserve`` covers are taken from ``current``; everything
    else comes from ``body``. For an instance, the other writable fields (architecture,
    description, ephemeral, stateful) are sent back as they are.
    """
    keep = body.preserve
    config = {k: v for k, v in (current.get("config") or {}).items() if keep.keeps_key(k)}
    devices = {n: d for n, d in (current.get("devices") or {}).items() if keep.keeps_device(d)}
    config.update(body.config)
    devices.update({name: dict(dev) for name, dev in body.devices.items()})
    if isinstance(body, model.ProfileBody):
        return {"description": body.description, "config": config, "devices": devices}
    request = {key: current[key] for key in _INSTANCE_PUT_FIELDS if key in current}
    request.update({"profiles": list(body.profiles), "config": config, "devices": devices})
    return request
