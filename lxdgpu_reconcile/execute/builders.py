"""Who runs a template build, and which builders are still alive. Does I/O: reads ``/proc``.

A build container is tagged with the process that runs the build (``this_builder``: hostname,
pid, the pid's start time and when the build started; tag names in ``templates.recipe``). Before
planning, ``live_builders`` looks up, on this machine only, the processes that the build
containers of a snapshot name, so the pure planner can tell a build in progress from a leftover
(``recipe.running_builder``).

A process's start time is field 22 of ``/proc/PID/stat`` (clock ticks since boot): it is fixed
for the life of a pid, so a pid reused by a later process does not pass for the builder.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable
from pathlib import Path

from lxdgpu_reconcile.state import FleetSnapshot
from lxdgpu_reconcile.templates import recipe

#: ``/proc/PID/stat`` field of the process's start time (1-based, as ``proc(5)`` numbers them).
_START_FIELD = 22


def process_start(pid: int | str, proc: Path = Path("/proc")) -> int | None:
    """The start time of process ``pid`` (``"self"`` for this one) in clock ticks since boot, or
    None when no such process runs (or ``/proc`` cannot tell)."""
    try:
        text = (proc / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces and parentheses itself.
    rest = text.rpartition(")")[2].split()
    index = _START_FIELD - 3  # ``rest`` starts at field 3
    try:
        return int(rest[index])
    except (IndexError, ValueError):
        return None


def this_builder(now: datetime.datetime | None = None) -> recipe.Builder:
    """This process, as the builder of a build starting ``now`` (default: the current time)."""
    return recipe.Builder(
        host=socket.gethostname(),
        pid=os.getpid(),
        start=process_start("self") or 0,
        started=now or datetime.datetime.now(datetime.UTC),
    )


def live_builders(
    snapshot: FleetSnapshot,
    *,
    reader: Callable[[int], int | None] | None = None,
    now: datetime.datetime | None = None,
) -> recipe.LiveBuilders:
    """The facts the planner needs about the builders the build containers in ``snapshot`` name:
    this machine's hostname, the ``(pid, start)`` of those of its processes that are alive, and
    now. Only the pids named by build containers made on this machine are read (with ``reader``,
    by default ``process_start``)."""
    read = reader or process_start
    hostname = socket.gethostname()
    pids = {
        builder.pid
        for host in snapshot.hosts.values()
        for obs in host.instances.values()
        if recipe.is_build_container(obs.config)
        and (builder := recipe.builder_of(obs.config)) is not None
        and builder.host == hostname
    }
    live: set[tuple[int, int]] = set()
    for pid in sorted(pids):
        start = read(pid)
        if start is not None:
            live.add((pid, start))
    return recipe.LiveBuilders(
        hostname=hostname,
        live=frozenset(live),
        now=now or datetime.datetime.now(datetime.UTC),
    )
