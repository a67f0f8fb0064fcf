"""The two real ``HostShell``s: OpenSSH to a server, and this machine itself. Does I/O.

``SshShell`` runs the system's OpenSSH client, so the admin's ``~/.ssh/config``, keys, agent
and known_hosts apply as they do on the command line::

    ssh -o BatchMode=yes -o ConnectTimeout=N [-F CONFIG] -- DESTINATION 'ARGV, shell-quoted'

``BatchMode`` makes ssh fail instead of asking (for a password, a passphrase or an unknown host
key); ``--`` ends ssh's options before the destination (which the fleet file validates as
``[user@]host``, never starting with ``-``). The remote login shell gets ``argv`` joined with
POSIX quoting (``shlex.join``), so it runs exactly ``argv``: a value with spaces, quotes or
``;`` stays one argument. Standard input is passed through ssh's standard input, never in an
argument. When ssh itself fails (exit status 255 with its own complaint) the failure is a
``HostShellError`` whose kind and hint say what to do: the host key refused, the admin's key
refused, the host unreachable, the connection timed out. A command that outlives its timeout has
its ssh process (and anything ssh started, a ``ProxyCommand``) killed: a ``TIMEOUT`` error.

``LocalShell`` runs ``argv`` on this machine without a shell (``--local``: the tool runs on the
server it manages). ``open_shell`` picks one per fleet host.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from collections.abc import Sequence

from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.hostshell import (
    CommandResult,
    HostShell,
    HostShellError,
    OpenShell,
)
from lxdgpu_reconcile.site import Site
from lxdgpu_reconcile.state import HostErrorKind

#: Seconds ssh may take to open the connection (``ConnectTimeout``).
CONNECT_TIMEOUT = 10
#: The exit status of ssh when ssh itself failed (not the remote command).
SSH_FAILED = 255
#: Where host programs are (``useradd`` is in /usr/sbin, which a cron job's PATH may lack).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: ssh's own complaints on standard error: (pattern, kind, what it means).
_SSH_FAILURES: tuple[tuple[re.Pattern[str], HostErrorKind, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind, meaning)
    for pattern, kind, meaning in (
        (r"REMOTE HOST IDENTIFICATION HAS CHANGED", HostErrorKind.CERTIFICATE, "host key changed"),
        (r"Host key verification failed", HostErrorKind.CERTIFICATE, "host key refused"),
        (r"Permission denied|Too many authentication failures", HostErrorKind.UNTRUSTED, "key"),
        (r"Connection timed out|Operation timed out", HostErrorKind.TIMEOUT, "timeout"),
        (r"Could not resolve hostname|Name or service not known", HostErrorKind.CONFIG, "name"),
        (
            r"Bad configuration option|Can't open user config file|Bad owner or permissions"
            r"|no argument after keyword|Unsupported option|terminating, \d+ bad configuration",
            HostErrorKind.CONFIG,
            "config",
        ),
        (
            r"Connection refused|No route to host|Network is unreachable|Connection closed by"
            r"|Connection reset by|kex_exchange_identification|Broken pipe",
            HostErrorKind.UNREACHABLE,
            "unreachable",
        ),
    )
)


def _hint(meaning: str, destination: str) -> str:
    host = destination.rpartition("@")[2]
    user = destination.rpartition("@")[0] or "root"
    return {
        "host key changed": f"the host key of {host} is not the one in known_hosts: if the "
        "server was reinstalled, check its new key's fingerprint on its console "
        "(`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), then `ssh-keygen -R "
        f"{host}` and connect once by hand (`ssh {destination} true`) to accept it",
        "host key refused": f"{host}'s host key is not in known_hosts (ssh runs in batch "
        f"mode and never accepts one on its own): connect once by hand (`ssh {destination} "
        "true`) and compare the fingerprint with the server's (`ssh-keygen -lf "
        "/etc/ssh/ssh_host_ed25519_key.pub` on its console), or add `ssh-keyscan -H "
        f"{host}` output to ~/.ssh/known_hosts from a trusted network",
        "key": f"install this machine's public key in {user}'s ~/.ssh/authorized_keys on {host} "
        f"(`ssh-copy-id {destination}`), or name the key in ~/.ssh/config (IdentityFile); "
        "ssh runs in batch mode and asks for no password or passphrase (use ssh-agent)",
        "timeout": f"check that {host} is up and that a firewall lets this machine reach its "
        "ssh port",
        "name": f"check hosts.NAME.ssh ({destination}): the host name must resolve here, or be "
        "a Host of ~/.ssh/config",
        "config": "fix the OpenSSH client configuration named in the message (`ssh -G "
        f"{destination}` shows what ssh reads)",
        "unreachable": f"check that sshd runs on {host} and listens on the port ssh uses "
        f"(`ssh -v {destination} true` shows where it connects)",
    }[meaning]


def ssh_failure(destination: str, stderr: str) -> HostShellError | None:
    """The ``HostShellError`` for ssh's own complaint ``stderr`` (ssh exited 255), or None when
    ``stderr`` is not one of ssh's (the remote command exited 255 itself)."""
    text = " ".join(stderr.split())
    for pattern, kind, meaning in _SSH_FAILURES:
        if pattern.search(text):
            return HostShellError(
                f"ssh {destination}: {_what(meaning)} ({_last_line(stderr)})",
                _hint(meaning, destination),
                kind=kind,
            )
    if "ssh:" in text or "ssh_" in text:
        return HostShellError(
            f"ssh {destination} failed: {_last_line(stderr)}",
            f"run `ssh -v {destination} true` to see where it fails",
            kind=HostErrorKind.ERROR,
        )
    return None


def _what(meaning: str) -> str:
    return {
        "host key changed": "the host key changed",
        "host key refused": "the host key was refused",
        "key": "the server refused this machine's key",
        "timeout": "the connection timed out",
        "name": "the host name is unknown",
        "config": "the ssh configuration is unusable",
        "unreachable": "the host is unreachable",
    }[meaning]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # The last line is ssh's verdict; the warning banner above it is long and says the same.
    return lines[-1] if lines else "no message"


class SshShell:
    """Runs commands on a host through the system's OpenSSH client."""

    def __init__(
        self,
        destination: str,
        *,
        ssh_config: str | None = None,
        connect_timeout: int = CONNECT_TIMEOUT,
        program: str = "ssh",
    ) -> None:
        if not destination or destination.startswith("-"):
            raise ValueError(f"{destination!r} is not an ssh destination ([user@]host)")
        self.destination = destination
        self.ssh_config = ssh_config
        self.connect_timeout = connect_timeout
        self.program = program
        self.via = f"ssh {destination}"

    def command(self, argv: Sequence[str]) -> list[str]:
        """The argument vector of the ssh process that runs ``argv`` on the host."""
        if not argv:
            raise ValueError("no command to run")
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.ssh_config is not None:
            options += ["-F", self.ssh_config]
        return [self.program, *options, "--", self.destination, shlex.join(argv)]

    def run(
        self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60.0
    ) -> CommandResult:
        """Run ``argv`` on the host; raises ``HostShellError`` when ssh cannot reach it, or
        when the command outlives ``timeout`` seconds (the ssh process is killed)."""
        command = self.command(argv)
        try:
            returncode, out, err = _communicate(
                command, stdin, timeout, what=f"`{argv[0]}` over {self.via}"
            )
        except FileNotFoundError:
            raise HostShellError(
                f"the OpenSSH client ({self.program}) is not installed on this machine",
                "install it (`apt-get install openssh-client`), or run the tool on the server "
                "itself with --local",
                kind=HostErrorKind.CONFIG,
            ) from None
        if returncode == SSH_FAILED:
            failure = ssh_failure(self.destination, err.decode(errors="replace"))
            if failure is not None:
                raise failure
        return CommandResult(argv=tuple(argv), returncode=returncode, stdout=out, stderr=err)


class LocalShell:
    """Runs commands on this machine, without a shell (``--local``)."""

    via = "local"

    def run(
        self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60.0
    ) -> CommandResult:
        """Run ``argv`` here; a program that is not installed exits 127, as in a shell."""
        if not argv:
            raise ValueError("no command to run")
        try:
            returncode, out, err = _communicate(
                list(argv), stdin, timeout, what=f"`{argv[0]}` on this machine", env=_local_env()
            )
        except FileNotFoundError:
            returncode, out, err = 127, b"", f"{argv[0]}: command not found\n".encode()
        return CommandResult(argv=tuple(argv), returncode=returncode, stdout=out, stderr=err)


def _local_env() -> dict[str, str]:
    path = os.environ.get("PATH", "")
    missing = [d for d in SYSTEM_PATH.split(":") if d not in path.split(":")]
    return {**os.environ, "PATH": ":".join(p for p in (path, *missing) if p)}


def _communicate(
    command: list[str],
    stdin: bytes,
    timeout: float,
    *,
    what: str,
    env: dict[str, str] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``command`` with ``stdin`` as its input; its exit status and output. A command past
    ``timeout`` seconds is killed with everything it started: ``HostShellError`` (TIMEOUT)."""
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a process group of its own, killed whole on timeout
        )
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise HostShellError(
            f"cannot run {what}: {exc.strerror or exc}",
            "check that this machine can start processes (limits, memory)",
            kind=HostErrorKind.ERROR,
        ) from None
    try:
        out, err = process.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        raise HostShellError(
            f"{what} did not finish within {timeout:g} s and was stopped",
            "check that the host answers (`uptime` there); a slow name service (LDAP) or a "
            "hung mount (NFS) can make getent or stat wait; give more time with --timeout",
            kind=HostErrorKind.TIMEOUT,
        ) from None
    except BaseException:
        _kill(process)
        raise
    return process.returncode, out, err


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill ``process`` and its process group, and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    try:
        process.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # Something outside its process group still holds its output open: leave it.
        process.wait()


def open_shell(fleet: Fleet, site: Site) -> OpenShell:
    """How each host of ``fleet`` is reached for its host layer on ``site``: this machine
    (``--local``), ssh to ``hosts.NAME.ssh`` (with ``site.ssh_config``), or None (not managed).
    The opener's ``member(host, member)`` opens a cluster member's own system
    (``hosts.NAME.cluster.ssh``; ``hostshell.member_shell``)."""
    return ShellOpener(fleet, site)


class ShellOpener:
    """Opens the shell of a host's own system (called with the host's name), or of a cluster
    member's (``member``)."""

    def __init__(self, fleet: Fleet, site: Site) -> None:
        self.fleet = fleet
        self.site = site

    def __call__(self, host: str) -> HostShell | None:
        if self.site.local:
            return LocalShell()
        spec = self.fleet.hosts.get(host)
        if spec is None or spec.ssh is None:
            return None
        return SshShell(spec.ssh, ssh_config=self.site.ssh_config)

    def member(self, host: str, member: str) -> HostShell | None:
        """Member ``member`` of cluster ``host``: ssh to ``hosts.HOST.cluster.ssh.MEMBER``; None
        without one, and with ``--local`` (this machine is at most one of the members: a
        cluster's host layer is reached over ssh only)."""
        spec = self.fleet.hosts.get(host)
        cluster = spec.cluster if spec is not None else None
        if self.site.local or cluster is None or member not in cluster.ssh:
            return None
        return SshShell(cluster.ssh[member], ssh_config=self.site.ssh_config)
