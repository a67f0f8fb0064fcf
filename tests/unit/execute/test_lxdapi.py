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
        # What ``PylxdApi``'s listings read of a node: its session, URL, timeout and project.
        self.session = self
        self._api_endpoint = "https://192.0.2.11:8443/1.0/instances"
        self._timeout = None
        self._project = None

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


# --- listings: one request, its body decoded once ---------------------------------------------


class _Session:
    """A requests session stand-in: every ``get`` answers ``status`` with ``body``, and counts
    how often an answer's body is decoded."""

    def __init__(self, status: int, body: str) -> None:
        self.status, self.body = status, body
        self.gets: list[tuple[str, dict[str, Any]]] = []
        self.decoded = 0

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        self.gets.append((url, kwargs.get("params") or {}))
        response = requests.Response()
        response.status_code = self.status
        response._content = self.body.encode()
        plain = response.json

        def counted(**kw: Any) -> Any:
            self.decoded += 1
            return plain(**kw)

        response.json = counted  # type: ignore[method-assign]
        return response


def _pylxd_api(session: _Session) -> lxdapi.PylxdApi:
    """``PylxdApi`` over pylxd's real ``api`` nodes, with ``session`` underneath."""
    from pylxd.client import _APINode

    client = _Client(RuntimeError("unused"))
    client.api = _APINode("https://192.0.2.11:8443/1.0", session, timeout=30)  # type: ignore[assignment]
    return lxdapi.PylxdApi(client)  # type: ignore[arg-type]


def test_a_listing_sends_one_request_and_decodes_its_body_once() -> None:
    body = '{"type":"sync","status_code":200,"metadata":[{"name":"c1"},{"name":"c2"}]}'
    session = _Session(200, body)

    listed = _pylxd_api(session).list("instances", recursion=1, timeout=7)

    assert [item["name"] for item in listed] == ["c1", "c2"]
    assert session.gets == [("https://192.0.2.11:8443/1.0/instances", {"recursion": 1})]
    assert session.decoded == 1


def test_a_refused_listing_is_an_lxd_error_that_classify_understands() -> None:
    body = '{"type":"error","error":"not authorized","error_code":403}'
    api = _pylxd_api(_Session(403, body))

    with pytest.raises(lxdapi.LxdError) as raised:
        api.list("instances", recursion=1)

    assert raised.value.status == 403
    assert raised.value.message == "list instances: not authorized"
    error = connecting.classify("server01", HTTPS, raised.value, timeout=5)
    assert error.kind is HostErrorKind.UNTRUSTED


def test_a_listing_that_is_not_lxd_json_is_reported_as_an_unexpected_answer() -> None:
    api = _pylxd_api(_Session(200, "<html>proxy</html>"))

    with pytest.raises(ValueError):
        api.list("profiles", recursion=1)
    with pytest.raises(lxdapi.LxdError) as raised:
        _pylxd_api(_Session(200, '{"type":"async","metadata":{}}')).list("images", recursion=1)
    assert raised.value.message.startswith("list images: ")
