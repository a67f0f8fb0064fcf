"""Writes to one LXD host, each waited on with a deadline, through ``observe.lxdapi.LxdApi``.

Does I/O, through the ``LxdApi`` it is given. The errors (``LxdError``, ``StaleObject``,
``explain``) and ``DEFAULT_TIMEOUT`` are defined with the API and re-exported here for the
executor's callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxdgpu_reconcile.observe.lxdapi import DEFAULT_TIMEOUT, LxdApi
from lxdgpu_reconcile.observe.lxderrors import NO_ANSWER_HINT, LxdError, StaleObject, explain

__all__ = [
    "DEFAULT_TIMEOUT",
    "NO_ANSWER_HINT",
    "LxdError",
    "StaleObject",
    "create",
    "delete",
    "explain",
    "get",
    "put",
    "set_state",
]


def get(client: LxdApi, collection: str, name: str) -> tuple[dict[str, Any], str]:
    """The object and its ETag, e.g. ``get(client, "instances", "tom-container")``."""
    return client.get(collection, name)


def create(
    client: LxdApi,
    collection: str,
    body: Mapping[str, Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    target: str | None = None,
) -> None:
    """``POST``; ``target``: the cluster member to create it on (``?target=MEMBER``)."""
    if target is None:
        client.create(collection, body, timeout=timeout)
    else:
        client.create(collection, body, timeout=timeout, target=target)


def put(
    client: LxdApi,
    collection: str,
    name: str,
    body: Mapping[str, Any],
    *,
    etag: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Replace the object, only if it still has ``etag`` (``If-Match``)."""
    client.put(collection, name, body, etag=etag, timeout=timeout)


def delete(client: LxdApi, collection: str, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    client.delete(collection, name, timeout=timeout)


def set_state(
    client: LxdApi,
    name: str,
    action: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    force: bool = False,
) -> None:
    """``start`` or ``stop`` an instance and wait for it."""
    client.set_state(name, action, timeout=timeout, force=force)
