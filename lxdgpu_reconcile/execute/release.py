"""Release a container whose create never finished, so that it can be deleted. Does I/O, through
the ``observe.lxdapi.LxdApi`` it is given.

A container the tool created carries ``security.protection.delete``, and one whose create never
finished (``planning.unfinished``: no root filesystem, never started) is deleted and created
again. LXD refuses to delete it while it is protected, so its protection is lifted first; that
write is done only while the live container is still in that state. LXD 5.0 records the new
config but then fails to write the instance's backup file (it has no root filesystem: "Failed to
write backup file"), so the outcome is judged by reading the container again. The stopped
source of a finished move (tagged ``user.lxdgpu.moved-to`` and ``moved-at``) is released the same
way when ``--prune`` deletes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import lxdops
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.planning import unfinished as unfinishing

PROTECTION = "security.protection.delete"
#: The fields of an instance a ``PUT`` replaces.
_PUT_FIELDS = (
    "architecture",
    "config",
    "devices",
    "ephemeral",
    "profiles",
    "stateful",
    "description",
)


def _protected(current: Mapping[str, Any]) -> bool:
    return str((current.get("config") or {}).get(PROTECTION, "false")).lower() == "true"


def _moved_away(current: Mapping[str, Any], config: Mapping[str, str]) -> bool:
    """The stopped source of a finished move (``execute.moves``): the fleet file moved it, so
    the tool lifts the protection it gave it (the delete itself still needs ``--prune``)."""
    return (
        current.get("status") == "Stopped"
        and config.get(state.TAG_MANAGED) == "true"
        and state.TAG_MOVED_TO in config
        and state.TAG_MOVED_AT in config
    )


def release_if_unfinished(
    client: LxdApi, name: str, current: Mapping[str, Any], etag: str, *, timeout: float
) -> None:
    """Lift the delete protection of instance ``name`` (read as ``current`` with ``etag``) when
    its create never finished; anything else is left as it is (LXD then refuses the delete)."""
    config = {str(k): str(v) for k, v in (current.get("config") or {}).items()}
    unfinished = unfinishing.is_unfinished(str(current.get("status", "")), config)
    if not _protected(current) or not (unfinished or _moved_away(current, config)):
        return
    body = {key: current[key] for key in _PUT_FIELDS if key in current}
    body["config"] = {**config, PROTECTION: "false"}
    try:
        lxdops.put(client, "instances", name, body, etag=etag, timeout=timeout)
    except lxdops.StaleObject:
        raise
    except lxdops.LxdError:
        after, _ = lxdops.get(client, "instances", name)
        if _protected(after):
            raise
