"""Writes to one LXD host through its raw REST API, each waited on with a deadline.

Does I/O. pylxd's high-level objects drop operation ids (``wait=False``), wait without a timeout
and know nothing of ETags, so every write here goes through ``client.api`` and
``wait_operation``; pylxd's exceptions become ``LxdError`` with a message in plain words and, where
one is known, what to do about it (``explain``).
"""

from __future__ import annotations

import time
from typing import Any

import requests
from pylxd import exceptions as lxd_exceptions

from lxdgpu_reconcile.errors import ToolError

#: Default deadline for one LXD operation (create, start, stop, update, delete), in seconds.
DEFAULT_TIMEOUT = 120.0


class LxdError(ToolError):
    """An LXD request or operation failed. ``status`` is the HTTP or operation status code."""

    def __init__(self, message: str, *, status: int | None = None, hint: str = "") -> None:
        super().__init__(message, hint)
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class StaleObject(LxdError):
    """The object changed on the host since it was observed; nothing was written."""


def call(what: str, func: Any, *args: Any, **kwargs: Any) -> requests.Response:
    """``func(*args, **kwargs)`` (a ``client.api`` method); failures become ``LxdError``."""
    try:
        response: requests.Response = func(*args, **kwargs)
    except lxd_exceptions.LXDAPIException as exc:
        status = exc.response.status_code if exc.response is not None else None
        message = str(exc)
        if status == 412:
            raise StaleObject(
                f"{what}: changed on the host since it was read ({message})",
                status=412,
                hint="someone else changed it: run plan again and review the change",
            ) from None
        raise LxdError(f"{what}: {message}", status=status, hint=explain(message)) from None
    except requests.RequestException as exc:
        raise LxdError(
            f"{what}: {type(exc).__name__}: {exc}", hint="check that the host is reachable"
        ) from None
    return response


def operation_id(response: requests.Response) -> str:
    """The id of the operation an async ``response`` started."""
    return str(response.json()["operation"]).rstrip("/").split("/")[-1]


def wait_operation(
    client: Any, response: requests.Response, what: str, timeout: float
) -> dict[str, Any]:
    """Wait for the operation ``response`` started, until it ends or ``timeout`` passes.

    Returns the operation's ``metadata`` (e.g. the fingerprint of a published image, or the exit
    code of an exec); ``{}`` for a synchronous response.
    """
    body = response.json()
    if body.get("type") != "async":
        return {}
    op_id = operation_id(response)
    deadline = time.monotonic() + timeout
    while True:
        left = max(1, min(30, int(deadline - time.monotonic())))
        reply = call(what, client.api.operations[op_id].wait.get, params={"timeout": left})
        meta = reply.json().get("metadata") or {}
        status_code = meta.get("status_code")
        if status_code == 200:
            return dict(meta.get("metadata") or {})
        if status_code in (400, 401):
            error = meta.get("err") or "failed"
            raise LxdError(f"{what}: {error}", status=status_code, hint=explain(error))
        if time.monotonic() >= deadline:
            raise LxdError(
                f"{what}: not finished after {timeout:.0f}s (LXD operation {op_id})",
                hint="the operation goes on on the host; check it with `lxc operation list`",
            )


def get(client: Any, collection: str, name: str) -> tuple[dict[str, Any], str]:
    """The object and its ETag, e.g. ``get(client, "instances", "tom-container")``."""
    response = call(f"read {collection[:-1]} {name}", client.api[collection][name].get)
    return response.json()["metadata"], response.headers.get("ETag", "")


def create(
    client: Any, collection: str, body: dict[str, Any], *, timeout: float = DEFAULT_TIMEOUT
) -> None:
    what = f"create {collection[:-1]} {body.get('name', '')}"
    wait_operation(client, call(what, client.api[collection].post, json=body), what, timeout)


def put(
    client: Any,
    collection: str,
    name: str,
    body: dict[str, Any],
    *,
    etag: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Replace the object, only if it still has ``etag`` (``If-Match``)."""
    what = f"update {collection[:-1]} {name}"
    headers = {"If-Match": etag} if etag else {}
    response = call(what, client.api[collection][name].put, json=body, headers=headers)
    wait_operation(client, response, what, timeout)


def delete(client: Any, collection: str, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    what = f"delete {collection[:-1]} {name}"
    wait_operation(client, call(what, client.api[collection][name].delete), what, timeout)


def set_state(
    client: Any, name: str, action: str, *, timeout: float = DEFAULT_TIMEOUT, force: bool = False
) -> None:
    """``start`` or ``stop`` an instance and wait for it."""
    what = f"{action} instance {name}"
    body: dict[str, Any] = {"action": action, "timeout": int(min(timeout, 60)), "force": force}
    response = call(what, client.api.instances[name].state.put, json=body)
    wait_operation(client, response, what, timeout)


_HINTS = (
    (
        ("newuidmap", "newgidmap", "forkstart", "idmap"),
        "the host ids in raw.idmap must be delegated to root: add 'root:UID:1' to /etc/subuid and "
        "'root:GID:1' to /etc/subgid (or 'root:1000:1000' for the usual range), restart LXD, "
        "then apply again; `lxc info --show-log NAME` on the host shows the details",
    ),
    (
        ("NVIDIA container tools", "nvidia-container"),
        "nvidia.runtime needs the NVIDIA container toolkit on the host (nvidia-container-cli)",
    ),
    (
        ("Failed to detect requested GPU", "GPU device"),
        "the GPU is not on this host: check the user's gpus ids against `lxc info --resources`",
    ),
    (
        ("Missing source path",),
        "a disk device's host directory does not exist on the host: create it, then apply again",
    ),
    (
        ("Parent device",),
        "the NIC's parent interface is missing on the host: check the profile's 'parent' against "
        "`ip link` there (in the lab, run `lxdgpu-reconcile lab up` again)",
    ),
    (
        ("Profile is currently in use",),
        "containers still use this profile: remove it from them first",
    ),
    (
        ("Instance is busy",),
        "another operation is running on the instance: wait a few seconds and apply again",
    ),
    (
        ("protection.delete", "Instance is protected"),
        "the container has security.protection.delete: unset it on the host to release it",
    ),
    (
        ("Image alias not found", "Image not found"),
        "the template image is not on this host: build or copy the template first",
    ),
    (
        ("not authorized", "403"),
        "the host does not trust the tool's certificate: `lxc config trust add admin.crt` on it",
    ),
)


def explain(message: str) -> str:
    """What to do about an LXD error ``message``, or "" when nothing specific is known."""
    for needles, hint in _HINTS:
        if any(needle in message for needle in needles):
            return hint
    return ""
