"""The lab's sshd and ssh client files, and the checks that keep lab hosts' systems apart
(no daemon; the real sshds are in tests/integration/test_lab_hosts.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.lab import LabError, hostssh, hostsys
from lxdgpu_reconcile.lab.lifecycle import check_lab_dir
from lxdgpu_reconcile.site import Site

FILES = hostssh.SshdFiles(Path("/var/tmp/lab/sys/server01/sshd"))


def _options(text: str) -> dict[str, str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return dict(line.split(" ", 1) for line in lines if not line.startswith("#"))


def test_the_sshd_takes_root_with_the_labs_key_only_on_loopback() -> None:
    options = _options(
        hostssh.sshd_config(port=40022, files=FILES, lxd_dir="/var/tmp/lab/hosts/server01")
    )
    assert options["ListenAddress"] == "127.0.0.1:40022"
    assert options["AuthorizedKeysFile"] == f'"{FILES.authorized_keys}"'
    assert options["HostKey"] == f'"{FILES.host_key}"'
    assert options["PidFile"] == f'"{FILES.pid_file}"'
    assert options["PermitRootLogin"] == "prohibit-password"
    assert options["AllowUsers"] == "root"
    assert options["UsePAM"] == "no"
    assert options["PasswordAuthentication"] == "no"
    assert options["KbdInteractiveAuthentication"] == "no"
    # lxc and lxd over SSH talk to this host's daemon.
    assert options["SetEnv"] == '"LXD_DIR=/var/tmp/lab/hosts/server01"'


def test_a_value_that_would_break_the_configuration_is_refused() -> None:
    for bad in ('/var/tmp/la"b', "/var/tmp/%u", "/var/tmp/a\nPermitRootLogin yes"):
        with pytest.raises(LabError, match="cannot be written into an OpenSSH configuration"):
            hostssh.sshd_config(port=1, files=FILES, lxd_dir=bad)


ENTRIES = [
    hostssh.ClientEntry("server01", 40022, "ssh-ed25519 AAAAkey1 lab host key\n"),
    hostssh.ClientEntry("server02", 40023, "ssh-ed25519 AAAAkey2 lab host key"),
]


def test_the_client_configuration_has_a_strict_block_per_host() -> None:
    text = hostssh.client_config(
        ENTRIES, identity=Path("/lab/ssh/id_ed25519"), known_hosts=Path("/lab/ssh/known_hosts")
    )
    blocks = {
        block.splitlines()[0]: _options("\n".join(block.splitlines()[1:]))
        for block in text.split("\n\n")
        if block.startswith("Host ")
    }
    assert list(blocks) == ["Host server01", "Host server02"]
    one = blocks["Host server01"]
    assert one["HostName"] == "127.0.0.1" and one["Port"] == "40022" and one["User"] == "root"
    assert one["IdentityFile"] == '"/lab/ssh/id_ed25519"' and one["IdentitiesOnly"] == "yes"
    assert one["UserKnownHostsFile"] == '"/lab/ssh/known_hosts"'
    assert one["StrictHostKeyChecking"] == "yes" and one["BatchMode"] == "yes"
    assert one["HostKeyAlias"] == "server01"
    assert blocks["Host server02"]["Port"] == "40023"


def test_known_hosts_lists_each_host_key_under_its_alias() -> None:
    assert hostssh.known_hosts(ENTRIES) == (
        "server01 ssh-ed25519 AAAAkey1\nserver02 ssh-ed25519 AAAAkey2\n"
    )


def test_a_host_name_ssh_cannot_use_gets_a_stable_alias() -> None:
    assert hostssh.alias_of("server01") == "server01"
    odd = hostssh.alias_of("gpu box")
    assert odd.startswith("lab-") and odd == hostssh.alias_of("gpu box") != "gpu box"
    assert hostssh.alias_of("-oProxyCommand=x").startswith("lab-")


def test_a_lab_dir_that_cannot_go_into_the_ssh_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="choose a --dir of letters"):
        check_lab_dir(Path("/var/tmp/my lab"), ("server01",))
    with pytest.raises(LabError, match="choose a --dir of letters"):
        check_lab_dir(Path("/var/tmp/%h"), ("server01",))


def test_a_lab_dir_that_a_lab_host_would_hide_is_refused() -> None:
    for hidden in ("/home/lab", "/etc/lab", "/var/lib/lxdgpu-reconcile"):
        with pytest.raises(LabError, match="each lab host has one of its own"):
            check_lab_dir(Path(hidden), ("server01",))


def test_nothing_is_ever_entered_or_killed_in_this_machines_namespace() -> None:
    # This process lives in the machine's own namespace: it never counts as a lab host's.
    assert hostsys.processes_in(hostsys.own_namespace()) == []
    assert hostsys.sees_system(os.getpid(), Path("/")) is False
    hostsys.end_namespace(hostsys.own_namespace())  # a no-op, or this test would not finish


def test_a_site_without_own_homes_roots_homes_like_other_paths() -> None:
    site = Site(host_root="/lab/root")
    assert site.home_dir("/home/tom") == "/lab/root/home/tom"
    assert Site().home_dir("/home/tom") == "/home/tom"
    assert Site(host_root="/lab/root", own_homes=True).home_dir("/home/tom") == "/home/tom"


runner = CliRunner()


def test_lab_exec_without_a_lab_says_to_bring_it_up(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lab", "exec", "--dir", str(tmp_path), "server01", "--", "id"])
    assert result.exit_code == 1
    assert "lab up -f FLEET --dir" in result.output
    assert "Traceback" not in result.output


def test_lab_exec_help_has_an_example() -> None:
    result = runner.invoke(app, ["lab", "exec", "--help"])
    assert result.exit_code == 0
    assert "lab exec server02 -- getent passwd tom" in result.output
