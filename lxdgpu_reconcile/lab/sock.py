"""A minimal client for one LXD daemon's unix socket, for the lab's own setup calls.

Does I/O. The lab talks to its daemons locally (trust, images) before the tool's https access
exists; the standard library is enough for those few calls and keeps them fully typed.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lxdgpu_reconcile.lab.faults import LabError


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("lxd", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class LxdSocket:
    """JSON requests to the daemon behind ``path``; every failure is a ``LabError``."""

    def __init__(self, path: Path, *, timeout: float = 120.0) -> None:
        self.path = path
        self.timeout = timeout

    def call(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        ok_missing: bool = False,
    ) -> Any:
        """The ``metadata`` of the answer; ``None`` for a 404 when ``ok_missing``."""
        body = data if data is not None else None
        sent = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        status, answer = self._send(method, url, body, sent)
        if status == 404 and ok_missing:
            return None
        if status >= 400 or answer.get("type") == "error":
            raise LabError(
                f"LXD at {self.path} refused {method} {url}: {answer.get('error') or status}; "
                f"see {self.path.parent / 'lxd.log'}"
            )
        if answer.get("type") == "async":
            return self.wait(answer["operation"])
        return answer.get("metadata")

    def wait(self, operation: str) -> Any:
        """Wait for an operation (at most ``timeout`` seconds) and return its metadata;
        ``LabError`` if it failed or did not finish in time."""
        deadline = time.monotonic() + self.timeout
        while True:
            # Each wait returns well before the socket's own timeout, also while still running.
            left = max(1, min(30, int(deadline - time.monotonic())))
            status, answer = self._send("GET", f"{operation}/wait?timeout={left}", None, {})
            meta = answer.get("metadata") or {}
            if status >= 400 or meta.get("status_code") != 103:
                break
            if time.monotonic() >= deadline:
                raise LabError(
                    f"LXD at {self.path}: operation {operation} did not finish within "
                    f"{self.timeout:.0f} s; see {self.path.parent / 'lxd.log'}, then retry"
                )
        if status >= 400 or meta.get("status") != "Success":
            reason = meta.get("err") or answer.get("error") or meta.get("status") or status
            raise LabError(f"LXD at {self.path}: operation {operation} failed: {reason}")
        return meta

    def _send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request(method, url, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except OSError as exc:
            raise LabError(
                f"cannot talk to LXD at {self.path}: {exc}; is the lab daemon running? "
                "run `lxdgpu-reconcile lab up` again"
            ) from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw or b"{}")
        except ValueError:
            answer = {"error": raw[:200].decode(errors="replace")}
        return response.status, answer if isinstance(answer, dict) else {}


def quoted(name: str) -> str:
    """``name`` as one URL path segment."""
    return quote(name, safe="")
