"""A real OpenSSH server on loopback for tests, with its own keys: ``start_sshd`` / ``Sshd``.

Debian's ``sshd`` (package openssh-server, installed the way the lab installs its packages,
``lab.system.ensure_packages``, when missing) runs in the foreground (``-D``) as a child of the
test, on 127.0.0.1 and a free port, with a host key, a pid file, an ``AuthorizedKeysFile`` and
a log of its own in a temporary directory, ``UsePAM no``. The client side is there too: a key
pair, a ``known_hosts`` holding the server's host key, and an ssh configuration file (for ``ssh
-F``; the admin's own ~/.ssh and /etc/ssh/ssh_config are not read) in which the host alias
``Sshd.alias`` reaches the server as root. ``client_config`` writes variants (another port,
another known_hosts) for the failures.

Needs root (sshd logs users in). Use the ``sshd`` fixture (``pytest_plugins`` or import it),
or ``start_sshd``/``Sshd.stop`` directly; every process started is stopped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lxdgpu_reconcile.lab import LabPrerequisiteError, system

SSHD = "/usr/sbin/sshd"
#: The host alias of the test server in the client configuration.
ALIAS = "lxdgpu-sshd"


def cannot_run(reason: str) -> None:
    """Fail in CI, skip elsewhere (as the lab fixtures do)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the test sshd cannot run here: {reason}", pytrace=False)
    pytest.skip(f"the test sshd cannot run here: {reason}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path) -> str:
    """A new ed25519 key pair at ``path`` (and ``path.pub``), without passphrase; the public
    key's text."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Sshd:
    """A running test sshd and its client side."""

    dir: Path
    port: int
    process: subprocess.Popen[bytes]
    #: The server's public host key (``ssh-ed25519 AAAA... comment``).
    host_key: str
    client_key: Path
    known_hosts: Path
    #: ``ssh -F`` file in which ``ALIAS`` reaches this server as root with ``client_key``.
    config: Path
    alias: str = ALIAS

    @property
    def destination(self) -> str:
        return f"root@{self.alias}"

    def client_config(
        self,
        name: str,
        *,
        port: int | None = None,
        known_hosts: Path | None = None,
        key: Path | None = None,
    ) -> Path:
        """Another client configuration for ``ALIAS`` in ``dir/name``: another port, known_hosts
        or key than the working one."""
        path = self.dir / name
        path.write_text(
            _client_config(
                port=port or self.port,
                key=key or self.client_key,
                known_hosts=known_hosts or self.known_hosts,
            )
        )
        return path

    def known_hosts_file(self, name: str, host_key: str) -> Path:
        """A known_hosts file in ``dir/name`` that holds ``host_key`` for this server."""
        path = self.dir / name
        path.write_text(f"[127.0.0.1]:{self.port} {host_key}\n")
        return path

    def log(self) -> str:
        return (self.dir / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop the server (and wait for it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _client_config(*, port: int, key: Path, known_hosts: Path) -> str:
    return (
        f"Host {ALIAS}\n"
        "  HostName 127.0.0.1\n"
        f"  Port {port}\n"
        "  User root\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        "  IdentityAgent none\n"
        f"  UserKnownHostsFile {known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  UpdateHostKeys no\n"
        "  ControlMaster no\n"
        "  ControlPath none\n"
        "  LogLevel ERROR\n"
    )


def ensure_sshd() -> None:
    """Install openssh-server (and the lab's other packages) the lab's way when it is missing."""
    if os.geteuid() != 0:
        cannot_run(f"the tests run as uid {os.geteuid()}; sshd needs root")
    if Path(SSHD).exists() and shutil.which("ssh") and shutil.which("ssh-keygen"):
        return
    try:
        system.ensure_packages(lambda line: None)
    except LabPrerequisiteError as exc:
        cannot_run(str(exc))


def start_sshd(directory: Path) -> Sshd:
    """Start a test sshd with everything of its own in ``directory`` (created)."""
    ensure_sshd()
    directory.mkdir(parents=True, exist_ok=True)
    # sshd refuses to start without its privilege separation directory (a systemd unit makes it).
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = keygen(directory / "host_ed25519")
    client_key = directory / "client_ed25519"
    (directory / "authorized_keys").write_text(keygen(client_key) + "\n")
    port = free_port()
    (directory / "sshd_config").write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {directory}/host_ed25519\n"
        f"PidFile {directory}/sshd.pid\n"
        f"AuthorizedKeysFile {directory}/authorized_keys\n"
        "UsePAM no\n"
        # The keys live under /tmp, which is world-writable: not a home sshd would accept.
        "StrictModes no\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\n"
        "LogLevel VERBOSE\n"
    )
    log = (directory / "sshd.log").open("wb")
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(directory / "sshd_config")],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    log.close()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    config = directory / "ssh_config"
    config.write_text(_client_config(port=port, key=client_key, known_hosts=known_hosts))
    sshd = Sshd(
        dir=directory,
        port=port,
        process=process,
        host_key=host_key,
        client_key=client_key,
        known_hosts=known_hosts,
        config=config,
    )
    _wait_listening(sshd)
    return sshd


def _wait_listening(sshd: Sshd, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sshd.process.poll() is not None:
            pytest.fail(f"sshd exited ({sshd.process.returncode}): {sshd.log()}")
        try:
            with socket.create_connection(("127.0.0.1", sshd.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    sshd.stop()
    pytest.fail(f"sshd did not listen on 127.0.0.1:{sshd.port}: {sshd.log()}")


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A test sshd on loopback for one test, stopped after it."""
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()
