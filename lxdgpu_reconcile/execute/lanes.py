"""One host's lane in an apply: its connections, and its actions that may start now.

Does I/O: opens and closes connections through the ``connect`` function it is given. The
executor (``execute.executor``) runs up to its width of actions of a host at once; each running
action holds a connection of its own (an ``LxdApi`` and its HTTP session are never shared between
threads), taken from the connections the lane has opened and given back when the action ends. A
lane opens one connection at a time, so a host that does not answer is asked once, not once per
worker.

Actions become ready in any order; the lane hands them out in plan order (lowest index first).
``instant`` holds those that need no connection (pending, skipped), ``runnable`` those that run.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable

from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.planning import model as plans


class Silenced(Exception):
    """The host stopped answering (``failed`` got no answer) before a connection was opened."""

    def __init__(self, failed: str) -> None:
        super().__init__(failed)
        self.failed = failed


class Lane:
    """One host's connections and ready actions. ``running``, ``silent``, ``error``, ``left``
    and the ready heaps are guarded by the executor's condition; the connections by a lock of
    their own."""

    def __init__(self, host: plans.HostPlan, open: Callable[[str], LxdApi]) -> None:
        self.host = host
        self._open = open
        self._lock = threading.Lock()
        self._idle: list[LxdApi] = []
        self._clients: list[LxdApi] = []
        #: Actions of this host running now.
        self.running = 0
        #: Actions of this host without a result yet.
        self.left = len(host.actions)
        #: Set once a request to the host got no answer: the action that got none.
        self.silent: str | None = None
        #: An unexpected error in a worker: the lane stops and the executor raises it.
        self.error: BaseException | None = None
        self.instant: list[tuple[int, str]] = []
        self.runnable: list[tuple[int, str]] = []
        self.queued: set[str] = set()

    def push(self, index: int, action_id: str, *, instant: bool) -> None:
        """Hand out ``action_id`` (at ``index`` in the plan) once; no-op when it already was."""
        if action_id in self.queued:
            return
        self.queued.add(action_id)
        heapq.heappush(self.instant if instant else self.runnable, (index, action_id))

    def stirs(self, width: int) -> bool:
        """Whether the lane has something to do: an action to hand out, or stop."""
        if self.error is not None or not self.left or self.instant:
            return True
        return bool(self.runnable) and self.running < width

    def pop(self, *, width: int) -> tuple[str, bool] | None:
        """The next action to hand out and whether it is instant; None when none may start."""
        if self.instant:
            return heapq.heappop(self.instant)[1], True
        if self.runnable and self.running < width:
            return heapq.heappop(self.runnable)[1], False
        return None

    def acquire(self) -> LxdApi:
        """A connection for one action: an idle one, else a new one (raises
        ``HostConnectError``, or ``Silenced`` when the host stopped answering meanwhile)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self.silent is not None:
                raise Silenced(self.silent)
            client = self._open(self.host.host)
            self._clients.append(client)
            return client

    def release(self, client: LxdApi) -> None:
        with self._lock:
            self._idle.append(client)

    def close(self) -> None:
        """Close every connection the lane opened, once."""
        with self._lock:
            clients, self._clients, self._idle = self._clients, [], []
        for client in clients:
            client.close()
