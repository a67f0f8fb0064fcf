"""Against real LXD: profile changes that reach unmanaged containers, and copies of managed ones.

One lab of one host, in order: LXD's ``default`` profile, declared in the fleet, is used by a
running container the tool does not manage, so the takeover is held until ``--touch-unmanaged``;
then an ``lxc copy`` of a user's container (every ``user.lxdgpu.*`` tag copied) survives
``apply --prune`` and is named in a note, while the user's own container is still updated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from lxdgpu_reconcile.cli import app
from tests.integration.conftest import LabHandle, bring_down, bring_up, new_lab_dir

pytestmark = pytest.mark.lxd

FLEET = """\
version: 1
defaults:
  profiles: [default]
  cpu: 1
hosts:
  safe01:
    endpoint: https://192.0.2.31:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/safe01.crt
image_servers:
  lab-images:
    url: https://images.example.net/
    protocol: simplestreams
profiles:
  default:
    config:
      boot.autostart: "true"
    devices:
      matlab: {type: disk, source: /usr/local/MATLAB, path: /usr/local/MATLAB, readonly: "true"}
      root: {type: disk, path: /, pool: default}
templates:
  base:
    alias: template-busybox
    base: lab-images:busybox
    build_host: safe01
users:
  tom: {host: safe01, template: base, uid: 1003, gid: 1003}
"""


class Lab:
    def __init__(self, handle: LabHandle) -> None:
        self.handle = handle

    def cli(self, *args: str) -> Result:
        argv = [*args, "-f", str(self.handle.fleet_path), "--lab", str(self.handle.dir)]
        return CliRunner().invoke(app, argv, catch_exceptions=False)

    def plan(self, *args: str) -> dict[str, Any]:
        result = self.cli("plan", "--format", "json", *args)
        assert result.exit_code in (0, 2), result.output
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def lxc(self, *args: str) -> str:
        return self.handle.lxc("safe01", *args).stdout

    def config(self, name: str, *extra: str) -> dict[str, Any]:
        data: dict[str, Any] = yaml.safe_load(self.lxc("config", "show", name, *extra))
        return data

    def names(self) -> set[str]:
        return {i["name"] for i in json.loads(self.lxc("list", "--format", "json"))}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    fleet_path = tmp_path_factory.mktemp("safety") / "fleet.yaml"
    fleet_path.write_text(FLEET)
    lab_dir = new_lab_dir()
    try:
        yield Lab(bring_up(fleet_path, lab_dir))
    finally:
        bring_down(lab_dir)


def _actions(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for h in plan["hosts"] for a in h["actions"]}


def test_default_profile_change_reaching_an_unmanaged_container_waits_for_consent(
    lab: Lab,
) -> None:
    lab.lxc("launch", "busybox", "stray")
    plan = _actions(lab.plan())
    write = plan["safe01/profile/default/profile-write"]
    assert write["hold"] == "unmanaged-users"
    assert "(stray)" in write["pending"] and "--touch-unmanaged" in write["pending"]
    create = plan["safe01/instance/tom-container/create"]
    assert create["hold"] == "dependency"
    assert "reaches containers lxdgpu-reconcile does not manage" in create["pending"]

    result = lab.cli("apply", "--yes")
    assert result.exit_code == 0, result.output
    assert "reaches containers lxdgpu-reconcile does not manage (untagged): stray" in (
        result.output
    )
    assert "matlab" not in lab.config("stray", "--expanded")["devices"]
    default = yaml.safe_load(lab.lxc("profile", "show", "default"))
    assert "user.lxdgpu.managed" not in default["config"]
    assert "tom-container" not in lab.names()

    result = lab.cli("apply", "--yes", "--touch-unmanaged")
    assert result.exit_code == 0, result.output
    assert "matlab" in lab.config("stray", "--expanded")["devices"]  # the admin said so
    assert "tom-container" in lab.names()
    assert lab.cli("plan", "--detailed-exitcode").exit_code == 0
    lab.lxc("delete", "--force", "stray")


def test_a_copy_of_a_managed_container_survives_prune_and_is_named(lab: Lab) -> None:
    tom = lab.config("tom-container")
    assert tom["config"]["user.lxdgpu.created-as"] == "safe01/tom-container"
    lab.lxc("copy", "tom-container", "tom-backup")
    lab.lxc("config", "set", "tom-backup", "security.protection.delete", "false")
    backup = lab.config("tom-backup")
    assert backup["config"]["user.lxdgpu.managed"] == "true"  # lxc copy copied the tags
    assert backup["config"]["user.lxdgpu.created-as"] == "safe01/tom-container"

    result = lab.cli("apply", "--yes", "--prune")
    assert result.exit_code == 0, result.output
    assert "tom-backup is a copy of safe01/tom-container" in result.output
    assert "tom-backup" in lab.names()

    # The real container is still managed: a drift is corrected there, not in the copy.
    lab.lxc("config", "set", "tom-container", "limits.cpu", "2")
    lab.lxc("config", "set", "tom-backup", "limits.cpu", "2")
    result = lab.cli("apply", "--yes", "--prune")
    assert result.exit_code == 0, result.output
    assert lab.config("tom-container")["config"]["limits.cpu"] == "1"
    assert lab.config("tom-backup")["config"]["limits.cpu"] == "2"
    assert "tom-backup" in lab.names()
    assert lab.cli("plan", "--detailed-exitcode", "--prune").exit_code == 0
