"""Failures of LXD requests in plain words: ``LxdError``, ``StaleObject`` and ``explain``. Pure.

Every implementation of ``observe.lxdapi.LxdApi`` raises these, so the executor reports a failed
request the same way whichever implementation performed it.
"""

from __future__ import annotations

from lxdgpu_reconcile.errors import ToolError


class LxdError(ToolError):
    """An LXD request or operation failed. ``status`` is the HTTP or operation status code.

    ``cause`` is the transport's own exception when there is one (e.g. a requests timeout), so a
    reader can classify the failure (``observe.connect.classify``).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        hint: str = "",
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class StaleObject(LxdError):
    """The object changed on the host since it was observed; nothing was written."""


def stale(what: str, message: str, *, cause: BaseException | None = None) -> StaleObject:
    """The failure of a write whose ``If-Match`` ETag no longer matched (HTTP 412)."""
    return StaleObject(
        f"{what}: changed on the host since it was read ({message})",
        status=412,
        hint="someone else changed it: run plan again and review the change",
        cause=cause,
    )


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
