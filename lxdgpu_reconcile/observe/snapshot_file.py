"""Snapshot files: an observation of the fleet's hosts saved as JSON, and read back. Does I/O.

``status --snapshot-out FILE`` and ``reconcile --snapshot-out FILE`` write one (``write``);
``plan --state FILE`` plans against it instead of the live hosts (``read``), e.g. in a
pull-request's CI job, which has no credentials for the servers. The format (documented in
docs/performance.md, "Snapshot files")::

    {"format": "lxdgpu-reconcile-snapshot", "format_version": 1,
     "taken_at": "2024-05-01T02:00:00+00:00", "tool_version": "0.1.0",
     "builders": {"hostname": "ci01", "live": [[PID, START], ...]},
     "snapshot": <state.FleetSnapshot as JSON>}

``builders`` are the template builder processes alive on the machine that took the snapshot
(what the planner is told when it plans live), so that a plan from the file is the plan the live
observation gave; ``taken_at`` is also the planner's "now" for builds in progress.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.state import FleetSnapshot

FORMAT = "lxdgpu-reconcile-snapshot"
FORMAT_VERSION = 1
TAKE_ONE = "write one with `lxdgpu-reconcile status -f FLEET --snapshot-out FILE`"


class SnapshotFileError(ToolError):
    """A snapshot file that cannot be used: what is wrong with it, and how to get a good one."""


class Saved:
    """A snapshot read from a file: the observation and the facts recorded with it."""

    def __init__(
        self,
        snapshot: FleetSnapshot,
        *,
        taken_at: datetime.datetime,
        hostname: str,
        live: frozenset[tuple[int, int]],
    ) -> None:
        self.snapshot = snapshot
        self.taken_at = taken_at
        self.hostname = hostname
        self.live = live


def dumps(
    snapshot: FleetSnapshot,
    *,
    taken_at: datetime.datetime,
    tool_version: str,
    hostname: str,
    live: frozenset[tuple[int, int]],
) -> str:
    """The text of a snapshot file (stable: sorted keys)."""
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "taken_at": taken_at.isoformat(),
        "tool_version": tool_version,
        "builders": {"hostname": hostname, "live": sorted([pid, start] for pid, start in live)},
        "snapshot": snapshot.model_dump(mode="json"),
    }
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def write(path: Path, text: str) -> None:
    """Write the snapshot file ``text`` to ``path`` whole (atomic replacement)."""
    fileio.write_atomic(path, text)


def read(path: Path) -> Saved:
    """The snapshot in the file at ``path``; raises ``SnapshotFileError`` saying what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SnapshotFileError(
            f"cannot read the snapshot file {path}: {exc.strerror or exc}", TAKE_ONE
        ) from None
    except UnicodeDecodeError:
        raise SnapshotFileError(f"{path} is not a snapshot file (not UTF-8)", TAKE_ONE) from None
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise SnapshotFileError(
            f"{path} is not a snapshot file (not JSON: {exc})", TAKE_ONE
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotFileError(
            f'{path} is not a snapshot file (no "format": "{FORMAT}"); `status --format json` '
            "output is a report, not a snapshot",
            TAKE_ONE,
        )
    if data.get("format_version") != FORMAT_VERSION:
        raise SnapshotFileError(
            f"{path} has snapshot format version {data.get('format_version')!r}; this "
            f"lxdgpu-reconcile reads version {FORMAT_VERSION}",
            "write the snapshot again with the same version of lxdgpu-reconcile as plans it",
        )
    try:
        snapshot = FleetSnapshot.model_validate(data.get("snapshot"))
        taken_at = datetime.datetime.fromisoformat(str(data.get("taken_at")))
        builders = data.get("builders") or {}
        live = frozenset((int(pid), int(start)) for pid, start in builders.get("live") or ())
        hostname = str(builders.get("hostname") or "")
    except ValidationError as exc:
        where = "; ".join(
            f"snapshot.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise SnapshotFileError(f"{path} is not a valid snapshot: {where}", TAKE_ONE) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise SnapshotFileError(f"{path} is not a valid snapshot: {exc}", TAKE_ONE) from None
    if taken_at.tzinfo is None:
        raise SnapshotFileError(
            f"{path} is not a valid snapshot: taken_at has no time zone", TAKE_ONE
        )
    return Saved(snapshot, taken_at=taken_at, hostname=hostname, live=live)
