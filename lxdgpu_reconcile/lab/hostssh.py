"""An sshd per lab host, in that host's namespace, and the OpenSSH client files that reach them.

Each lab host is reached over SSH exactly as a real host is: the tool's transport runs
``ssh -F <lab>/ssh/config HOST ...`` and lands, as root, in that host's mount namespace (its own
``/etc`` and ``/home``, see ``lab.hostsys``) with ``LXD_DIR`` set to that host's daemon, so that
``lxc`` and ``lxd`` over SSH talk to it.

The text of the configuration files (``sshd_config``, ``client_config``, ``known_hosts``) is
computed by pure functions; the rest does I/O (``ssh-keygen``, starting and stopping sshd).
Each sshd listens on 127.0.0.1 only, accepts only root with the lab's own key (no password, no
PAM), and writes its pid and log under the lab directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile.lab import hostsys
from lxdgpu_reconcile.lab.faults import LabError
from lxdgpu_reconcile.lab.system import pid_gone, run

SSHD = "/usr/sbin/sshd"
#: sshd's privilege separation directory; this machine's /run is every namespace's /run.
PRIVSEP_DIR = Path("/run/sshd")
READY_TIMEOUT = 15.0
#: What an alias in the client configuration may be (also a valid ``hosts.X.ssh``).
_ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class SshdFiles:
    """One lab host's sshd files, all in ``directory``."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.directory / "authorized_keys"

    @property
    def pid_file(self) -> Path:
        return self.directory / "sshd.pid"

    @property
    def log(self) -> Path:
        return self.directory / "sshd.log"


def alias_of(host: str) -> str:
    """The name of ``host`` in the lab's client configuration: the host's own name when ssh can
    use it as one, else a stable stand-in."""
    if _ALIAS_RE.match(host):
        return host
    return "lab-" + hashlib.sha1(host.encode()).hexdigest()[:12]


def _quoted(value: str) -> str:
    if any(c in value for c in '"\n%') or not value:
        raise LabError(f"{value!r} cannot be written into an OpenSSH configuration file")
    return f'"{value}"'


def sshd_config(*, port: int, files: SshdFiles, lxd_dir: str) -> str:
    """sshd_config for a lab host: root with the lab's key only, on 127.0.0.1:``port``."""
    lines = [
        "# Written by `lxdgpu-reconcile lab up`: the sshd of one lab host, in its namespace.",
        f"ListenAddress 127.0.0.1:{port}",
        f"HostKey {_quoted(str(files.host_key))}",
        f"PidFile {_quoted(str(files.pid_file))}",
        f"AuthorizedKeysFile {_quoted(str(files.authorized_keys))}",
        "AuthorizedPrincipalsFile none",
        "AllowUsers root",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The lab directory sits below /var/tmp (mode 1777), which StrictModes refuses.
        "StrictModes no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "PermitTunnel no",
        "PrintMotd no",
        "PrintLastLog no",
        "Subsystem sftp internal-sftp",
        f"SetEnv {_quoted('LXD_DIR=' + lxd_dir)}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ClientEntry:
    """One lab host as the client configuration names it."""

    alias: str
    port: int
    #: The host's public key line (``ssh-ed25519 AAAA... comment``).
    host_key: str


def client_config(entries: Iterable[ClientEntry], *, identity: Path, known_hosts: Path) -> str:
    """``ssh -F`` configuration with a ``Host`` block per lab host."""
    blocks = ["# Written by `lxdgpu-reconcile lab up`: ssh -F THIS-FILE HOST reaches a lab host."]
    for entry in entries:
        blocks.append(
            "\n".join(
                [
                    f"Host {entry.alias}",
                    "  HostName 127.0.0.1",
                    f"  Port {entry.port}",
                    "  User root",
                    f"  HostKeyAlias {entry.alias}",
                    f"  IdentityFile {_quoted(str(identity))}",
                    "  IdentitiesOnly yes",
                    f"  UserKnownHostsFile {_quoted(str(known_hosts))}",
                    "  GlobalKnownHostsFile /dev/null",
                    "  StrictHostKeyChecking yes",
                    "  CheckHostIP no",
                    "  UpdateHostKeys no",
                    "  BatchMode yes",
                ]
            )
        )
    return "\n\n".join(blocks) + "\n"


def known_hosts(entries: Iterable[ClientEntry]) -> str:
    """known_hosts lines: each host's key under its alias (``HostKeyAlias``)."""
    lines = []
    for entry in entries:
        kind, key = entry.host_key.split()[:2]
        lines.append(f"{entry.alias} {kind} {key}")
    return "".join(f"{line}\n" for line in lines)


def ensure_key(path: Path, comment: str) -> str:
    """An ed25519 key pair at ``path`` (no passphrase), made once; its public key line."""
    public = path.with_name(path.name + ".pub")
    if not (path.exists() and public.exists()):
        path.unlink(missing_ok=True)
        public.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            what=f"ssh-keygen {path}",
        )
    return public.read_text().strip()


def write_files(files: SshdFiles, *, port: int, lxd_dir: str, client_key: str) -> bool:
    """The host key, authorized_keys and sshd_config of one host; True when the configuration
    or the authorized key changed (a running sshd must restart to use them)."""
    files.directory.mkdir(parents=True, exist_ok=True)
    files.directory.chmod(0o700)
    ensure_key(files.host_key, "lab host key")
    changed = False
    for path, text, mode in (
        (files.authorized_keys, client_key + "\n", 0o600),
        (files.config, sshd_config(port=port, files=files, lxd_dir=lxd_dir), 0o600),
    ):
        if not path.exists() or path.read_text() != text:
            fileio.write_atomic(path, text, mode=mode)
            changed = True
    return changed


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_sshd_of(pid: int | None, files: SshdFiles) -> bool:
    """Whether ``pid`` is a live sshd started with ``files``' configuration."""
    if not pid or pid_gone(pid):
        return False
    argv = _cmdline(pid)
    # sshd rewrites its command line: "sshd: /usr/sbin/sshd -f CONFIG ... [listener] ...".
    text = " ".join(argv)
    return text.startswith(("sshd", SSHD)) and f" -f {files.config} " in f"{text} "


def running(pid: int | None, files: SshdFiles, daemon_pid: int | None) -> bool:
    """Whether ``pid`` is this host's sshd and lives in the namespace of ``daemon_pid``."""
    namespace = hostsys.namespace_of(daemon_pid)
    return (
        namespace is not None and is_sshd_of(pid, files) and hostsys.namespace_of(pid) == namespace
    )


def _read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            conn.settimeout(2)
            return conn.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start(files: SshdFiles, *, port: int, daemon_pid: int, system: Path, name: str) -> int:
    """Start sshd in the namespace of ``daemon_pid`` (which must see ``system``); its pid once
    it answers on 127.0.0.1:``port``."""
    if not hostsys.sees_system(daemon_pid, system):
        raise LabError(
            f"{name}: its LXD daemon (pid {daemon_pid}) does not run in the host's own "
            "namespace; run `lxdgpu-reconcile lab up` again"
        )
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    files.pid_file.unlink(missing_ok=True)
    sshd = [SSHD, "-f", str(files.config), "-E", str(files.log)]
    run(
        hostsys.enter_argv(daemon_pid, [SSHD, "-t", "-f", str(files.config)]),
        what=f"{name}: sshd -t",
    )
    run(hostsys.enter_argv(daemon_pid, sshd), what=f"{name}: start sshd", timeout=30)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        pid = _read_pid(files.pid_file)
        if pid is not None and is_sshd_of(pid, files) and _answers(port):
            return pid
        time.sleep(0.1)
    raise LabError(
        f"{name}: sshd did not answer on 127.0.0.1:{port} (another program may hold the port; "
        f"see {files.log}); run `lxdgpu-reconcile lab down` and `lab up` again"
    )


def stop(pid: int | None, files: SshdFiles) -> None:
    """Stop the sshd ``pid`` when it is this host's (sessions end with the namespace)."""
    for candidate in {pid, _read_pid(files.pid_file)}:
        if candidate is None or not is_sshd_of(candidate, files):
            continue
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(candidate, sig)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not pid_gone(candidate):
                time.sleep(0.1)
            if pid_gone(candidate):
                break
    files.pid_file.unlink(missing_ok=True)
