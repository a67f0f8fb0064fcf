"""The status page from a hand-built snapshot: JSON shape, rows and the terminal table (no LXD)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.cli import status as status_cli
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.report.status import status_json, status_report, status_table
from lxdgpu_reconcile.state import (
    Address,
    FleetSnapshot,
    GpuObs,
    HostError,
    HostErrorKind,
    HostSnapshot,
    ImageObs,
    InstanceObs,
)

FP = "be894700b9c1c846932a9a25eae373223300049642eadf60cfc83e4e7ddef3f4"

FLEET = Fleet.model_validate(
    {
        "version": 1,
        "hosts": {
            "server01": {"endpoint": "unix:///var/lib/lxd/unix.socket", "gpus": 2},
            "server02": {"endpoint": "unix:///srv/lxd2/unix.socket"},
        },
        "templates": {
            "desk": {"alias": "template-desk", "base": "busybox", "build_host": "server01"},
            "lab": {"alias": "busybox", "base": "busybox", "build_host": "server01"},
        },
        "users": {
            "alice": {"host": "server01", "template": "desk", "uid": 1001, "gid": 1001},
            "bob": {"host": "server01", "template": "desk", "uid": 1002, "gid": 1002},
            "carol": {
                "host": "server02",
                "template": "desk",
                "uid": 1003,
                "gid": 1003,
                "container": "carol-box",
            },
        },
    }
)

ALICE = InstanceObs(
    name="alice-container",
    status="Running",
    profiles=("default", "lan"),
    config={
        "user.lxdgpu.managed": "true",
        "user.lxdgpu.user": "alice",
        "volatile.base_image": FP,
    },
    expanded_config={"limits.cpu": "24", "user.lxdgpu.managed": "true"},
    addresses=(
        Address(
            interface="eth0", family="inet", address="192.0.2.10", netmask="24", scope="global"
        ),
        Address(
            interface="eth0", family="inet6", address="2001:db8::10", netmask="64", scope="global"
        ),
        Address(interface="eth0", family="inet6", address="fe80::1", netmask="64", scope="link"),
        Address(interface="lo", family="inet", address="127.0.0.1", netmask="8", scope="local"),
    ),
)
#: Made by hand with lxc: no marker, only the user tag, from an image that is gone.
OUT_OF_BAND = InstanceObs(
    name="dave-scratch",
    status="Stopped",
    profiles=("default",),
    config={
        "user.lxdgpu.user": "dave",
        "image.description": "Debian bookworm",
        "volatile.base_image": "0123456789abcdef" * 4,
    },
)
SERVER01 = HostSnapshot(
    host="server01",
    endpoint="unix:///var/lib/lxd/unix.socket",
    server_version="5.0.2",
    cpus=32,
    gpus=(
        GpuObs(id=0, vendor="NVIDIA Corporation", product="GA102 [GeForce RTX 3090]"),
        GpuObs(id=1, vendor="NVIDIA Corporation", product="GA102 [GeForce RTX 3090]"),
    ),
    instances={ALICE.name: ALICE, OUT_OF_BAND.name: OUT_OF_BAND},
    images=(ImageObs(fingerprint=FP, aliases=("template-desk",)),),
)
DOWN = HostError(
    kind=HostErrorKind.UNREACHABLE,
    message="host server02: cannot connect to 192.0.2.12:8443: Connection refused",
    hint="is LXD running there? on the host: `lxd waitready`",
)
SNAPSHOT = FleetSnapshot(
    hosts={
        "server02": HostSnapshot(
            host="server02", endpoint="unix:///srv/lxd2/unix.socket", error=DOWN
        ),
        "server01": SERVER01,
    }
)


def test_json_shape() -> None:
    data = status_json(FLEET, SNAPSHOT)

    assert data["format"] == 1
    assert data["ok"] is False
    assert [h["name"] for h in data["hosts"]] == ["server01", "server02"]
    assert data["hosts"][0] == {
        "name": "server01",
        "endpoint": "unix:///var/lib/lxd/unix.socket",
        "reachable": True,
        "error": None,
        "lxd_version": "5.0.2",
        "cpus": 32,
        "gpus": [
            {
                "id": 0,
                "vendor": "NVIDIA Corporation",
                "product": "GA102 [GeForce RTX 3090]",
                "driver": "",
                "pci_address": "",
                "nvidia_uuid": None,
            },
            {
                "id": 1,
                "vendor": "NVIDIA Corporation",
                "product": "GA102 [GeForce RTX 3090]",
                "driver": "",
                "pci_address": "",
                "nvidia_uuid": None,
            },
        ],
        "gpus_expected": 2,
        "containers": 2,
    }
    assert data["hosts"][1] == {
        "name": "server02",
        "endpoint": "unix:///srv/lxd2/unix.socket",
        "reachable": False,
        "error": {"kind": "unreachable", "message": DOWN.message, "hint": DOWN.hint},
        "lxd_version": None,
        "cpus": None,
        "gpus": None,
        "gpus_expected": None,
        "containers": None,
    }


def test_json_containers() -> None:
    containers = status_json(FLEET, SNAPSHOT)["containers"]

    assert [(c["host"], c["name"]) for c in containers] == [
        ("server01", "alice-container"),
        ("server01", "bob-container"),
        ("server01", "dave-scratch"),
        ("server02", "carol-box"),
    ]
    alice, bob, dave, carol = containers
    assert alice == {
        "host": "server01",
        "name": "alice-container",
        "type": "container",
        "user": "alice",
        "declared": True,
        "managed": True,
        "state": "running",
        "ipv4": ["192.0.2.10"],
        "ipv6": ["2001:db8::10"],
        "profiles": ["default", "lan"],
        "cpu_limit": "24",
        "image": "template-desk",
        "image_fingerprint": FP,
        "template": "desk",
    }
    assert bob["state"] == "absent" and bob["user"] == "bob" and bob["declared"]
    assert dave["user"] == "dave" and not dave["declared"] and not dave["managed"]
    assert dave["state"] == "stopped" and dave["ipv4"] == [] and dave["cpu_limit"] is None
    assert dave["image"] == "Debian bookworm" and dave["template"] is None
    assert carol["state"] == "unknown" and carol["user"] == "carol"


def test_json_is_stable() -> None:
    first = json.dumps(status_json(FLEET, SNAPSHOT), sort_keys=True)
    # The same state observed in another order renders the same.
    reordered = FleetSnapshot(hosts=dict(reversed(SNAPSHOT.hosts.items())))

    assert json.dumps(status_json(FLEET, reordered), sort_keys=True) == first


def test_template_of_an_undeclared_container_comes_from_its_image_alias() -> None:
    image = ImageObs(fingerprint=FP, aliases=("busybox",))
    stray = InstanceObs(name="tmp1", status="Stopped", config={"volatile.base_image": FP})
    host = SERVER01.model_copy(update={"instances": {"tmp1": stray}, "images": (image,)})

    (row,) = (
        r
        for r in status_report(FLEET, FleetSnapshot(hosts={"server01": host})).containers
        if r.name == "tmp1"
    )

    assert row.image == "busybox" and row.template == "lab" and row.user is None


def test_an_alias_of_a_fleet_template_is_preferred() -> None:
    image = ImageObs(fingerprint=FP, aliases=("aaa-local", "busybox", "template-desk"))
    stray = InstanceObs(name="tmp1", status="Stopped", config={"volatile.base_image": FP})
    host = SERVER01.model_copy(update={"instances": {"tmp1": stray}, "images": (image,)})

    rows = status_report(FLEET, FleetSnapshot(hosts={"server01": host})).containers

    row = next(r for r in rows if r.name == "tmp1")
    assert row.image == "busybox" and row.template == "lab"


def test_the_fleet_user_wins_over_the_tag() -> None:
    retagged = ALICE.model_copy(update={"config": {**ALICE.config, "user.lxdgpu.user": "eve"}})
    host = SERVER01.model_copy(update={"instances": {ALICE.name: retagged}})

    rows = status_report(FLEET, FleetSnapshot(hosts={"server01": host})).containers

    assert next(r for r in rows if r.name == ALICE.name).user == "alice"


def test_ok_when_every_host_was_read() -> None:
    snapshot = FleetSnapshot(hosts={"server01": SERVER01})

    assert status_json(FLEET, snapshot)["ok"] is True


def render(renderable: object, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_table_shows_addresses_users_and_why_a_host_is_unreadable() -> None:
    text = render(status_table(FLEET, SNAPSHOT))

    assert "192.0.2.10" in text and "2001:db8::10" in text
    assert "fe80::1" not in text and "127.0.0.1" not in text
    assert "alice" in text and "dave" in text
    assert "desk (template-desk)" in text
    assert "unreachable" in text
    assert DOWN.message in text
    assert "what to do: is LXD running there?" in text
    assert "GA102 [GeForce RTX 3090]" in text


def test_table_names_interfaces_when_a_container_has_several() -> None:
    second = Address(interface="eth1", family="inet", address="10.0.0.5", scope="global")
    busy = ALICE.model_copy(update={"addresses": (*ALICE.addresses, second)})
    host = SERVER01.model_copy(update={"instances": {busy.name: busy}})

    text = render(status_table(FLEET, FleetSnapshot(hosts={"server01": host})))

    assert "192.0.2.10 (eth0)" in text and "10.0.0.5 (eth1)" in text


def test_table_shows_text_from_hosts_as_it_is() -> None:
    odd = OUT_OF_BAND.model_copy(
        update={"config": {**OUT_OF_BAND.config, "image.description": "[bold]x[/bold] [red]"}}
    )
    host = SERVER01.model_copy(update={"instances": {odd.name: odd}})

    text = render(status_table(FLEET, FleetSnapshot(hosts={"server01": host})))

    assert "[bold]x[/bold] [red]" in text


def test_table_flags_a_gpu_count_the_fleet_does_not_expect() -> None:
    host = SERVER01.model_copy(update={"gpus": ()})

    text = render(status_table(FLEET, FleetSnapshot(hosts={"server01": host})))

    assert "fleet expects 2" in text


# --- the command, with observation replaced ------------------------------------------------------

FLEET_YAML = """\
version: 1
hosts:
  server01: {endpoint: "unix:///var/lib/lxd/unix.socket", gpus: 2}
  server02: {endpoint: "unix:///srv/lxd2/unix.socket"}
templates:
  desk: {alias: template-desk, base: busybox, build_host: server01}
users:
  alice: {host: server01, template: desk, uid: 1001, gid: 1001}
"""


@pytest.fixture
def fleet_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET_YAML)
    monkeypatch.setattr(status_cli, "observe_fleet", lambda fleet, timeout, addresses: SNAPSHOT)
    return path


def test_command_prints_json_when_not_a_terminal_and_exits_1(fleet_file: Path) -> None:
    result = CliRunner().invoke(app, ["status", "-f", str(fleet_file)])

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["hosts"][1]["error"]["kind"] == "unreachable"
    assert "could not read 1 of 2 hosts: server02 (unreachable)" in result.stderr


def test_command_table_format(fleet_file: Path) -> None:
    result = CliRunner().invoke(app, ["status", "-f", str(fleet_file), "--format", "table"])

    assert result.exit_code == 1
    assert "Containers" in result.stdout and "alice-container" in result.stdout


def test_command_exits_0_when_every_host_was_read(
    fleet_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = FleetSnapshot(hosts={"server01": SERVER01})
    monkeypatch.setattr(status_cli, "observe_fleet", lambda fleet, timeout, addresses: snapshot)

    result = CliRunner().invoke(app, ["status", "-f", str(fleet_file), "--format", "json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True


def test_command_on_a_bad_fleet_file_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("version: 1\nhosts: {server01: {endpoint: 5}}\n")

    result = CliRunner().invoke(app, ["status", "-f", str(path)])

    assert result.exit_code == 1
    assert "lxdgpu-reconcile validate" in result.stderr
    assert "Traceback" not in result.output


def test_command_missing_certificate_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "version: 1\nhosts:\n  server01:\n    endpoint: https://192.0.2.11:8443\n"
        "    client_cert: certs/admin.crt\n    client_key: certs/admin.key\n"
        "    server_cert: certs/server01.crt\n"
    )

    result = CliRunner().invoke(app, ["status", "-f", str(path)])

    assert result.exit_code == 1
    assert str(tmp_path / "certs" / "admin.crt") in result.stderr
    assert "does not exist" in result.stderr


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["status", "--help"])

    assert result.exit_code == 0
    assert "Example" in result.stdout and "--format" in result.stdout
