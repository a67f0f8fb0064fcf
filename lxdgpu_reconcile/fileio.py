"""Local files the tool writes or fingerprints: appended log lines, atomically replaced files
(saved plans, metrics, lab records), the SHA-256 of a fleet file. Does I/O on local files only.

Every write is whole or fails loudly: ``os.write`` may write fewer bytes than asked (a nearly
full disk, a signal), so ``write_all`` writes until every byte is written and raises
``FileWriteError`` (a ``ToolError`` naming the file and the reason, e.g. the disk is full) when
the system writes nothing more or refuses. ``write_atomic`` writes a temporary file in the same
directory, flushes it to disk (``fsync``), renames it over the target and flushes the directory:
a reader sees the old file or the new one, never a part, and a failed write leaves the old file
as it was.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

from lxdgpu_reconcile.errors import ToolError

_REASONS = {
    errno.ENOSPC: "no space left on the device (the disk is full)",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "the file is too large",
}


class FileWriteError(ToolError):
    """A file the tool writes could not be written whole; nothing claims it was."""

    def __init__(self, path: Path, reason: str, *, doing: str = "write") -> None:
        super().__init__(
            f"cannot {doing} {path}: {reason}",
            "free space on that file system (see `df -h`) or make the directory writable, or "
            "choose another path; then run the command again",
        )
        self.path = path
        self.reason = reason


def reason_of(exc: OSError) -> str:
    """``exc`` in plain words (``no space left on the device (the disk is full)``)."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return exc.strerror or str(exc)


def write_all(fd: int, data: bytes, *, path: Path, offset: int | None = None) -> None:
    """Write every byte of ``data`` to ``fd`` (at ``offset`` with ``pwrite`` when given),
    however few bytes each call takes; raise ``FileWriteError`` when one writes nothing or
    fails. ``path`` names the file in the error."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        try:
            if offset is None:
                n = os.write(fd, view[done:])
            else:
                n = os.pwrite(fd, view[done:], offset + done)
        except InterruptedError:
            continue
        except OSError as exc:
            raise _short(path, done, len(view), reason_of(exc)) from None
        if n <= 0:
            raise _short(path, done, len(view), _REASONS[errno.ENOSPC])
        done += n


def _short(path: Path, done: int, total: int, reason: str) -> FileWriteError:
    what = f"{reason}; {done} of {total} bytes were written" if done else reason
    return FileWriteError(path, what)


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` whole (``O_APPEND``), making its directory if needed.

    When an earlier append was cut short (the file does not end with a newline), a newline goes
    first, so that a cut line never runs into this one. Raises ``FileWriteError``.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise FileWriteError(path, reason_of(exc), doing="append to") from None
    try:
        data = text.encode()
        if text and _ends_unfinished(fd):
            data = b"\n" + data
        write_all(fd, data, path=path)
    finally:
        os.close(fd)


def _ends_unfinished(fd: int) -> bool:
    try:
        size = os.fstat(fd).st_size
        return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
    except OSError:
        return False


def write_atomic(path: Path, text: str | bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` (or bytes) so that readers see the old or the new file,
    never a part: a temporary file in the same directory, written whole, flushed, then renamed
    over it, and the directory flushed. Raises ``FileWriteError``; the old file is then left as
    it was."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FileWriteError(path, reason_of(exc)) from None
    tmp = Path(name)
    try:
        try:
            write_all(fd, text.encode() if isinstance(text, str) else text, path=path)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        raise FileWriteError(path, reason_of(exc)) from None
    finally:
        tmp.unlink(missing_ok=True)
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Flush a rename in ``directory`` to disk; file systems that cannot are left as they are."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise FileWriteError(directory, reason_of(exc), doing="flush") from None
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    """The SHA-256 of the file's bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
