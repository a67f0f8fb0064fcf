"""Local files the tool writes or fingerprints: appended log lines, atomically replaced files
(saved plans, metrics), the SHA-256 of a fleet file. Does I/O on local files only."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` in one write (``O_APPEND``), making its directory if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never a part:
    a temporary file in the same directory, flushed, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    """The SHA-256 of the file's bytes, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
