"""The web page's data and HTML from hand-built snapshots: a host down, a stale host, escaping,
no certificate paths (no LXD, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from lxdgpu_reconcile.report.status import status_json
from lxdgpu_reconcile.state import FleetSnapshot
from lxdgpu_reconcile.web.board import Observation, merge
from lxdgpu_reconcile.web.prometheus import metrics_text
from lxdgpu_reconcile.web.server import render_page
from lxdgpu_reconcile.web.view import page_data
from tests.unit.web.snapshots import (
    BOTH_UP,
    CLIENT_CERT,
    CLIENT_KEY,
    FLEET,
    ONE_DOWN,
    SERVER02_DOWN,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def rounds(*snapshots: FleetSnapshot) -> Observation:
    observation = Observation()
    for n, snapshot in enumerate(snapshots):
        observation = merge(observation, snapshot, now=T0 + timedelta(seconds=30 * n), duration=1)
    return observation


def data_of(*snapshots: FleetSnapshot) -> dict[str, Any]:
    return page_data(FLEET, rounds(*snapshots), interval=30)


def by_name(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        {h["name"]: h for h in data["hosts"]},
        {(c["host"], c["name"]): c for c in data["containers"]},
    )


def test_the_data_is_the_status_json_with_fields_added() -> None:
    data = data_of(BOTH_UP)
    plain = status_json(FLEET, BOTH_UP)

    assert data["format"] == plain["format"] == 1 and data["ok"] is True
    for ours, theirs in zip(data["hosts"], plain["hosts"], strict=True):
        assert {k: v for k, v in ours.items() if k in theirs} | {"gpus": None} == theirs | {
            "gpus": None
        }
    for ours, theirs in zip(data["containers"], plain["containers"], strict=True):
        assert {k: v for k, v in ours.items() if k in theirs} == theirs
    assert data["observed_at"] == "2024-05-01T12:00:00+00:00" and data["interval"] == 30


def test_page_fields_gpus_cuda_and_an_older_template_version() -> None:
    hosts, containers = by_name(data_of(BOTH_UP))
    alice = containers[("server01", "alice-container")]

    assert alice["gpus"] == ["id=1"] and alice["cuda"] == ["10.0"]
    assert alice["outdated"] is True
    assert containers[("server02", "bob-container")]["outdated"] is False
    assert [g["holders"] for g in hosts["server01"]["gpus"]] == [[], ["alice-container"]]


def test_a_host_never_read_is_down_with_its_error_and_its_containers_unknown() -> None:
    data = data_of(ONE_DOWN)
    hosts, containers = by_name(data)

    assert data["ok"] is False
    assert hosts["server02"]["reachable"] is False and hosts["server02"]["stale"] is False
    assert hosts["server02"]["error"]["kind"] == "config"
    assert containers[("server02", "bob-container")]["state"] == "unknown"
    html = render_page(data, title="Lab")
    assert 'class="host host-down"' in html and ">config</span>" in html
    assert "Permission denied" in html


def test_a_host_that_fails_after_a_good_read_shows_that_read_as_stale() -> None:
    data = data_of(BOTH_UP, ONE_DOWN)
    hosts, containers = by_name(data)

    server02 = hosts["server02"]
    assert server02["stale"] is True and server02["reachable"] is False
    assert server02["error"]["kind"] == "config"
    assert server02["read_at"] == "2024-05-01T12:00:00+00:00"
    assert server02["attempted_at"] == "2024-05-01T12:00:30+00:00"
    assert server02["lxd_version"] == "5.21.1" and server02["containers"] == 1
    bob = containers[("server02", "bob-container")]
    assert bob["stale"] is True and bob["state"] == "running" and bob["ipv4"] == ["192.0.2.20"]
    assert hosts["server01"]["stale"] is False
    assert containers[("server01", "alice-container")]["stale"] is False
    html = render_page(data, title="Lab")
    assert "host host-stale" in html and "stale: config" in html

    recovered = by_name(data_of(BOTH_UP, ONE_DOWN, BOTH_UP))[0]["server02"]
    assert recovered["stale"] is False and recovered["reachable"] is True
    assert recovered["error"] is None


def test_lxd_values_are_escaped_in_the_html() -> None:
    html = render_page(data_of(BOTH_UP), title="<b>Lab</b>")

    assert "<script>alert" not in html and "<img src=x" not in html and "<b>Lab" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in (
        html
    )
    # The only scripts are the page's own file.
    assert html.count("<script") == 1 and '<script src="static/page.js" defer>' in html


def test_no_certificate_or_key_path_reaches_the_data_page_or_metrics() -> None:
    observation = rounds(BOTH_UP, ONE_DOWN)
    data = page_data(FLEET, observation, interval=30)
    texts = [
        repr(data),
        render_page(data, title="Lab"),
        metrics_text(Observation(**{**observation.__dict__, "data": data})),
    ]
    for text in texts:
        for secret in (CLIENT_CERT, CLIENT_KEY, "server01.crt", "other.pem", "secret-admin"):
            assert secret not in text
    error = by_name(data)[0]["server02"]["error"]
    assert error["message"] == "host server02: cannot read <certificate file>: Permission denied"
    assert SERVER02_DOWN.error is not None and CLIENT_KEY in SERVER02_DOWN.error.message


def test_metrics_count_hosts_up_containers_by_state_and_errors() -> None:
    observation = rounds(BOTH_UP, ONE_DOWN)
    observation = Observation(
        **{**observation.__dict__, "data": page_data(FLEET, observation, interval=30)}
    )
    text = metrics_text(observation, failures=2)

    assert 'lxdgpu_web_host_up{host="server01"} 1' in text
    assert 'lxdgpu_web_host_up{host="server02"} 0' in text
    assert 'lxdgpu_web_host_stale{host="server02"} 1' in text
    assert 'lxdgpu_web_containers{host="server01",state="running"} 1' in text
    assert 'lxdgpu_web_containers{host="server01",state="stopped"} 1' in text
    assert 'lxdgpu_web_observation_errors_total{host="server02"} 1' in text
    assert 'lxdgpu_web_observation_errors_total{host="server01"} 0' in text
    assert "lxdgpu_web_observation_duration_seconds 1" in text
    assert "lxdgpu_web_observations_total 2" in text
    assert "lxdgpu_web_observation_failures_total 2" in text
    assert "# TYPE lxdgpu_web_host_up gauge" in text


def test_before_the_first_observation_the_page_says_it_waits() -> None:
    data = page_data(FLEET, Observation(), interval=30)

    assert data["hosts"] == [] and data["observed_at"] is None
    assert "Waiting for the first observation" in render_page(data, title="Lab")
