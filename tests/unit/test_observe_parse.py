"""Observation without a daemon: LXD's JSON (recorded from LXD 5.0.2, trimmed) to snapshot types,
and the classification of connection failures into host errors with what to do."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import requests
from pylxd import exceptions as lxd_exceptions

from lxdgpu_reconcile.fleet.models import Fleet, Host
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.state import Address, HostErrorKind
from tests.helpers import closed_port, self_signed

RUNNING: dict[str, Any] = {
    "architecture": "x86_64",
    "config": {
        "image.description": "busybox lab image",
        "limits.cpu": "1",
        "user.lxdgpu.managed": "true",
        "user.lxdgpu.user": "alice",
        "volatile.base_image": "be894700b9c1c846932a9a25eae373223300049642eadf60cfc83e4e7ddef3f4",
        "volatile.eth0.hwaddr": "00:16:3e:d1:6a:3b",
    },
    "devices": {},
    "ephemeral": False,
    "profiles": ["default", "lan"],
    "stateful": False,
    "description": "",
    "created_at": "2026-11-30T09:32:03.503114585Z",
    "expanded_config": {"limits.cpu": "1", "user.lxdgpu.managed": "true"},
    "expanded_devices": {
        "eth0": {"nictype": "macvlan", "parent": "eno1", "type": "nic"},
        "root": {"path": "/", "pool": "default", "type": "disk"},
    },
    "name": "bb1",
    "status": "Running",
    "status_code": 103,
    "last_used_at": "2026-11-30T09:32:03.685426843Z",
    "location": "none",
    "type": "container",
    "project": "default",
    "backups": None,
    "state": {
        "status": "Running",
        "status_code": 103,
        "disk": {},
        "memory": {"usage": 634880, "usage_peak": 1159168, "swap_usage": 0},
        "network": {
            "lo": {
                "addresses": [
                    {"family": "inet", "address": "127.0.0.1", "netmask": "8", "scope": "local"},
                    {"family": "inet6", "address": "::1", "netmask": "128", "scope": "local"},
                ],
                "host_name": "",
                "state": "up",
                "type": "loopback",
            },
            "eth0": {
                "addresses": [
                    {"family": "inet", "address": "192.0.2.10", "netmask": "24", "scope": "global"},
                    {
                        "family": "inet6",
                        "address": "2001:db8::10",
                        "netmask": "64",
                        "scope": "global",
                    },
                    {
                        "family": "inet6",
                        "address": "fe80::216:3eff:fed1:6a3b",
                        "netmask": "64",
                        "scope": "link",
                    },
                ],
                "hwaddr": "00:16:3e:d1:6a:3b",
                "host_name": "eno1",
                "mtu": 1500,
                "state": "up",
                "type": "broadcast",
            },
        },
        "pid": 4242,
        "processes": 1,
        "cpu": {"usage": 1000},
    },
    "snapshots": None,
}

STOPPED: dict[str, Any] = {
    **copy.deepcopy(RUNNING),
    "name": "st1",
    "status": "Stopped",
    "status_code": 102,
    "config": {"image.description": "busybox lab image"},
    "expanded_config": {"image.description": "busybox lab image"},
    "profiles": ["default"],
    "state": {
        "status": "Stopped",
        "status_code": 102,
        "disk": {},
        "memory": {"usage": 0, "usage_peak": 0, "swap_usage": 0, "swap_usage_peak": 0},
        "network": None,
        "pid": 0,
        "processes": 0,
        "cpu": {"usage": 0},
    },
}

PROFILES = [
    {
        "config": {},
        "description": "Default LXD profile",
        "devices": {"root": {"path": "/", "pool": "default", "type": "disk"}},
        "name": "default",
        "used_by": ["/1.0/instances/st1", "/1.0/instances/bb1?project=default"],
    },
    {
        "config": {"user.lxdgpu.managed": "true", "limits.memory": "4GiB"},
        "description": "",
        "devices": {"eth0": {"nictype": "macvlan", "parent": "eno1", "type": "nic"}},
        "name": "lan",
        "used_by": ["/1.0/instances/bb1"],
    },
]

IMAGES = [
    {
        "auto_update": False,
        "properties": {"description": "busybox lab image", "os": "busybox"},
        "public": False,
        "expires_at": "1970-01-01T00:00:00Z",
        "profiles": ["default"],
        "aliases": [
            {"name": "busybox", "description": ""},
            {"name": "base-1", "description": ""},
        ],
        "architecture": "x86_64",
        "cached": False,
        "filename": "rootfs.tar.gz",
        "fingerprint": "be894700b9c1c846932a9a25eae373223300049642eadf60cfc83e4e7ddef3f4",
        "size": 1036311,
        "type": "container",
        "created_at": "2026-11-30T09:32:03Z",
    }
]

POOLS = [
    {
        "config": {"source": "/var/lib/lxd/storage-pools/default"},
        "description": "",
        "name": "default",
        "driver": "dir",
        "used_by": ["/1.0/instances/bb1"],
        "status": "Created",
        "locations": ["none"],
    }
]

#: ``/1.0/resources`` of a host with two NVIDIA cards (shape of LXD's ResourcesGPUCard).
RESOURCES: dict[str, Any] = {
    "cpu": {"architecture": "x86_64", "sockets": [], "total": 32},
    "memory": {"total": 25769803776, "used": 738029568},
    "gpu": {
        "cards": [
            {
                "driver": "nvidia",
                "driver_version": "535.104.05",
                "drm": {"card_name": "card1", "id": 1, "render_name": "renderD129"},
                "numa_node": 0,
                "nvidia": {
                    "architecture": "8.6",
                    "brand": "GeForce",
                    "card_name": "nvidia0",
                    "cuda_version": "12.2",
                    "model": "NVIDIA GeForce RTX 3090",
                    "uuid": "GPU-5f1b7e4c-0000-1111-2222-333344445555",
                },
                "pci_address": "0000:3b:00.0",
                "product": "GA102 [GeForce RTX 3090]",
                "product_id": "2204",
                "vendor": "NVIDIA Corporation",
                "vendor_id": "10de",
            },
            {
                "driver": "vfio-pci",
                "numa_node": 0,
                "pci_address": "0000:af:00.0",
                "product": "GA102 [GeForce RTX 3090]",
                "vendor": "NVIDIA Corporation",
            },
        ],
        "total": 2,
    },
}

SERVER: dict[str, Any] = {
    "api_extensions": ["etag", "patch", "resources", "resources_gpu", "api_filtering"],
    "api_status": "stable",
    "api_version": "1.0",
    "auth": "trusted",
    "environment": {
        "addresses": ["127.0.0.1:8443"],
        "certificate_fingerprint": "4a862d5d",
        "driver": "lxc",
        "server": "lxd",
        "server_version": "5.0.2",
        "server_clustered": False,
    },
}


def raw_host(**changes: Any) -> reading.RawHost:
    fields: dict[str, Any] = {
        "server": SERVER,
        "resources": RESOURCES,
        "instances": [STOPPED, RUNNING],
        "profiles": PROFILES,
        "images": IMAGES,
        "pools": POOLS,
    }
    fields.update(changes)
    return reading.RawHost(**fields)


# --- conversion -----------------------------------------------------------------------------------


def test_running_instance_keeps_config_devices_and_every_address() -> None:
    obs = reading.parse_instance(RUNNING)

    assert obs.name == "bb1"
    assert obs.status == "Running" and obs.running
    assert obs.managed
    assert obs.profiles == ("default", "lan")
    assert obs.config["limits.cpu"] == "1"
    assert obs.expanded_devices["eth0"] == {"nictype": "macvlan", "parent": "eno1", "type": "nic"}
    assert obs.created_at == "2026-11-30T09:32:03.503114585Z"
    # Interfaces in name order, addresses as LXD lists them.
    assert obs.addresses == (
        Address(
            interface="eth0", family="inet", address="192.0.2.10", netmask="24", scope="global"
        ),
        Address(
            interface="eth0", family="inet6", address="2001:db8::10", netmask="64", scope="global"
        ),
        Address(
            interface="eth0",
            family="inet6",
            address="fe80::216:3eff:fed1:6a3b",
            netmask="64",
            scope="link",
        ),
        Address(interface="lo", family="inet", address="127.0.0.1", netmask="8", scope="local"),
        Address(interface="lo", family="inet6", address="::1", netmask="128", scope="local"),
    )


def test_stopped_instance_has_no_addresses_and_is_unmanaged() -> None:
    obs = reading.parse_instance(STOPPED)

    assert obs.status == "Stopped" and not obs.running
    assert obs.addresses == ()
    assert not obs.managed


def test_instance_listed_without_state_recursion_one() -> None:
    data = {k: v for k, v in RUNNING.items() if k not in ("state", "snapshots", "backups")}

    assert reading.parse_instance(data).addresses == ()


def test_config_values_become_strings() -> None:
    data = {**RUNNING, "config": {"limits.cpu": 2, "boot.autostart": True}}

    assert reading.parse_instance(data).config == {"limits.cpu": "2", "boot.autostart": "True"}


def test_profile_used_by_becomes_instance_names() -> None:
    default, lan = (reading.parse_profile(p) for p in PROFILES)

    assert default.used_by == ("st1", "bb1")
    assert default.devices["root"]["pool"] == "default"
    assert lan.managed and lan.config["limits.memory"] == "4GiB"


def test_image_aliases_are_names_sorted() -> None:
    image = reading.parse_image(IMAGES[0])

    assert image.aliases == ("base-1", "busybox")
    assert image.properties == {"description": "busybox lab image", "os": "busybox"}
    assert image.size == 1036311 and not image.public and image.architecture == "x86_64"


def test_gpus_use_the_drm_id_else_the_card_index() -> None:
    first, second = reading.parse_gpus(RESOURCES)

    assert first.id == 1  # drm.id, what `gpu` devices' id= selects
    assert first.nvidia_uuid == "GPU-5f1b7e4c-0000-1111-2222-333344445555"
    assert first.vendor == "NVIDIA Corporation" and first.driver == "nvidia"
    assert first.pci_address == "0000:3b:00.0"
    assert second.id == 1  # no drm section (bound to vfio): its index in the list
    assert second.nvidia_uuid == ""


def test_no_gpu_section() -> None:
    assert reading.parse_gpus({"cpu": {"total": 2}}) == ()
    assert reading.parse_gpus({"gpu": {"cards": [], "total": 0}}) == ()


def test_host_snapshot_collects_everything_sorted_by_name() -> None:
    snap = reading.host_snapshot("server01", "https://127.0.0.1:8443", raw_host())

    assert snap.reachable and snap.error is None
    assert snap.host == "server01" and snap.endpoint == "https://127.0.0.1:8443"
    assert snap.server_version == "5.0.2"
    assert "resources_gpu" in snap.api_extensions
    assert snap.cpus == 32
    assert [g.id for g in snap.gpus] == [1, 1]
    assert list(snap.instances) == ["bb1", "st1"]
    assert list(snap.profiles) == ["default", "lan"]
    assert snap.pools["default"].driver == "dir" and snap.pools["default"].status == "Created"
    image = snap.image_by_alias("busybox")
    assert image is not None and image.fingerprint.startswith("be894700")


def test_host_snapshot_of_an_empty_host() -> None:
    raw = reading.RawHost(server=SERVER)

    snap = reading.host_snapshot("server02", "unix:///var/lib/lxd/unix.socket", raw)

    assert snap.cpus == 0 and snap.gpus == () and snap.instances == {} and snap.images == ()


def test_host_snapshot_reads_memory_total_and_used() -> None:
    snap = reading.host_snapshot("server01", "https://127.0.0.1:8443", raw_host())

    assert (snap.memory_total, snap.memory_used) == (25769803776, 738029568)


def test_memory_not_read_is_none() -> None:
    empty = reading.host_snapshot("server02", "unix:///x", reading.RawHost(server=SERVER))
    no_memory = {k: v for k, v in RESOURCES.items() if k != "memory"}
    without = reading.host_snapshot("server02", "unix:///x", raw_host(resources=no_memory))

    assert (empty.memory_total, empty.memory_used) == (None, None)
    assert (without.memory_total, without.memory_used) == (None, None)


@pytest.mark.parametrize(
    "memory",
    [
        {"total": "lots", "used": -1},
        {"total": 1.5, "used": True},
        {"total": None},
        ["not", "a", "mapping"],
    ],
)
def test_memory_values_that_are_not_byte_counts_are_left_out(memory: Any) -> None:
    raw = raw_host(resources={**RESOURCES, "memory": memory})

    snap = reading.host_snapshot("server01", "https://127.0.0.1:8443", raw)

    assert snap.reachable and snap.cpus == 32
    assert (snap.memory_total, snap.memory_used) == (None, None)


def test_snapshot_is_pure_data() -> None:
    snap = reading.host_snapshot("server01", "https://127.0.0.1:8443", raw_host())

    again = type(snap).model_validate_json(snap.model_dump_json())

    assert again == snap
    with pytest.raises(ValueError):
        snap.cpus = 4  # type: ignore[misc]


def test_an_unexpected_answer_raises_a_lookup_error() -> None:
    broken = {k: v for k, v in RUNNING.items() if k != "name"}

    with pytest.raises(KeyError):
        reading.host_snapshot("server01", "https://x", raw_host(instances=[broken]))


# --- failures as host errors ----------------------------------------------------------------------

HTTPS = Host(
    endpoint="https://192.0.2.11:8443",
    client_cert="/etc/lxdgpu/admin.crt",
    client_key="/etc/lxdgpu/admin.key",
    server_cert="/etc/lxdgpu/server01.crt",
)


def wrapped(cause: BaseException) -> lxd_exceptions.ClientConnectionFailed:
    """What pylxd's Client() raises: the requests error as context of ClientConnectionFailed."""
    try:
        try:
            raise cause
        except requests.exceptions.ConnectionError as exc:
            raise lxd_exceptions.ClientConnectionFailed(str(exc)) from None
    except lxd_exceptions.ClientConnectionFailed as outer:
        outer.__context__ = cause
        return outer


def test_fingerprint_mismatch_names_both_fingerprints() -> None:
    cause = requests.exceptions.SSLError(
        "HTTPSConnectionPool(host='192.0.2.11', port=8443): Max retries exceeded with url: /1.0 "
        '(Caused by SSLError(\'Fingerprints did not match. Expected "aaaa", got "bbbb"\'))'
    )

    error = connecting.classify("server01", HTTPS, wrapped(cause), timeout=5)

    assert error.kind is HostErrorKind.CERTIFICATE
    assert "bbbb" in error.message and "aaaa" in error.message
    assert "/etc/lxdgpu/server01.crt" in error.message
    assert "re-pin" in error.hint


def test_connection_refused_is_unreachable() -> None:
    cause = requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='192.0.2.11', port=8443): Max retries exceeded with url: /1.0 "
        "(Caused by NewConnectionError(\"HTTPSConnection(host='192.0.2.11', port=8443): "
        'Failed to establish a new connection: [Errno 111] Connection refused"))'
    )

    error = connecting.classify("server01", HTTPS, wrapped(cause), timeout=5)

    assert error.kind is HostErrorKind.UNREACHABLE
    assert error.message == "host server01: cannot connect to 192.0.2.11:8443: Connection refused"
    assert "lxd waitready" in error.hint and "lab up" in error.hint


def test_connect_timeout_is_a_timeout() -> None:
    cause = requests.exceptions.ConnectTimeout("connect timed out")

    error = connecting.classify("server01", HTTPS, wrapped(cause), timeout=7.5)

    assert error.kind is HostErrorKind.TIMEOUT
    assert "within 7.5 s" in error.message and "--timeout" in error.hint


def test_read_timeout_is_a_timeout() -> None:
    error = connecting.classify(
        "server01", HTTPS, requests.exceptions.ReadTimeout("read timed out"), timeout=3
    )

    assert error.kind is HostErrorKind.TIMEOUT


def test_http_403_is_untrusted_with_the_trust_command() -> None:
    response = requests.Response()
    response.status_code = 403
    response._content = b'{"type":"error","error":"not authorized","error_code":403}'

    error = connecting.classify(
        "server01", HTTPS, lxd_exceptions.LXDAPIException(response), timeout=3
    )

    assert error.kind is HostErrorKind.UNTRUSTED
    assert "`lxc config trust add admin.crt`" in error.hint


def test_other_api_errors_keep_the_status_and_message() -> None:
    response = requests.Response()
    response.status_code = 500
    response._content = b'{"type":"error","error":"database is locked","error_code":500}'

    error = connecting.classify(
        "server01", HTTPS, lxd_exceptions.LXDAPIException(response), timeout=3
    )

    assert error.kind is HostErrorKind.ERROR
    assert "500" in error.message and "database is locked" in error.message


def test_missing_certificate_file_is_a_config_error_with_the_path(tmp_path: Path) -> None:
    host = Host(
        endpoint="https://192.0.2.11:8443",
        client_cert=str(tmp_path / "admin.crt"),
        client_key=str(tmp_path / "admin.key"),
        server_cert=str(tmp_path / "server01.crt"),
    )

    error = connecting.check_config("server01", host)

    assert error is not None and error.kind is HostErrorKind.CONFIG
    assert str(tmp_path / "admin.crt") in error.message and "does not exist" in error.message
    assert "hosts.server01.client_cert" in error.hint


def test_https_needs_every_certificate() -> None:
    error = connecting.check_config("server01", Host(endpoint="https://192.0.2.11:8443"))

    assert error is not None and error.kind is HostErrorKind.CONFIG
    assert "client_cert" in error.message


def test_server_cert_must_be_a_certificate(tmp_path: Path) -> None:
    for name in ("admin.crt", "admin.key", "server01.crt"):
        (tmp_path / name).write_text("not a certificate\n")
    host = Host(
        endpoint="https://192.0.2.11:8443",
        client_cert=str(tmp_path / "admin.crt"),
        client_key=str(tmp_path / "admin.key"),
        server_cert=str(tmp_path / "server01.crt"),
    )

    error = connecting.check_config("server01", host)

    assert error is not None and "not a PEM certificate" in error.message


def test_unknown_scheme_is_a_config_error() -> None:
    error = connecting.check_config("server01", Host(endpoint="http://192.0.2.11:8443"))

    assert error is not None and error.kind is HostErrorKind.CONFIG


def test_observe_fleet_reports_each_host_problem_and_never_raises(tmp_path: Path) -> None:
    # No daemon needed: a socket path that does not exist, a port nobody listens on, and a
    # certificate file that does not exist.
    cert, key = self_signed(tmp_path, "admin")
    https = {"client_cert": cert, "client_key": key, "server_cert": cert}
    fleet = Fleet.model_validate(
        {
            "version": 1,
            "hosts": {
                "gone": {"endpoint": f"unix://{tmp_path}/lxd/unix.socket"},
                "closed": {"endpoint": f"https://127.0.0.1:{closed_port()}", **https},
                "nocert": {
                    "endpoint": "https://127.0.0.1:8443",
                    **https,
                    "server_cert": str(tmp_path / "server.crt"),
                },
            },
        }
    )
    counter = connecting.RequestCounter()

    snapshot = reading.observe_fleet(fleet, timeout=5, counter=counter)

    assert snapshot.unreachable == ("gone", "closed", "nocert")
    errors = {name: snap.error for name, snap in snapshot.hosts.items()}
    assert errors["gone"] is not None and errors["gone"].kind is HostErrorKind.UNREACHABLE
    assert f"{tmp_path}/lxd/unix.socket" in errors["gone"].message
    assert errors["closed"] is not None and errors["closed"].kind is HostErrorKind.UNREACHABLE
    assert "Connection refused" in errors["closed"].message
    assert errors["nocert"] is not None and errors["nocert"].kind is HostErrorKind.CONFIG
    assert str(tmp_path / "server.crt") in errors["nocert"].message
    assert counter.count() == 0


def test_observe_fleet_rejects_an_unknown_host() -> None:
    with pytest.raises(ValueError, match="no host server09"):
        reading.observe_fleet(Fleet(version=1), hosts=["server09"])
