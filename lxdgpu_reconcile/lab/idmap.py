"""Root's id delegations in ``/etc/subuid`` and ``/etc/subgid``, which LXD reads at start.

The computation (``lines_to_add``) is pure; ``add_lines`` and ``remove_lines`` edit the files
under an exclusive lock and change nothing but the exact lines the lab adds or recorded.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
#: Containers need at least this many ids as root's base range (POSIX asks for 65536).
MIN_BASE_RANGE = 65536
#: The base range added when root has none large enough (LXD's own default).
BASE_LINE = "root:1000000:1000000000"


def root_ranges(text: str, user: str = "root") -> list[tuple[int, int]]:
    """``(start, count)`` of every delegation to ``user`` in subuid/subgid text."""
    ranges = []
    for raw in text.splitlines():
        parts = raw.strip().split(":")
        if len(parts) != 3 or parts[0] != user:
            continue
        try:
            ranges.append((int(parts[1]), int(parts[2])))
        except ValueError:
            continue
    return ranges


def _covered(ranges: Iterable[tuple[int, int]], ident: int) -> bool:
    return any(start <= ident < start + count for start, count in ranges)


def lines_to_add(text: str, ids: Iterable[int]) -> tuple[str, ...]:
    """Lines that delegate to root a base range (if it has none) and each id it lacks."""
    ranges = root_ranges(text)
    lines = []
    if not any(count >= MIN_BASE_RANGE for _, count in ranges):
        lines.append(BASE_LINE)
        ranges.extend(root_ranges(BASE_LINE))
    for ident in sorted(set(ids)):
        if not _covered(ranges, ident):
            lines.append(f"root:{ident}:1")
    return tuple(lines)


def serves(line: str, ids: Iterable[int]) -> bool:
    """Whether a delegation ``line`` gives root a base range or one of ``ids``."""
    ranges = root_ranges(line)
    return any(count >= MIN_BASE_RANGE for _, count in ranges) or any(
        _covered(ranges, ident) for ident in ids
    )


def without_lines(text: str, lines: Iterable[str]) -> str:
    """``text`` with one occurrence of each of ``lines`` removed, everything else kept."""
    kept = text.splitlines()
    removed = False
    for line in lines:
        if line in kept:
            del kept[len(kept) - 1 - kept[::-1].index(line)]
            removed = True
    return "".join(f"{line}\n" for line in kept) if removed else text


@contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    path.touch(exist_ok=True)
    with path.open("r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle


def _rewrite(handle: IO[str], text: str) -> None:
    handle.seek(0)
    handle.write(text)
    handle.truncate()
    handle.flush()


def add_lines(path: Path, ids: Iterable[int]) -> tuple[str, ...]:
    """Delegate ``ids`` (and a base range if missing) to root in ``path``; the lines added."""
    with _locked(path) as handle:
        text = handle.read()
        lines = lines_to_add(text, ids)
        if lines:
            prefix = text if not text or text.endswith("\n") else text + "\n"
            _rewrite(handle, prefix + "".join(f"{line}\n" for line in lines))
    return lines


def remove_lines(path: Path, lines: Iterable[str]) -> None:
    """Remove exactly ``lines`` (one occurrence each) from ``path``."""
    lines = tuple(lines)
    if not lines or not path.exists():
        return
    with _locked(path) as handle:
        text = handle.read()
        new = without_lines(text, lines)
        if new != text:
            _rewrite(handle, new)
