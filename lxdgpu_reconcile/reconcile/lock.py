"""The exclusive lock that keeps writers of one fleet from interleaving. Does I/O.

``reconcile`` and ``apply`` hold an ``fcntl.flock`` on a lock file for as long as they observe,
check and write. A second run waits up to ``wait`` seconds for it, then gives up with
``LockTimeout`` (``reconcile`` exits 4), naming the run that holds it (its pid, command and start
time, which the holder writes into the file). The kernel releases the lock when its holder exits,
however it exits, so a crashed run never leaves a stale lock behind; the file itself stays.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lxdgpu_reconcile.errors import ToolError

#: Where the lock lives unless ``--lock-file`` (or ``LXDGPU_LOCK_FILE``) says otherwise: one lock
#: per machine, shared by every reconcile and apply run on it.
DEFAULT_LOCK_FILE = Path("/run/lxdgpu-reconcile/reconcile.lock")
#: How often a waiting run tries again.
POLL_SECONDS = 0.2


class LockError(ToolError):
    """The lock file cannot be used at all (its directory cannot be made, no permission, ...)."""


class LockTimeout(LockError):
    """Another run held the lock for the whole wait."""

    exit_status = 4


@contextmanager
def exclusive(
    path: Path,
    *,
    wait: float,
    command: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[None]:
    """Hold the lock on ``path`` for the body of the ``with``; wait up to ``wait`` seconds."""
    fd = _open(path)
    try:
        deadline = clock() + wait
        while not _try_lock(fd):
            left = deadline - clock()
            if left <= 0:
                holder = _holder(path)
                raise LockTimeout(
                    f"another lxdgpu-reconcile run holds {path}{holder}; waited {wait:g} s and "
                    "did nothing",
                    "let it finish (it releases the lock when it exits), or give this run more "
                    "time with --lock-wait SECONDS",
                )
            sleep(min(POLL_SECONDS, left))
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({command}) since {started}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _open(path: Path) -> int:
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LockError(
            f"cannot open the lock file {path}: {reason}",
            "run as root, or pass --lock-file PATH in a directory you can write (every run "
            "for this fleet must use the same one)",
        ) from None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""
