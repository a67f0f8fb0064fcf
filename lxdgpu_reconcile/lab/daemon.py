"""One lab LXD daemon: start it, configure it, trust the tool, stop it.

Does I/O (starts and signals processes, talks to the daemon). ``preseed`` is pure. Each daemon
runs detached as root with its own ``LXD_DIR`` and listens on its own 127.0.0.1 port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path

import yaml

from lxdgpu_reconcile.lab import hostsys
from lxdgpu_reconcile.lab.certs import CLIENT_NAME, der_base64, fingerprint
from lxdgpu_reconcile.lab.faults import LabError
from lxdgpu_reconcile.lab.record import HostLab
from lxdgpu_reconcile.lab.sock import LxdSocket
from lxdgpu_reconcile.lab.system import is_lxd_of, pid_gone, processes_under, run

READY_TIMEOUT = 60
STOP_TIMEOUT = 60


def preseed(port: int, address: str = "127.0.0.1") -> str:
    """``lxd init --preseed`` text: https on ``address``:``port``, a ``dir`` pool, a root disk."""
    doc = {
        "config": {"core.https_address": f"{address}:{port}"},
        "storage_pools": [{"name": "default", "driver": "dir", "description": "lab pool"}],
        "profiles": [
            {
                "name": "default",
                "description": "Default LXD profile",
                "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}},
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def free_port(taken: Iterable[int] = ()) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on and no other lab host uses."""
    avoid = set(taken)
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in avoid:
            return port
    raise LabError("found no free port on 127.0.0.1; free some and retry")


def _env(lxd_dir: str) -> dict[str, str]:
    return {"LXD_DIR": lxd_dir}


def start(host: HostLab) -> HostLab:
    """Start ``host``'s daemon detached (not a child of this process) in a mount namespace of
    its own where the host's system is /etc and /home (``hostsys``); wait until it is ready."""
    lxd_dir = host.lxd_dir
    log = Path(lxd_dir) / "lxd.log"
    if host.system is None:
        raise LabError(f"{host.name}: has no system of its own; run `lxdgpu-reconcile lab up`")
    try:
        pid = hostsys.start_daemon(Path(lxd_dir), Path(host.system), log=log)
    except LabError as exc:
        raise LabError(f"{host.name}: {exc.message}") from None
    try:
        run(
            ["lxd", "waitready", "--timeout", str(READY_TIMEOUT)],
            env=_env(lxd_dir),
            timeout=READY_TIMEOUT + 10,
            what=f"{host.name}: lxd waitready",
        )
    except LabError as exc:
        raise LabError(f"{exc}; see {log}") from None
    return host.model_copy(update={"pid": pid})


def initialise(host: HostLab, text: str | None = None) -> None:
    """Apply the preseed (first start of a fresh ``LXD_DIR``): ``text``, or a single host's."""
    run(
        ["lxd", "init", "--preseed"],
        env=_env(host.lxd_dir),
        stdin=preseed(host.port, host.address) if text is None else text,
        what=f"{host.name}: lxd init --preseed",
    )


def check_listening(host: HostLab) -> None:
    """Fail clearly when the daemon is not serving https on its recorded port."""
    address = LxdSocket(host.socket).call("GET", "/1.0")["config"].get("core.https_address")
    if address != f"{host.address}:{host.port}":
        raise LabError(
            f"{host.name}: LXD listens on {address or 'no https address'}, not {host.address}:"
            f"{host.port}; run `lxdgpu-reconcile lab down` and `lab up` again"
        )
    try:
        socket.create_connection((host.address, host.port), timeout=5).close()
    except OSError:
        raise LabError(
            f"{host.name}: nothing answers on {host.address}:{host.port} (another program may hold "
            f"the port; see {Path(host.lxd_dir) / 'lxd.log'}); run `lxdgpu-reconcile lab down` "
            "and `lab up` again"
        ) from None


def trust(host: HostLab, cert_path: Path) -> None:
    """Add the tool's client certificate to ``host``'s trust store unless it is there."""
    pem = cert_path.read_bytes()
    lxd = LxdSocket(host.socket)
    trusted = lxd.call("GET", "/1.0/certificates?recursion=1") or []
    if any(entry.get("fingerprint") == fingerprint(pem) for entry in trusted):
        return
    body = {"type": "client", "name": CLIENT_NAME, "certificate": der_base64(pem)}
    lxd.call("POST", "/1.0/certificates", json_body=body)


def running(host: HostLab) -> bool:
    return is_lxd_of(host.pid, host.lxd_dir)


def in_own_system(host: HostLab) -> bool:
    """Whether ``host``'s daemon runs and sees the host's own /etc and /home (not this
    machine's: a daemon of a lab made before hosts had systems of their own does)."""
    return (
        host.system is not None
        and running(host)
        and hostsys.sees_system(host.pid, Path(host.system))
    )


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pid_gone(pid):
            return True
        time.sleep(0.1)
    return pid_gone(pid)


def stop(host: HostLab) -> None:
    """Stop ``host``'s daemon (its containers first); kill it by its recorded pid if needed."""
    if host.pid and running(host):
        with contextlib.suppress(LabError):
            run(
                ["lxd", "shutdown", "--timeout", str(STOP_TIMEOUT)],
                env=_env(host.lxd_dir),
                timeout=STOP_TIMEOUT + 10,
                what=f"{host.name}: lxd shutdown",
            )
        if not _wait_gone(host.pid, 10):
            _kill(host.pid)
    for pid in processes_under(host.lxd_dir):
        _kill(pid)


def _kill(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, 5):
            return
