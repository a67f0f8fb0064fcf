"""``observe.lxdapi``: the pylxd implementation's error translation, and reading a host through
the seam (``observe.reading.read_host``) from an in-memory host."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from pylxd import exceptions as lxd_exceptions

from lxdgpu_reconcile.fleet.models import Host
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.observe import lxdapi, reading
from lxdgpu_reconcile.state import (
    GpuObs,
    HostErrorKind,
    HostSnapshot,
    ImageObs,
    InstanceObs,
    PoolObs,
    ProfileObs,
)
from tests.fakes.lxd import FakeLxd

HTTPS = Host(
    endpoint="https://192.0.2.11:8443",
    client_cert="/c.crt",
    client_key="/c.key",
    server_cert="/s.crt",
)


class _Node:
    """A stand-in for a pylxd ``api`` node whose requests fail with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getitem__(self, name: str) -> _Node:
        return self

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail


class _Client:
    def __init__(self, error: Exception) -> None:
        self.api = _Node(error)
        self.host_info: dict[str, Any] = {"api_extensions": [], "environment": {}}


def _api_error(status: int, message: str) -> lxd_exceptions.LXDAPIException:
    response = requests.Response()
    response.status_code = status
    response._content = f'{{"type":"error","error":"{message}","error_code":{status}}}'.encode()
    return lxd_exceptions.LXDAPIException(response)


def test_a_timed_out_listing_is_still_classified_as_a_timeout() -> None:
    api = lxdapi.PylxdApi(_Client(requests.exceptions.ReadTimeout("read timed out")))
    with pytest.raises(lxdapi.LxdError) as raised:
        reading.read_host(api, remaining=lambda: 5.0)

    error = connecting.classify("server01", HTTPS, raised.value, timeout=5)

    assert error.kind is HostErrorKind.TIMEOUT


def test_api_errors_become_lxd_errors_with_status_and_hint() -> None:
    stale = lxdapi.PylxdApi(_Client(_api_error(412, "ETag doesn't match")))
    with pytest.raises(lxdapi.StaleObject) as raised:
        stale.put("instances", "c1", {}, etag="abc", timeout=5)
    assert raised.value.status == 412
    assert raised.value.message.startswith("update instance c1: changed on the host")

    busy = lxdapi.PylxdApi(_Client(_api_error(400, "Profile is currently in use")))
    with pytest.raises(lxdapi.LxdError) as failed:
        busy.delete("profiles", "cuda", timeout=5)
    assert failed.value.status == 400
    assert failed.value.message == "delete profile cuda: Profile is currently in use"
    assert "remove it from them first" in failed.value.hint


def test_read_host_through_an_in_memory_host_gives_its_snapshot() -> None:
    snap = HostSnapshot(
        host="server01",
        endpoint="unix:///x",
        server_version="5.0.2",
        api_extensions=("resources",),
        cpus=8,
        gpus=(GpuObs(id=1, vendor="NVIDIA Corporation", nvidia_uuid="GPU-1"),),
        profiles={"default": ProfileObs(name="default", config={"limits.cpu": "2"})},
        instances={
            "c1": InstanceObs(name="c1", status="Stopped", profiles=("default",), config={})
        },
        images=(ImageObs(fingerprint="a" * 64, aliases=("base",)),),
        pools={"default": PoolObs(name="default", driver="dir")},
    )
    fake = FakeLxd(snap)

    raw = reading.read_host(fake, remaining=lambda: 5.0)
    read = reading.host_snapshot("server01", "unix:///x", raw)

    assert read.cpus == 8 and read.gpus == snap.gpus
    assert read.instances["c1"].expanded_config == {"limits.cpu": "2"}
    assert read.profiles["default"].used_by == ("c1",)
    assert read.images == snap.images and read.pools == snap.pools
