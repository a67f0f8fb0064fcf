"""Masking of secret-looking values in a plan, for every rendering of it. Pure: no I/O.

A container's live config may hold a secret set by hand on the host (``environment.HF_TOKEN``).
The fleet file may not (``validate`` refuses secret-looking keys), so such a value only ever
comes from the live state: a field change that removes it, or the whole config an update body
carries. Plan text, JSON, Markdown, the saved plan file, apply output and the reconcile log show
the masked plan that ``mask_plan`` returns, never the value.

A value is secret-looking when its key is: the same rule ``validate`` applies to the fleet file
(``fleet.checks.looks_secret``: ``…TOKEN``, ``…PASSWORD``, ``…SECRET``, ``api-key``, ...), on
the last part of a field change's path (a config key, a device's key) and on the keys of every
config and device in an action's body.

Masked values are fixed markers, so nothing of the value (not even a hash, which could be
guessed back) is shown, while a change still shows: a value that is removed reads
``(sensitive value)``, one that is added reads ``(sensitive value)``, and one that is replaced
reads ``(sensitive value)`` -> ``(sensitive value, changed)``. Masking is deterministic and
idempotent (``mask_plan(mask_plan(p)) == mask_plan(p)``), so two plans can be compared masked:
a saved plan holds the masked plan.
"""

from __future__ import annotations

from collections.abc import Mapping

from lxdgpu_reconcile.fleet.checks import looks_secret
from lxdgpu_reconcile.planning import diff
from lxdgpu_reconcile.planning.model import (
    Action,
    Body,
    CreateInstanceBody,
    HostPlan,
    InstanceBody,
    Plan,
    ProfileBody,
)

#: What a masked value reads: the old side of a change, an added value, a value in a body.
SENSITIVE = "(sensitive value)"
#: What the new side of a masked change reads when an old value is replaced.
SENSITIVE_CHANGED = "(sensitive value, changed)"
#: Both markers: renderers show them as they are, not quoted like a value.
MARKERS = frozenset({SENSITIVE, SENSITIVE_CHANGED})


def mask_plan(plan: Plan) -> Plan:
    """``plan`` with the value of every secret-looking key replaced by a marker."""
    hosts = tuple(_mask_host(host) for host in plan.hosts)
    if hosts == plan.hosts:
        return plan
    return plan.model_copy(update={"hosts": hosts})


def mask_config(config: Mapping[str, str]) -> dict[str, str]:
    """``config`` with the value of every secret-looking key replaced by ``SENSITIVE``."""
    return {key: SENSITIVE if looks_secret(key) else value for key, value in config.items()}


def mask_devices(devices: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """``devices`` with the value of every secret-looking device key replaced."""
    return {name: mask_config(device) for name, device in devices.items()}


def mask_change(change: diff.FieldChange) -> diff.FieldChange:
    """``change`` with its values masked when its key is secret-looking (see the module)."""
    if isinstance(change.old, dict) or isinstance(change.new, dict):  # a whole device
        old_device = change.old if isinstance(change.old, dict) else None
        old = _mask_device(change.old, None)
        new = _mask_device(change.new, old_device)
    elif len(change.path) >= 2 and looks_secret(change.path[-1]):
        old = None if change.old is None else SENSITIVE
        new = None if change.new is None else (SENSITIVE if old is None else SENSITIVE_CHANGED)
    else:
        return change
    if old == change.old and new == change.new:
        return change
    return change.model_copy(update={"old": old, "new": new})


def _mask_device(value: diff.Value | None, before: dict[str, str] | None) -> diff.Value | None:
    """A whole device's keys masked; a key whose value differs from ``before`` reads changed."""
    if not isinstance(value, dict):
        return value
    return {
        key: item
        if not looks_secret(key) or item in MARKERS
        else SENSITIVE_CHANGED
        if before is not None and key in before and before[key] != item
        else SENSITIVE
        for key, item in value.items()
    }


def _mask_host(host: HostPlan) -> HostPlan:
    actions = tuple(_mask_action(action) for action in host.actions)
    if actions == host.actions:
        return host
    return host.model_copy(update={"actions": actions})


def _mask_action(action: Action) -> Action:
    changes = tuple(mask_change(change) for change in action.changes)
    body = _mask_body(action.body)
    if changes == action.changes and body is action.body:
        return action
    return action.model_copy(update={"changes": changes, "body": body})


def _mask_body(body: Body | None) -> Body | None:
    if not isinstance(body, CreateInstanceBody | InstanceBody | ProfileBody):
        return body
    config = mask_config(body.config)
    devices = mask_devices(body.devices)
    if config == body.config and devices == body.devices:
        return body
    return body.model_copy(update={"config": config, "devices": devices})
