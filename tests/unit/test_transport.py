"""The host shells (``observe.transport``): the ssh command line, quoting, ssh's own failures as
``HostShellError``s with a kind and a hint, timeouts, ``--local``, and which shell each host
gets. ssh itself is stood in for by a small script (tests/integration/test_ssh.py runs the real
one against a real sshd)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.hostshell import HostShellError
from lxdgpu_reconcile.observe.transport import (
    LocalShell,
    SshShell,
    open_shell,
    ssh_failure,
)
from lxdgpu_reconcile.site import Site
from lxdgpu_reconcile.state import HostErrorKind

HOSTILE = ["printf", "%s\\n", "a b", "it's", 'say "hi"', "x; touch /tmp/pwned", "$(id)", "`id`", ""]


def test_the_ssh_command_is_batch_mode_with_a_timeout_and_ends_options_before_the_host() -> None:
    shell = SshShell("root@server01", connect_timeout=7)

    command = shell.command(["getent", "passwd", "tom"])

    assert command == [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=7",
        "--",
        "root@server01",
        "getent passwd tom",
    ]
    assert shell.via == "ssh root@server01"


def test_an_ssh_config_file_is_given_with_f() -> None:
    command = SshShell("server01", ssh_config="/l/ssh/config").command(["true"])

    assert command[command.index("-F") + 1] == "/l/ssh/config"
    assert command.index("-F") < command.index("--")


def test_a_destination_that_would_be_an_option_is_refused() -> None:
    with pytest.raises(ValueError):
        SshShell("-oProxyCommand=touch /tmp/x")


def test_argv_reaches_the_remote_shell_as_the_same_arguments() -> None:
    remote = SshShell("server01").command(HOSTILE)[-1]

    assert shlex.split(remote) == HOSTILE
    # What the remote login shell does with it: runs exactly HOSTILE, each value one argument.
    done = subprocess.run(["sh", "-c", remote], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:-1] == HOSTILE[2:]


def fake_ssh(tmp_path: Path, body: str) -> str:
    """A stand-in for ``ssh``: records its arguments, then runs ``body`` (sh)."""
    path = tmp_path / "ssh"
    path.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do printf "%s\\n" "$a"; done > {tmp_path}/argv\n'
        f"echo $$ > {tmp_path}/pid\n"
        f"{body}\n"
    )
    path.chmod(0o755)
    return str(path)


def test_the_remote_command_runs_with_its_input_on_stdin_never_in_argv(tmp_path: Path) -> None:
    # The stand-in does what sshd does: the last argument to a shell, stdin passed on.
    shell = SshShell("server01", program=fake_ssh(tmp_path, 'for a; do :; done; exec sh -c "$a"'))

    result = shell.run(["sh", "-c", "cat; echo; echo $1", "x", "a b;c"], stdin=b"s3cret-pw")

    assert result.ok and result.stdout == b"s3cret-pw\na b;c\n"
    assert "s3cret-pw" not in (tmp_path / "argv").read_text()


def test_a_failing_remote_command_is_a_result_not_an_error(tmp_path: Path) -> None:
    shell = SshShell("server01", program=fake_ssh(tmp_path, "echo 'no such user' >&2; exit 2"))

    result = shell.run(["getent", "passwd", "tom"])

    assert result.returncode == 2 and result.error_text() == "no such user"


SSH_SAYS = {
    "Host key verification failed.": (HostErrorKind.CERTIFICATE, "known_hosts"),
    "@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
    "Host key verification failed.": (HostErrorKind.CERTIFICATE, "ssh-keygen -R server01"),
    "root@server01: Permission denied (publickey).": (HostErrorKind.UNTRUSTED, "ssh-copy-id"),
    "ssh: connect to host server01 port 22: Connection refused": (
        HostErrorKind.UNREACHABLE,
        "sshd runs on server01",
    ),
    "ssh: connect to host server01 port 22: No route to host": (
        HostErrorKind.UNREACHABLE,
        "sshd",
    ),
    "ssh: connect to host server01 port 22: Connection timed out": (
        HostErrorKind.TIMEOUT,
        "firewall",
    ),
    "ssh: Could not resolve hostname server01: Name or service not known": (
        HostErrorKind.CONFIG,
        "hosts.NAME.ssh",
    ),
    "/l/ssh/config: line 3: Bad configuration option: hostnme": (HostErrorKind.CONFIG, "ssh -G"),
    "kex_exchange_identification: Connection closed by remote host": (
        HostErrorKind.UNREACHABLE,
        "sshd",
    ),
}


@pytest.mark.parametrize("stderr", SSH_SAYS, ids=lambda s: s.splitlines()[-1][:40])
def test_ssh_failures_have_a_kind_and_say_what_to_do(tmp_path: Path, stderr: str) -> None:
    kind, hint = SSH_SAYS[stderr]
    body = f"cat >&2 <<'EOF'\n{stderr}\nEOF\nexit 255"
    shell = SshShell("root@server01", program=fake_ssh(tmp_path, body))

    with pytest.raises(HostShellError) as caught:
        shell.run(["true"])

    assert caught.value.kind is kind
    assert caught.value.message.startswith("ssh root@server01: ")
    assert stderr.splitlines()[-1] in caught.value.message
    assert hint in caught.value.hint


def test_exit_255_of_the_remote_command_itself_is_its_result() -> None:
    assert ssh_failure("server01", "") is None
    assert ssh_failure("server01", "useradd: something odd") is None
    unknown = ssh_failure("server01", "ssh: something new went wrong")
    assert unknown is not None and unknown.kind is HostErrorKind.ERROR


def test_no_ssh_client_is_a_config_error_with_the_package_to_install(tmp_path: Path) -> None:
    shell = SshShell("server01", program=str(tmp_path / "no-ssh"))

    with pytest.raises(HostShellError) as caught:
        shell.run(["true"])

    assert caught.value.kind is HostErrorKind.CONFIG
    assert "openssh-client" in caught.value.hint


def test_a_command_past_its_timeout_is_killed_with_what_ssh_started(tmp_path: Path) -> None:
    # The stand-in starts a child (as a ProxyCommand would) and waits for it.
    body = f"sleep 600 & echo $! > {tmp_path}/child; wait"
    shell = SshShell("server01", program=fake_ssh(tmp_path, body))

    with pytest.raises(HostShellError) as caught:
        shell.run(["true"], timeout=0.5)

    assert caught.value.kind is HostErrorKind.TIMEOUT
    assert "--timeout" in caught.value.hint
    for name in ("pid", "child"):
        pid = int((tmp_path / name).read_text())
        assert not _alive(pid), f"{name} {pid} still runs"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie not yet reaped by init counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


def test_the_local_shell_runs_argv_without_a_shell() -> None:
    result = LocalShell().run(HOSTILE, stdin=b"")

    assert result.ok and result.stdout.decode().split("\n")[:-1] == HOSTILE[2:]
    assert LocalShell().run(["cat"], stdin=b"data").stdout == b"data"
    assert LocalShell.via == "local"


def test_a_missing_local_program_exits_127_as_in_a_shell() -> None:
    result = LocalShell().run(["lxdgpu-no-such-program", "x"])

    assert result.returncode == 127 and "command not found" in result.error_text()


def test_the_local_shell_finds_system_programs_without_sbin_on_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")

    result = LocalShell().run(["sh", "-c", 'command -v sshd || echo "$PATH"'])

    assert result.stdout.decode().strip() in ("/usr/sbin/sshd", "/sbin/sshd")


def test_the_local_shell_times_out(tmp_path: Path) -> None:
    with pytest.raises(HostShellError) as caught:
        LocalShell().run(["sleep", "600"], timeout=0.3)

    assert caught.value.kind is HostErrorKind.TIMEOUT


FLEET = Fleet.model_validate(
    {
        "version": 1,
        "hosts": {
            "server01": {"endpoint": "unix:///l/1.sock", "ssh": "root@server01.lab"},
            "server02": {"endpoint": "unix:///l/2.sock"},
        },
    }
)


def test_each_host_gets_ssh_to_its_destination_or_nothing() -> None:
    opener = open_shell(FLEET, Site(ssh_config="/l/ssh_config"))

    shell = opener("server01")
    assert isinstance(shell, SshShell)
    assert shell.destination == "root@server01.lab" and shell.ssh_config == "/l/ssh_config"
    assert opener("server02") is None
    assert opener("server09") is None


def test_local_puts_every_host_layer_on_this_machine() -> None:
    opener = open_shell(FLEET, Site(local=True))

    assert isinstance(opener("server01"), LocalShell)
    assert isinstance(opener("server02"), LocalShell)


# --- --local --------------------------------------------------------------------------------------

FLEET_TEXT = """\
version: 1
hosts:
  server01: {endpoint: "unix:///nonexistent/unix.socket", ssh: root@server01}
"""


def test_local_sets_the_site_and_is_refused_in_the_lab(tmp_path: Path) -> None:
    from lxdgpu_reconcile import service

    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET_TEXT)
    read = service.read_fleet(path, certs=False)

    assert service.locate(read, None, local=True).site.local
    assert not service.locate(read, None).site.local
    assert service.locate_offline(read, None, local=True).site.local
    with pytest.raises(service.UnusableLab, match="--local with --lab"):
        service.locate(read, tmp_path / "lab", local=True)


@pytest.mark.parametrize("command", ["plan", "apply", "reconcile", "status"])
def test_the_host_commands_have_local(command: str) -> None:
    from typer.testing import CliRunner

    from lxdgpu_reconcile.cli import app

    result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)

    text = " ".join(result.output.replace("│", " ").split())
    assert "--local" in text and "instead of over SSH" in text
