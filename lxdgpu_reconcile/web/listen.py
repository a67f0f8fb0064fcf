"""Where ``serve`` listens: ``HOST:PORT`` parsed and checked. Pure but for ``check_free``, which
binds the address once to tell that it can be used."""

from __future__ import annotations

import ipaddress
import socket

from lxdgpu_reconcile.errors import ToolError

DEFAULT_LISTEN = "127.0.0.1:8080"


class BadListen(ToolError):
    """A ``--listen`` value that cannot be used."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` as (host, port); ``BadListen`` otherwise."""
    hint = "give HOST:PORT, e.g. --listen 127.0.0.1:8080, --listen 0.0.0.0:8080 or [::1]:8080"
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or (":" in host and not text.startswith("[")):
        raise BadListen(f"--listen {text!r} is not HOST:PORT", hint)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BadListen(f"--listen {text!r}: the port must be a number from 1 to 65535", hint)
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_free(host: str, port: int) -> None:
    """``BadListen`` when ``host:port`` cannot be listened on (in use, or not an address here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise BadListen(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "choose another --listen (a free port, an address of this machine), or stop the "
            "program that holds it",
        ) from None
