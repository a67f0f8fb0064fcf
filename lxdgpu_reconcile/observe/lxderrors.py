"""Failures of LXD requests in plain words: ``LxdError``, ``StaleObject``, ``explain``. Pure.

``explain`` recognises LXD's error messages by their exact form (anchored patterns on the
messages LXD 5.0 words), never by a word they contain. ``transport_failure`` turns a request
that got no answer (urllib3's "HTTPSConnectionPool(...): Max retries exceeded ...") into plain
words.

Every implementation of ``observe.lxdapi.LxdApi`` raises these, so the executor reports a failed
request the same way whichever implementation performed it.
"""

from __future__ import annotations

import re

from lxdgpu_reconcile.errors import ToolError


class LxdError(ToolError):
    """An LXD request or operation failed. ``status`` is the HTTP or operation status code.

    ``cause`` is the transport's own exception when there is one (e.g. a requests timeout), so a
    reader can classify the failure (``observe.connect.classify``). ``unanswered`` is set when
    the request got no answer at all (a timeout, a refused or dropped connection): the host
    stopped answering.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        hint: str = "",
        cause: BaseException | None = None,
        unanswered: bool = False,
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.cause = cause
        self.unanswered = unanswered

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


#: LXD's own error messages, by the form LXD words them (LXD 5.0), with what to do about each.
#: A pattern matches a message only in that form: a message that merely contains a word of it
#: (e.g. "idmapped storage" and "idmap") gets no hint, rather than a wrong one.
_HINTS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "idmap-delegation",
        # "Failed to run: /usr/bin/lxd forkstart NAME LXD_DIR/containers LXD_DIR/logs/NAME/lxc.conf:
        # exit status 1", or liblxc's "newuidmap failed to write mapping ...".
        re.compile(
            r"Failed to run: \S*lxd forkstart \S+ \S+ \S+: exit status \d+"
            r"|\bnew[ug]idmap failed\b|\bnew[ug]idmap: "
        ),
        "the host ids in raw.idmap must be delegated to root: add 'root:UID:1' to /etc/subuid and "
        "'root:GID:1' to /etc/subgid (or 'root:1000:1000' for the usual range), restart LXD, "
        "then apply again; `lxc info --show-log NAME` on the host shows the details",
    ),
    (
        "no-root-filesystem",
        # "Failed to handle idmapped storage: Failed expanding symlinks of "": lstat
        # LXD_DIR/containers/NAME: no such file or directory"
        re.compile(
            r"Failed to handle idmapped storage: Failed expanding symlinks of \"[^\"]*\": "
            r"lstat \S+: no such file or directory"
        ),
        "the container has no root filesystem (its create was interrupted): plan again; a "
        "managed container that was never started is then recreated",
    ),
    (
        "nvidia-runtime",
        re.compile(r"The NVIDIA container tools couldn't be found"),
        "nvidia.runtime needs the NVIDIA container toolkit on the host (nvidia-container-cli)",
    ),
    (
        "gpu-missing",
        re.compile(r"Failed to start device \"[^\"]+\": Failed to detect requested GPU device"),
        "the GPU is not on this host: check the user's gpus ids against `lxc info --resources`",
    ),
    (
        "disk-source-missing",
        re.compile(r"Missing source path \"[^\"]*\" for disk \"[^\"]+\""),
        "a disk device's host directory does not exist on the host: create it, then apply again "
        "(in the lab, run `lxdgpu-reconcile lab up` again: it makes the homes and host trees)",
    ),
    (
        "nic-parent-missing",
        re.compile(r"Failed to start device \"[^\"]+\": Parent device '[^']*' doesn't exist"),
        "the NIC's parent interface is missing on the host: check the profile's 'parent' against "
        "`ip link` there (in the lab, run `lxdgpu-reconcile lab up` again)",
    ),
    (
        "profile-in-use",
        re.compile(r"(?:^|: )Profile is currently in use$"),
        "containers still use this profile: remove it from them first",
    ),
    (
        "instance-busy",
        re.compile(r"(?:^|: )Instance is busy running a \"\w+\" operation$"),
        "another operation is running on the instance: wait a few seconds and apply again",
    ),
    (
        "protected",
        re.compile(r"(?:^|: )(?:Container|Instance) is protected$"),
        "the container has security.protection.delete: unset it on the host to release it",
    ),
    (
        "image-missing",
        re.compile(r"(?:^|: )Image (?:alias )?not found$"),
        "the template image is not on this host: build or copy the template first",
    ),
    (
        "untrusted",
        re.compile(r"(?:^|: )not authorized$"),
        "the host does not trust the tool's certificate: `lxc config trust add admin.crt` on it",
    ),
)


def classify(message: str) -> str:
    """The known form of LXD error ``message`` (e.g. "profile-in-use"), or "" when none fits."""
    for name, pattern, _ in _HINTS:
        if pattern.search(message):
            return name
    return ""


def explain(message: str) -> str:
    """What to do about an LXD error ``message``, or "" when nothing specific is known."""
    for _, pattern, hint in _HINTS:
        if pattern.search(message):
            return hint
    return ""


# --- the transport: requests' and urllib3's failures in plain words -------------------------------

#: Hint of a request that got no answer: the executor skips the rest of that host's actions.
NO_ANSWER_HINT = (
    "check that LXD runs and answers on the host (`lxc info` there, its load, the network to "
    "it), then apply again: it picks up from here"
)
_POOL = re.compile(r"HTTPS?ConnectionPool\(host='(?P<host>[^']*)', port=(?P<port>\d+)\)")
_TIMEOUT = re.compile(r"\((?:read|connect) timeout=(?P<seconds>[\d.]+)\)")
_REASONS = (
    (re.compile(r"Connection refused"), "nothing accepts connections there (LXD is not running)"),
    (
        re.compile(r"RemoteDisconnected|Connection aborted|Connection reset by peer"),
        "the host closed the connection without answering (LXD stopped or restarted)",
    ),
    (
        re.compile(r"Name or service not known|Temporary failure in name resolution"),
        "the host name does not resolve",
    ),
    (re.compile(r"No route to host|Network is unreachable"), "there is no route to the host"),
)


def transport_failure(what: str, text: str, *, timed_out: bool) -> LxdError:
    """The failure of request ``what`` that got no answer, in plain words.

    ``text`` is the transport's message (e.g. urllib3's "HTTPSConnectionPool(host=..., port=...):
    Max retries exceeded ... Connection refused"); ``timed_out`` says whether it was a timeout.
    The error is marked ``unanswered``.
    """
    pool = _POOL.search(text)
    where = f" at {pool['host']}:{pool['port']}" if pool else ""
    if timed_out:
        limit = _TIMEOUT.search(text)
        within = f" within {float(limit['seconds']):g} s" if limit else " in time"
        message = f"{what}: the host{where} did not answer{within}"
    else:
        reason = next((words for rx, words in _REASONS if rx.search(text)), "")
        if not reason:
            errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
            reason = errno.group(1).strip() if errno else "the connection failed"
        message = f"{what}: cannot reach the host{where}: {reason}"
    return LxdError(message, hint=NO_ANSWER_HINT, unanswered=True)
