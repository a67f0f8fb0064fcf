"""The web application over a fake observer: read-only routes, page views that never observe,
headers, health, and the ``serve`` command's options (no LXD)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from lxdgpu_reconcile.cli import app as cli_app
from lxdgpu_reconcile.state import FleetSnapshot
from lxdgpu_reconcile.web.board import Board, Observation, Observer
from lxdgpu_reconcile.web.listen import (
    DEFAULT_LISTEN,
    BadListen,
    is_loopback,
    parse_listen,
)
from lxdgpu_reconcile.web.server import create_app
from lxdgpu_reconcile.web.view import page_data
from tests.unit.web.snapshots import BOTH_UP, CLIENT_CERT, CLIENT_KEY, FLEET, ONE_DOWN, XSS


class CountingObserve:
    """Stands in for ``observe_fleet``: counts its calls, returns the snapshots in turn."""

    def __init__(self, *snapshots: FleetSnapshot) -> None:
        self.snapshots = list(snapshots)
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> FleetSnapshot:
        with self.lock:
            self.calls += 1
            return self.snapshots[min(self.calls, len(self.snapshots)) - 1]


def build(observation: Observation) -> dict[str, Any]:
    return page_data(FLEET, observation, interval=3600)


def wait_for(predicate: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def served() -> Iterator[tuple[TestClient, CountingObserve, Board]]:
    observe = CountingObserve(ONE_DOWN)
    board = Board(build)
    observer = Observer(board, observe, interval=3600)
    with TestClient(create_app(board, observer=observer, title="Lab")) as client:
        wait_for(lambda: board.current.rounds == 1)
        yield client, observe, board


def test_page_views_never_observe(served: tuple[TestClient, CountingObserve, Board]) -> None:
    client, observe, _ = served
    for _ in range(30):
        for path in ("/", "/api/v1/status", "/metrics", "/healthz", "/static/page.js"):
            assert client.get(path).status_code == 200
    assert observe.calls == 1


def test_the_observer_refreshes_the_board_on_its_interval() -> None:
    observe = CountingObserve(BOTH_UP, ONE_DOWN)
    board = Board(build)
    observer = Observer(board, observe, interval=1)
    with TestClient(create_app(board, observer=observer)) as client:
        wait_for(lambda: board.current.rounds >= 2)
        hosts = {h["name"]: h for h in client.get("/api/v1/status").json()["hosts"]}
    assert hosts["server02"]["stale"] is True and hosts["server02"]["error"]["kind"] == "config"
    assert observer._thread is None  # stopped with the application


def test_an_observation_that_raises_keeps_the_board_and_the_thread() -> None:
    calls: list[int] = []

    def broken() -> FleetSnapshot:
        calls.append(1)
        raise RuntimeError("bug")

    board = Board(build)
    observer = Observer(board, broken, interval=1)
    observer.observe_once()
    assert board.failures == 1 and board.current.rounds == 0


def test_only_reads_are_allowed(served: tuple[TestClient, CountingObserve, Board]) -> None:
    client, _, _ = served
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", "/api/v1/status", "/metrics", "/healthz"):
            assert client.request(method, path).status_code == 405
    assert client.get("/static/../server.py").status_code == 404


def test_answers_carry_no_secret_and_escape_lxd_values(
    served: tuple[TestClient, CountingObserve, Board],
) -> None:
    client, _, _ = served
    for path in ("/", "/api/v1/status", "/metrics", "/healthz"):
        answer = client.get(path)
        for secret in (CLIENT_CERT, CLIENT_KEY, "secret-admin", ".crt", ".key"):
            assert secret not in answer.text, (path, secret)
        assert "default-src 'none'; script-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
    page = client.get("/").text
    assert XSS not in page and "&lt;script&gt;" in page
    api = client.get("/api/v1/status")
    assert api.headers["content-type"] == "application/json"
    assert XSS in {c["description"] for c in api.json()["containers"]}


def test_api_is_the_page_data(served: tuple[TestClient, CountingObserve, Board]) -> None:
    client, _, board = served
    assert client.get("/api/v1/status").json() == board.current.data
    assert client.get("/metrics").headers["content-type"].startswith("text/plain; version=0.0.4")


def test_healthz_is_503_until_an_observation_and_when_they_stop() -> None:
    board = Board(build)
    with TestClient(create_app(board, stale_after=60)) as client:
        assert client.get("/healthz").status_code == 503
        assert client.get("/healthz").json()["status"] == "starting"
        Observer(board, CountingObserve(BOTH_UP), interval=60).observe_once()
        assert client.get("/healthz").json() == {
            "status": "ok",
            "observed_at": board.current.data["observed_at"],
            "rounds": 1,
        }
    late = board.current.finished_at
    assert late is not None
    aged = create_app(board, stale_after=60, clock=lambda: late.replace(year=late.year + 1))
    with TestClient(aged) as client:
        assert client.get("/healthz").status_code == 503


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:9000", ("localhost", 9000)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "host:", "host:99999", "::1:8080", "a:b"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(BadListen) as caught:
        parse_listen(text)
    assert "HOST:PORT" in caught.value.hint


def test_the_default_listens_on_loopback_only() -> None:
    assert DEFAULT_LISTEN == "127.0.0.1:8080" and is_loopback(parse_listen(DEFAULT_LISTEN)[0])
    assert is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")


def test_serve_reports_a_bad_listen_without_a_traceback() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--listen", "nowhere"])
    assert result.exit_code == 1
    assert "is not HOST:PORT" in result.stderr and "what to do:" in result.stderr
    assert "Traceback" not in result.output


def test_serve_help_names_the_default_and_the_proxy() -> None:
    result = CliRunner().invoke(cli_app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "127.0.0.1:8080" in result.stdout and "reverse proxy" in result.stdout
