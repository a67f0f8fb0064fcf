"""The last observation of the fleet, kept for the web page, and the thread that refreshes it.

``merge`` is pure: it combines a new observation with the previous board so that a host that
cannot be read keeps its last known state, marked stale, with the error. ``Board`` holds the
current state behind a lock; ``Observer`` calls an observe function (the existing parallel
observer, given by the command line) every ``interval`` seconds in a daemon thread. Page views
only read the board: they never cause an LXD request. With a ``plan`` function (``serve``
gives ``pending.Planner``), the board plans against each new observation once, when it records
it, so that the page shows what a plan would change on each container.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lxdgpu_reconcile.state import FleetSnapshot, HostError, HostSnapshot

if TYPE_CHECKING:
    from lxdgpu_reconcile.web.pending import Changes


@dataclass(frozen=True)
class HostView:
    """What the page shows of one host: the snapshot to show, and how current it is.

    ``shown`` is the last snapshot read without error, or the failed one when the host was never
    read; ``error`` is the current error (None when the last attempt succeeded)."""

    shown: HostSnapshot
    error: HostError | None
    #: When ``shown`` was read (UTC); None when the host was never read.
    read_at: datetime | None
    attempted_at: datetime

    @property
    def stale(self) -> bool:
        """The host could not be read now, and an older reading is shown."""
        return self.error is not None and self.read_at is not None


@dataclass(frozen=True)
class Observation:
    """The board after one observation round, with the round's own figures for the metrics."""

    hosts: dict[str, HostView] = field(default_factory=dict)
    finished_at: datetime | None = None
    duration: float = 0.0
    rounds: int = 0
    #: Host read failures since the start, by host.
    errors: dict[str, int] = field(default_factory=dict)
    #: What a plan against this round's snapshot would change, by container; None without a
    #: planner.
    changes: Changes | None = None
    #: The page data built once per round (``view.page_data``), served as it is.
    data: dict[str, Any] = field(default_factory=dict)


def merge(
    previous: Observation, snapshot: FleetSnapshot, *, now: datetime, duration: float
) -> Observation:
    """``previous`` updated with ``snapshot``: read hosts replace their state; a host that failed
    keeps its last good snapshot (stale) with the new error."""
    hosts: dict[str, HostView] = {}
    errors = dict(previous.errors)
    for name, snap in snapshot.hosts.items():
        before = previous.hosts.get(name)
        if snap.error is None:
            hosts[name] = HostView(shown=snap, error=None, read_at=now, attempted_at=now)
            continue
        errors[name] = errors.get(name, 0) + 1
        if before is not None and before.read_at is not None:
            hosts[name] = HostView(
                shown=before.shown, error=snap.error, read_at=before.read_at, attempted_at=now
            )
        else:
            hosts[name] = HostView(shown=snap, error=snap.error, read_at=None, attempted_at=now)
    return Observation(
        hosts=hosts,
        finished_at=now,
        duration=duration,
        rounds=previous.rounds + 1,
        errors=errors,
    )


class Board:
    """The current ``Observation``, replaced whole under a lock; readers get it without waiting
    for an observation."""

    def __init__(
        self,
        build: Callable[[Observation], dict[str, Any]],
        plan: Callable[[FleetSnapshot], Changes] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._build = build
        self._plan = plan
        self._current = Observation(data=build(Observation()))
        #: Observation rounds that raised instead of returning a snapshot (a bug, not a host
        #: problem: those are in the snapshot); the board then keeps what it had.
        self.failures = 0

    @property
    def current(self) -> Observation:
        with self._lock:
            return self._current

    def record(self, snapshot: FleetSnapshot, *, duration: float, now: datetime) -> None:
        merged = merge(self.current, snapshot, now=now, duration=duration)
        if self._plan is not None:
            merged = dataclasses.replace(merged, changes=self._plan(snapshot))
        merged = dataclasses.replace(merged, data=self._build(merged))
        with self._lock:
            self._current = merged


class Observer:
    """Observes the fleet into ``board`` now and then every ``interval`` seconds (I/O: whatever
    ``observe`` does), in a daemon thread, until ``stop``."""

    def __init__(
        self, board: Board, observe: Callable[[], FleetSnapshot], *, interval: float
    ) -> None:
        self.board = board
        self._observe = observe
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def observe_once(self) -> None:
        started = time.monotonic()
        try:
            snapshot = self._observe()
        except Exception:
            self.board.failures += 1
            return
        self.board.record(snapshot, duration=time.monotonic() - started, now=datetime.now(UTC))

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.observe_once()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="web-observer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
