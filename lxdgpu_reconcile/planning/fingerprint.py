"""Fingerprints of observed objects: what a plan saw, to detect a stale plan. Pure.

A fingerprint is ``sha256:`` + the SHA-256 of an object's compared part (``diff.Essence``): a
container's local config, devices and profiles, a profile's description, config and devices,
minus what ``preserve`` leaves alone. The power state is not part of it, so the stop that
precedes an update or a delete in the same plan does not make the plan stale, and neither do the
``volatile.*`` keys LXD rewrites on every start and stop.

The planner records the fingerprint of every object it updates or deletes (``Action.observed``);
the executor reads the object again just before writing and compares. Both sides must use the
same ``preserve``: the action body's, or the default (``rules.Preserve()``) for actions without
a body (deletes).
"""

from __future__ import annotations

import hashlib

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import diff, rules


def instance(obs: state.InstanceObs, preserve: rules.Preserve | None) -> str:
    """The fingerprint of an observed container."""
    return of_essence(diff.instance_essence(obs, preserve or rules.Preserve()))


def profile(obs: state.ProfileObs, preserve: rules.Preserve | None) -> str:
    """The fingerprint of an observed profile."""
    return of_essence(diff.profile_essence(obs, preserve or rules.Preserve()))


def of_essence(essence: diff.Essence) -> str:
    """The fingerprint of an object whose compared part is ``essence``."""
    text = essence.model_dump_json()
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
