"""Run a shell command in a running instance without websockets, streaming its output.

Does I/O, through ``observe.lxdapi.LxdApi``. ``lxc exec`` and pylxd's ``execute()``
attach over ``wss://`` websockets, and pylxd (through ws4py) does not verify the server's
certificate there. ``run_command`` instead starts ``POST /1.0/instances/NAME/exec`` with
``record-output`` and no websocket: LXD writes the output to a log file of the instance, which
LXD 5.0 serves while the command runs, so each new line is read (a range request on the log, once
a second, between waits on the operation) and handed to a callback as it appears.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.observe.lxderrors import LxdError

#: Environment of every command (LXD adds nothing else for a non-interactive exec).
STEP_ENVIRONMENT = {
    "HOME": "/root",
    "USER": "root",
    "LANG": "C.UTF-8",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND": "noninteractive",
}
#: Seconds between two reads of a running command's output.
POLL_SECONDS = 1
#: How many of the last output lines ``run_command`` returns.
TAIL_LINES = 30


def run_command(
    client: LxdApi,
    instance: str,
    command: str,
    *,
    on_line: Callable[[str], None],
    timeout: float,
    environment: Mapping[str, str] = STEP_ENVIRONMENT,
) -> tuple[int | None, tuple[str, ...]]:
    """Run ``command`` with ``/bin/sh -c`` as root in the running ``instance``.

    Each line of output (standard error merged into standard output, so lines keep their order)
    goes to ``on_line`` while the command runs. Returns the exit code, or None when ``timeout``
    passed first (the command may still run: stop the instance), and the last output lines.
    """
    body = {
        "command": ["/bin/sh", "-c", "exec 2>&1\n" + command],
        "environment": dict(environment),
        "record-output": True,
        "wait-for-websocket": False,
        "interactive": False,
    }
    what = f"run a step in {instance}"
    op_id = client.start_exec(instance, body, what=what)
    log = _LogReader(client, instance, f"exec_{op_id}.stdout", on_line)
    deadline = time.monotonic() + timeout
    while True:
        meta = _wait_briefly(client, op_id, what)
        if meta.get("status_code") not in (None, 103):
            break
        log.read()
        if time.monotonic() >= deadline:
            log.finish()
            return None, log.tail()
    result = meta.get("metadata") or {}
    output = (result.get("output") or {}).get("1")
    if output:
        log.follow(str(output).rsplit("/", 1)[-1])
    log.finish()
    if "return" not in result:
        error = meta.get("err") or "failed"
        raise LxdError(f"{what}: {error}", status=meta.get("status_code"))
    if meta.get("err"):
        log.note(f"(LXD: {meta['err']})")
    return int(result["return"]), log.tail()


def _wait_briefly(client: LxdApi, op_id: str, what: str) -> dict[str, Any]:
    """The operation after it ended or ``POLL_SECONDS`` passed, whichever comes first."""
    return client.poll_operation(op_id, wait=POLL_SECONDS, what=what)


class _LogReader:
    """Reads the new part of an instance log file and hands out complete lines."""

    def __init__(
        self, client: LxdApi, instance: str, name: str, on_line: Callable[[str], None]
    ) -> None:
        self._client = client
        self._instance = instance
        self._name = name
        self._on_line = on_line
        self._offset = 0
        self._partial = b""
        self._tail: deque[str] = deque(maxlen=TAIL_LINES)

    def follow(self, name: str) -> None:
        """Read ``name`` from now on (the file the finished operation reports)."""
        if name != self._name:
            self._name, self._offset, self._partial = name, 0, b""

    def read(self) -> None:
        data = self._fetch()
        if not data:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._emit(line)

    def finish(self) -> None:
        self.read()
        if self._partial:
            self._emit(self._partial)
            self._partial = b""

    def note(self, line: str) -> None:
        """Add a line of our own (e.g. LXD's reason a command could not run)."""
        self._emit(line.encode())

    def tail(self) -> tuple[str, ...]:
        return tuple(self._tail)

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self._tail.append(line)
        self._on_line(line)

    def _fetch(self) -> bytes:
        """The bytes past ``_offset``; b"" while the file does not exist yet."""
        return self._client.read_log(
            self._instance, self._name, offset=self._offset, what="read the output of a step"
        )
