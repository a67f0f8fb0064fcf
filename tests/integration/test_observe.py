"""Observation and ``status`` against the lab's real LXD daemons.

Containers are made out of band with plain ``lxc`` (or the raw API, for bulk), with unique names,
and deleted after each test. No lab daemon is stopped: a host that is down is a copy of a lab host
pointed at a port nobody listens on.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
import yaml
from typer.testing import CliRunner

from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.fleet.models import Fleet, Host
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.state import HostErrorKind
from tests.helpers import closed_port, fingerprint, self_signed
from tests.integration.conftest import LabHandle

pytestmark = pytest.mark.lxd

#: The documentation-range addresses set inside a running container; never sent traffic.
IPV4, IPV6 = "192.0.2.10", "2001:db8::10"
#: A real CA bundle for the variables that replace a pin in a default requests session.
CA_BUNDLE = os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where()


@pytest.fixture
def prefix() -> str:
    return f"obs{uuid.uuid4().hex[:6]}"


@pytest.fixture
def made(lab: LabHandle) -> Iterator[list[tuple[str, str]]]:
    """(host, instance) pairs a test made; each is force-deleted afterwards."""
    instances: list[tuple[str, str]] = []
    yield instances
    for host, name in instances:
        lab.lxc(host, "delete", "--force", name, check=False)
    for host in {host for host, _ in instances}:
        left = set(lab.lxc(host, "list", "--format", "csv", "-c", "n").stdout.split())
        assert not left & {name for _, name in instances}, f"instances left on {host}"


def nic_parent(lab: LabHandle) -> str:
    """The macvlan parent the lab fleet's profiles use (a veth the lab made)."""
    return lab.spec.profiles["default"].devices["eth0"]["parent"]


def write_fleet(path: Path, hosts: dict[str, Host]) -> Path:
    """A fleet file with only ``hosts`` (absolute certificate paths)."""
    data = {
        "version": 1,
        "hosts": {name: host.model_dump(exclude_none=True) for name, host in hosts.items()},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def status(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, ["status", "--format", "json", *args])
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout), result.stderr


@pytest.fixture
def ca_bundle_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables that silently replace a pinned certificate in a default requests session."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", CA_BUNDLE)
    monkeypatch.setenv("CURL_CA_BUNDLE", CA_BUNDLE)


# --- status -----------------------------------------------------------------------------------


def test_status_shows_containers_made_with_lxc_on_both_hosts(
    lab: LabHandle, made: list[tuple[str, str]], prefix: str, ca_bundle_set: None
) -> None:
    running, stopped = f"{prefix}-run", f"{prefix}-off"
    made += [("server01", running), ("server02", stopped)]
    lab.lxc(
        "server01",
        "init",
        "busybox",
        running,
        "-c",
        "user.lxdgpu.user=tom",
        "-c",
        "limits.cpu=1",
    )
    lab.lxc(
        "server01",
        "config",
        "device",
        "add",
        running,
        "eth0",
        "nic",
        "nictype=macvlan",
        f"parent={nic_parent(lab)}",
    )
    lab.lxc("server01", "start", running)
    lab.lxc("server01", "exec", running, "--", "ip", "addr", "add", f"{IPV4}/24", "dev", "eth0")
    lab.lxc("server01", "exec", running, "--", "ip", "addr", "add", f"{IPV6}/64", "dev", "eth0")
    lab.lxc("server02", "init", "template-busybox", stopped)

    code, data, _ = status("-f", str(lab.fleet_path), "--lab", str(lab.dir))

    assert code == 0 and data["ok"] is True
    hosts = {h["name"]: h for h in data["hosts"]}
    assert set(hosts) == {"server01", "server02"}
    for host in hosts.values():
        assert host["reachable"] and host["lxd_version"] and host["cpus"] >= 1
        assert host["gpus"] == []
    rows = {(c["host"], c["name"]): c for c in data["containers"]}
    on = rows[("server01", running)]
    assert on["state"] == "running"
    assert on["ipv4"] == [IPV4] and on["ipv6"] == [IPV6]
    assert on["user"] == "tom" and not on["declared"] and not on["managed"]
    assert on["cpu_limit"] == "1" and on["profiles"] == ["default"]
    # Each alias of the lab has a stand-in image of its own: the image column is the real one.
    assert on["image"] == "busybox" and on["image_fingerprint"]
    off = rows[("server02", stopped)]
    assert off["state"] == "stopped" and off["ipv4"] == [] and off["user"] is None
    assert off["image"] == "template-busybox"
    assert off["image_fingerprint"] != on["image_fingerprint"]

    table = CliRunner().invoke(
        app, ["status", "-f", str(lab.fleet_path), "--lab", str(lab.dir), "--format", "table"]
    )
    assert table.exit_code == 0
    assert IPV4 in table.stdout and running in table.stdout and stopped in table.stdout


def test_status_with_one_host_down_reports_the_other_and_exits_1(
    lab: LabHandle, tmp_path: Path, made: list[tuple[str, str]], prefix: str
) -> None:
    name = f"{prefix}-up"
    made.append(("server01", name))
    lab.lxc("server01", "init", "busybox", name)
    down = lab.fleet.hosts["server02"].model_copy(
        update={"endpoint": f"https://127.0.0.1:{closed_port()}"}
    )
    fleet = write_fleet(
        tmp_path / "fleet.yaml", {"server01": lab.fleet.hosts["server01"], "server02": down}
    )

    code, data, stderr = status("-f", str(fleet))

    assert code == 1 and data["ok"] is False
    hosts = {h["name"]: h for h in data["hosts"]}
    assert hosts["server01"]["reachable"] is True
    assert ("server01", name) in {(c["host"], c["name"]) for c in data["containers"]}
    error = hosts["server02"]["error"]
    assert hosts["server02"]["reachable"] is False
    assert error["kind"] == "unreachable" and "Connection refused" in error["message"]
    assert "lxd waitready" in error["hint"]
    assert "server02 (unreachable)" in stderr


# --- connecting -------------------------------------------------------------------------------


def test_pinning_holds_with_the_ca_bundle_variables_set(
    lab: LabHandle, ca_bundle_set: None
) -> None:
    host = lab.fleet.hosts["server01"]

    snap = reading.observe_host("server01", host, timeout=30)

    assert snap.reachable, snap.error
    assert snap.server_version


@pytest.fixture
def ca_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every load of CA certificates into a TLS context (the system store, or a bundle file)."""
    loads: list[str] = []
    default, locations = ssl.SSLContext.load_default_certs, ssl.SSLContext.load_verify_locations

    def load_default(self: ssl.SSLContext, *args: Any) -> None:
        loads.append("system store")
        default(self, *args)

    def load_locations(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(f"locations {args} {kwargs}")
        locations(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", load_default)
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", load_locations)
    return loads


def test_a_pinned_connection_loads_no_ca_certificates(
    lab: LabHandle, ca_bundle_set: None, ca_loads: list[str]
) -> None:
    snap = reading.observe_host("server01", lab.fleet.hosts["server01"], timeout=30)

    assert snap.reachable, snap.error
    assert ca_loads == []


def test_a_wrong_pinned_certificate_is_refused(lab: LabHandle, ca_bundle_set: None) -> None:
    right = lab.fleet.hosts["server01"]
    wrong = right.model_copy(update={"server_cert": lab.fleet.hosts["server02"].server_cert})

    snap = reading.observe_host("server01", wrong, timeout=30)

    assert snap.error is not None and snap.error.kind is HostErrorKind.CERTIFICATE
    assert snap.instances == {}
    assert fingerprint(right.server_cert or "") in snap.error.message  # what it presents
    assert fingerprint(wrong.server_cert or "") in snap.error.message  # what was pinned
    assert "re-pin" in snap.error.hint


def test_an_untrusted_client_certificate_says_how_to_trust_it(
    lab: LabHandle, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path, "stranger")
    host = lab.fleet.hosts["server01"].model_copy(update={"client_cert": cert, "client_key": key})

    snap = reading.observe_host("server01", host, timeout=30)

    assert snap.error is not None and snap.error.kind is HostErrorKind.UNTRUSTED
    assert "`lxc config trust add stranger.crt`" in snap.error.hint


def test_the_unix_socket_sees_what_https_sees(lab: LabHandle) -> None:
    socket_host = Host(endpoint=f"unix://{lab.state.hosts['server01'].socket}")

    by_socket = reading.observe_host("server01", socket_host, timeout=30)
    by_https = reading.observe_host("server01", lab.fleet.hosts["server01"], timeout=30)

    assert by_socket.reachable and by_https.reachable
    assert by_socket.profiles == by_https.profiles
    assert by_socket.images == by_https.images


def test_a_host_that_never_answers_times_out_and_the_other_is_still_read(lab: LabHandle) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        hung = lab.fleet.hosts["server02"].model_copy(
            update={"endpoint": f"https://127.0.0.1:{silent.getsockname()[1]}"}
        )
        fleet = Fleet(version=1, hosts={"server01": lab.fleet.hosts["server01"], "hung": hung})

        snapshot = reading.observe_fleet(fleet, timeout=2)

    assert snapshot.hosts["server01"].reachable
    error = snapshot.hosts["hung"].error
    assert error is not None and error.kind is HostErrorKind.TIMEOUT
    assert "--timeout" in error.hint


# --- cost -------------------------------------------------------------------------------------


def create_stopped(lab: LabHandle, host: str, names: list[str]) -> None:
    """Create stopped busybox instances through the raw API: all at once, then wait."""
    client: Any = connecting.connect(host, lab.fleet.hosts[host], timeout=120).client
    operations = [
        client.api.instances.post(
            json={"name": name, "source": {"type": "image", "alias": "busybox"}}
        ).json()["operation"]
        for name in names
    ]
    for operation in operations:
        client.operations.wait_for_operation(operation)


def count_requests(
    lab: LabHandle, host: str, *, addresses: bool = False
) -> tuple[int, list[str], int]:
    counter = connecting.RequestCounter()
    fleet = Fleet(version=1, hosts={host: lab.fleet.hosts[host]})
    snapshot = reading.observe_fleet(fleet, timeout=60, counter=counter, addresses=addresses)
    assert snapshot.hosts[host].reachable, snapshot.hosts[host].error
    return counter.count(host), counter.requests(host), len(snapshot.hosts[host].instances)


def test_requests_per_observation_do_not_grow_with_instances(
    lab: LabHandle, made: list[tuple[str, str]], prefix: str
) -> None:
    names = [f"{prefix}-{index}" for index in range(40)]
    made += [("server02", name) for name in names]

    create_stopped(lab, "server02", names[:5])
    few, requests_few, seen_few = count_requests(lab, "server02")
    few_status, requests_few_status, _ = count_requests(lab, "server02", addresses=True)
    create_stopped(lab, "server02", names[5:])
    many, requests_many, seen_many = count_requests(lab, "server02")
    many_status, requests_many_status, _ = count_requests(lab, "server02", addresses=True)

    assert seen_many - seen_few >= 35
    assert few == many == few_status == many_status == 6, requests_many
    expected = [
        "GET /1.0",
        "GET /1.0/resources",
        "GET /1.0/instances?recursion=1",
        "GET /1.0/profiles?recursion=1",
        "GET /1.0/images?recursion=1",
        "GET /1.0/storage-pools?recursion=1",
    ]
    # What planning reads: no instance state (LXD collects it per running instance).
    assert requests_few == requests_many == expected
    # ``status`` asks for addresses: the same requests, instances with their state.
    expected[2] = "GET /1.0/instances?recursion=2"
    assert requests_few_status == requests_many_status == expected
