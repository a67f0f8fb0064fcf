"""The exclusive lock that keeps writers of one fleet from interleaving. Does I/O.

``reconcile`` and ``apply`` hold an ``fcntl.flock`` on a lock file for as long as they observe,
check and write. A second run waits up to ``wait`` seconds for it, then gives up with
``LockTimeout`` (``reconcile`` exits 4), naming the run that holds it (its pid, command and start
time, which the holder writes into the file). The kernel releases the lock when its holder exits,
however it exits, so a crashed run never leaves a stale lock behind; the file itself stays.

The lock file is the tool's own, and nothing else is ever written: the path is opened without
following a symbolic link (``O_NOFOLLOW``) and must be a regular file with one link, and an
existing file must be empty or start with a lock record's first line (``HEADER``, or the
one-line record of earlier versions). Anything else (a fleet file, a link to ``/etc/shadow``) is
refused with ``LockFileRefused`` and left exactly as it was. The file is never truncated: every
record is written over the last at offset 0, padded to ``RECORD_SIZE`` bytes, and the holder
leaves a "free" record when it is done.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile.errors import ToolError

#: Where the lock lives unless ``--lock-file`` (or ``LXDGPU_LOCK_FILE``) says otherwise: one lock
#: per machine, shared by every reconcile and apply run on it.
DEFAULT_LOCK_FILE = Path("/run/lxdgpu-reconcile/reconcile.lock")
#: How often a waiting run tries again.
POLL_SECONDS = 0.2
#: The first line of every lock record: what makes a file recognisably the tool's lock file.
HEADER = "lxdgpu-reconcile lock file: do not edit"
#: Every record is padded to this many bytes, so that a record always covers the one before.
RECORD_SIZE = 256
#: The record of earlier versions: ``pid 42 (reconcile) since 2026-01-01T02:00:00+00:00``.
_OLD_RECORD = re.compile(r"pid \d+ \([^)\n]*\) since \S+")
_USE_ANOTHER = (
    "pass --lock-file PATH naming a lock file of its own (e.g. "
    f"{DEFAULT_LOCK_FILE}), never a link or another file; every run for this fleet must use "
    "the same one"
)


class LockError(ToolError):
    """The lock file cannot be used at all (its directory cannot be made, no permission, ...)."""


class LockFileRefused(LockError):
    """The path is not the tool's own lock file (a link, a directory, another file's content):
    it is left as it is, and the run does nothing."""


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
                holder = _holder(fd)
                raise LockTimeout(
                    f"another lxdgpu-reconcile run holds {path}{holder}; waited {wait:g} s and "
                    "did nothing",
                    "let it finish (it releases the lock when it exits), or give this run more "
                    "time with --lock-wait SECONDS",
                )
            sleep(min(POLL_SECONDS, left))
        _check_content(fd, path)
        started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        _write_record(fd, path, f"pid {os.getpid()} ({command}) since {started}")
        try:
            yield
        finally:
            _release(fd, path)
    finally:
        os.close(fd)  # releases the lock


def _open(path: Path) -> int:
    """The lock file, opened read-write without following a link and without truncating it."""
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refused(path, "it is a symbolic link") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO):
            raise _refused(path, "it is not a regular file") from None
        raise LockError(
            f"cannot open the lock file {path}: {fileio.reason_of(exc)}",
            "run as root, or pass --lock-file PATH in a directory you can write (every run "
            "for this fleet must use the same one)",
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _refused(path, "it is not a regular file")
        if info.st_nlink > 1:
            raise _refused(path, f"it has {info.st_nlink} hard links (another file's name)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_content(fd: int, path: Path) -> None:
    """Refuse a file that holds anything but a lock record (read while holding the lock)."""
    text = _read(fd)
    if text is None:
        raise _refused(path, "it is not a lock file (it is not text)")
    first = text.strip().split("\n", 1)[0].strip()
    if first and first != HEADER and not _OLD_RECORD.fullmatch(first):
        raise _refused(path, "it already holds something other than a lxdgpu-reconcile lock")


def _read(fd: int) -> str | None:
    try:
        data = os.pread(fd, 4 * RECORD_SIZE + 1, 0)
    except OSError:
        return None
    if len(data) > 4 * RECORD_SIZE or b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def _refused(path: Path, why: str) -> LockFileRefused:
    return LockFileRefused(
        f"refusing to use {path} as the lock file: {why}; it was left as it is and nothing "
        "was done",
        _USE_ANOTHER,
    )


def _write_record(fd: int, path: Path, line: str) -> None:
    """Write ``HEADER`` and ``line`` over the record at offset 0, padded to ``RECORD_SIZE``."""
    text = f"{HEADER}\n{line}\n"
    data = text.encode()[: RECORD_SIZE - 1]
    data = data.ljust(RECORD_SIZE - 1, b" ") + b"\n"
    try:
        fileio.write_all(fd, data, path=path, offset=0)
    except fileio.FileWriteError as exc:
        raise LockError(
            f"cannot write the lock record to {path}: {exc.reason}; nothing was done",
            "free space on that file system (see `df -h`), or pass --lock-file PATH on "
            "another one (every run for this fleet must use the same one)",
        ) from None


def _release(fd: int, path: Path) -> None:
    """Leave a "free" record: the kernel drops the lock itself when the file is closed."""
    with contextlib.suppress(LockError):  # released on close all the same; a stale record
        _write_record(fd, path, "free")  # only informs


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _holder(fd: int) -> str:
    """What the holder wrote about itself, for the timeout message ("" when nothing)."""
    text = _read(fd) or ""
    lines = [line.strip() for line in text.splitlines()]
    said = [line for line in lines if line and line != HEADER and line != "free"]
    return f" ({said[0]})" if said else ""
