"""Small helpers shared by unit and integration tests: throwaway certificates, a closed port."""

from __future__ import annotations

import socket
from pathlib import Path

from lxdgpu_reconcile.lab import certs


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
