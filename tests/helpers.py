"""Small helpers shared by unit and integration tests: throwaway certificates, a closed port, a
saved plan file, a lock held by another run."""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lxdgpu_reconcile import __version__
from lxdgpu_reconcile.lab import certs
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import saving
from lxdgpu_reconcile.state import FleetSnapshot


def closed_port() -> int:
    """A loopback port nobody listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed(directory: Path, name: str) -> tuple[str, str]:
    """A throwaway certificate and key in ``directory``: ``(cert path, key path)``."""
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    certs.write_self_signed(cert_path, key_path, name=name, days=1)
    return str(cert_path), str(key_path)


def fingerprint(path: str) -> str:
    """SHA-256 fingerprint of the PEM certificate at ``path``."""
    return certs.fingerprint(Path(path).read_bytes())


def saved_plan_file(
    tmp_path: Path, fleet: Path, *, sha: str | None = None, lab: str | None = None
) -> Path:
    """An empty plan saved to ``tmp_path/plan.json``, made from ``fleet`` (its SHA-256 unless
    ``sha``) for the real hosts or the lab in ``lab``."""
    saved = saving.save(
        planning.Plan(),
        FleetSnapshot(),
        fleet=saving.FleetFile(
            path=str(fleet), sha256=sha or hashlib.sha256(fleet.read_bytes()).hexdigest()
        ),
        lab=lab,
        tool_version=__version__,
        created_at="2026-01-01T00:00:00+00:00",
    )
    path = tmp_path / "plan.json"
    path.write_text(saving.render(saved))
    return path


@contextmanager
def lock_held(path: Path) -> Iterator[Path]:
    """``path`` locked as another reconcile run holds it, for the body."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 42 (reconcile) since 2026-01-01T02:00:00+00:00\n")
    try:
        yield path
    finally:
        os.close(fd)
