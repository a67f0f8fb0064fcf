"""How the tool runs commands on a host's own system (the host layer): the seam, no transport.

A ``HostShell`` runs one program with its arguments (an argument vector, never a shell string
built from fleet data) on one host and returns what it printed. ``observe.transport`` has the
two real ones: OpenSSH to a server, and this machine itself (``--local``). Tests may pass their
own. A shell that cannot reach its host raises ``HostShellError``; a command that runs and
fails is a ``CommandResult`` with its exit status, for the caller to judge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.state import HostErrorKind


@dataclass(frozen=True)
class CommandResult:
    """What one command did: its exit status and its output, as bytes."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def error_text(self) -> str:
        """The command's complaint in one line (its stderr, else its stdout)."""
        text = (self.stderr or self.stdout).decode(errors="replace").strip()
        return " ".join(text.split()) or f"exit status {self.returncode}"


class HostShellError(ToolError):
    """The host's system could not be reached (not: a command on it failed)."""

    def __init__(self, message: str, hint: str = "", *, kind: HostErrorKind) -> None:
        super().__init__(message, hint)
        self.kind = kind


class HostShell(Protocol):
    """Runs commands on one host's own system."""

    #: How the host is reached, for messages: "ssh root@server01", "local".
    via: str

    def run(
        self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60.0
    ) -> CommandResult:
        """Run ``argv`` (``argv[0]`` found on the host's PATH) with ``stdin`` as its input."""
        ...


#: Opens the shell of a host by name, or returns None when the host layer of that host is not
#: managed (no ``ssh:`` and no ``--local``).
OpenShell = Callable[[str], HostShell | None]


def member_shell(opener: OpenShell | None, host: str, member: str) -> HostShell | None:
    """The shell of member ``member`` of cluster host ``host``: ``opener.member(host, member)``
    when the opener has that method (``observe.transport.open_shell``'s has), else None (the
    member's host layer is not managed)."""
    method = getattr(opener, "member", None)
    if not callable(method):
        return None
    shell: HostShell | None = method(host, member)
    return shell
