"""``host bootstrap`` against a real lab daemon reached over SSH (the lab host's own sshd, whose
sessions talk to that host's LXD): a daemon with no https listener that does not trust the
admin's certificate becomes one that ``plan`` reads over pinned https; the pinned certificate is
the daemon's; a second run changes nothing.

The admin's side is a fleet folder of its own, with a fresh client certificate the lab never
trusted, pointed at the lab daemon's loopback address and port.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile import service
from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.fleet.loading import load_fleet
from lxdgpu_reconcile.site import Site
from tests.helpers import fingerprint, self_signed
from tests.integration.conftest import LabHandle

pytestmark = pytest.mark.lxd

runner = CliRunner()

LAB_FLEET = """
version: 1
hosts:
  boot1:
    endpoint: https://192.0.2.31:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/boot1.crt
    ssh: boot1
"""


def _admin_fleet(folder: Path, *, port: int, alias: str) -> Path:
    """A fleet folder as an admin has it before bootstrapping: the admin's certificate and key,
    no server certificate yet."""
    self_signed(folder / "certs", "admin")
    path = folder / "fleet.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            hosts:
              boot1:
                endpoint: https://127.0.0.1:{port}
                client_cert: certs/admin.crt
                client_key: certs/admin.key
                server_cert: certs/boot1.crt
                ssh: {alias}
            """
        )
    )
    return path


def test_bootstrap_over_ssh_makes_plan_work_over_pinned_https(
    lab_factory: Callable[[str], LabHandle], tmp_path: Path
) -> None:
    handle = lab_factory(LAB_FLEET)
    lab_host = handle.state.hosts["boot1"]
    ssh_config = getattr(handle.state, "ssh_config", None)
    alias = getattr(lab_host, "ssh_alias", None)
    if not ssh_config or not alias:
        pytest.fail("the lab gives its hosts no sshd (LabState.ssh_config, HostLab.ssh_alias)")
    folder = tmp_path / "admin"
    (folder / "certs").mkdir(parents=True)
    fleet_path = _admin_fleet(folder, port=lab_host.port, alias=alias)
    admin_fp = fingerprint(str(folder / "certs" / "admin.crt"))
    # The daemon as a freshly installed server: no https listener, the admin's cert unknown.
    handle.lxc("boot1", "config", "unset", "core.https_address")
    assert handle.lxc("boot1", "config", "get", "core.https_address").stdout.strip() == ""
    assert admin_fp not in handle.lxc("boot1", "config", "trust", "list", "-f", "csv").stdout
    command = ["host", "bootstrap", "boot1", "-f", str(fleet_path), "--ssh-config", ssh_config]

    refused = runner.invoke(app, command)  # no terminal to ask on, no --yes
    assert refused.exit_code == 1, refused.output
    assert "run again with --yes" in refused.stderr
    assert not (folder / "certs" / "boot1.crt").exists()
    assert handle.lxc("boot1", "config", "get", "core.https_address").stdout.strip() == ""

    first = runner.invoke(app, [*command, "--yes"])

    assert first.exit_code == 0, first.output
    assert f"(ssh {alias})" in first.stdout
    pinned = folder / "certs" / "boot1.crt"
    assert fingerprint(str(pinned)) == fingerprint(lab_host.server_cert)
    assert fingerprint(lab_host.server_cert) in first.stdout  # shown before it was written
    listening = handle.lxc("boot1", "config", "get", "core.https_address").stdout.strip()
    assert listening == f"127.0.0.1:{lab_host.port}"
    assert admin_fp[:12] in handle.lxc("boot1", "config", "trust", "list", "-f", "csv").stdout
    assert "checked: https://127.0.0.1:" in first.stdout

    # plan reads the host over pinned https with the admin's certificate (and its host layer
    # over the lab's ssh).
    fleet = load_fleet(fleet_path).fleet
    assert fleet is not None
    loaded = service.Loaded(fleet=fleet, site=Site(ssh_config=ssh_config), path=fleet_path)
    planned = service.plan(loaded, service.PlanRequest(), timeout=30)
    assert planned.snapshot.hosts["boot1"].error is None
    assert planned.plan.all_errors == ()

    inode = pinned.stat().st_ino
    second = runner.invoke(app, [*command, "--yes"])

    assert second.exit_code == 0, second.output
    assert "host boot1: nothing to change" in second.stdout
    assert "done:" not in second.stdout
    assert pinned.stat().st_ino == inode
    trusted = handle.lxc("boot1", "config", "trust", "list", "-f", "csv").stdout
    assert trusted.count(admin_fp[:12]) == 1
