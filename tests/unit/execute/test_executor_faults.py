"""The executor when a host stops answering mid-apply, over in-memory LXD hosts.

A host whose request gets no answer (a timeout, a refused or dropped connection) would cost a
whole timeout per remaining action; the executor skips the rest of that host's actions at once,
and the other hosts go on.
"""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile.execute import executor
from lxdgpu_reconcile.execute.results import Outcome
from lxdgpu_reconcile.observe.connect import HostConnectError
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.observe.lxderrors import NO_ANSWER_HINT, LxdError, transport_failure
from lxdgpu_reconcile.state import HostErrorKind
from tests.fakes.fleet import FakeFleet
from tests.unit.execute.test_executor_checks import TWO, plan_for


class _Silent:
    """An ``LxdApi`` whose host no longer answers: every request fails as a timeout."""

    def __init__(self) -> None:
        self.calls = 0

    def close(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        def no_answer(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise transport_failure(
                f"{name} on h1",
                "HTTPSConnectionPool(host='192.0.2.11', port=8443): Read timed out. "
                "(read timeout=5.0)",
                timed_out=True,
            )

        return no_answer


def test_a_host_that_stops_answering_has_its_remaining_actions_skipped_at_once() -> None:
    made, snapshot = plan_for({"h1": {}, "h2": {}}, TWO)
    hosts = FakeFleet(snapshot)
    silent = _Silent()

    def connect(host: str) -> LxdApi:
        return silent if host == "h1" else hosts.connect(host)  # type: ignore[return-value]

    report = executor.apply_plan(made, TWO, timeout=5.0, connect=connect)
    results = {r.id: r for r in report.results}

    first = results["h1/instance/tom-container/create"]
    assert first.outcome is Outcome.FAILED
    assert first.message == "create on h1: the host at 192.0.2.11:8443 did not answer within 5 s"
    rest = [r for r in report.results if r.host == "h1" and r.id != first.id]
    assert rest and all(r.outcome is Outcome.SKIPPED for r in rest)
    assert all(r.message.startswith(executor.HOST_STOPPED_ANSWERING) for r in rest)
    assert all(r.hint == NO_ANSWER_HINT for r in rest)
    assert silent.calls == 1  # one request timed out; none after it
    assert [r.outcome for r in report.results if r.host == "h2"] == [Outcome.DONE] * 2


def test_a_host_that_cannot_be_reached_at_connect_is_skipped_the_same_way() -> None:
    made, snapshot = plan_for({"h1": {}, "h2": {}}, TWO)
    hosts = FakeFleet(snapshot)
    opened: list[str] = []

    def connect(host: str) -> LxdApi:
        if host == "h1":
            opened.append(host)
            raise HostConnectError(HostErrorKind.TIMEOUT, "host h1: no answer within 5 s")
        return hosts.connect(host)

    report = executor.apply_plan(made, TWO, timeout=5.0, connect=connect)

    h1 = [r for r in report.results if r.host == "h1"]
    assert [r.outcome for r in h1] == [Outcome.FAILED] + [Outcome.SKIPPED] * (len(h1) - 1)
    assert opened == ["h1"]


def test_an_lxd_error_with_an_answer_does_not_skip_the_host() -> None:
    made, snapshot = plan_for({"h1": {}, "h2": {}}, TWO)
    hosts = FakeFleet(snapshot)
    hosts.hosts["h1"].fail("create", "tom-container", "Failed creating instance record")

    results = {r.id: r for r in executor.apply_plan(made, TWO, connect=hosts.connect).results}

    skipped = results["h1/instance/tom-container/start"]
    assert "did not succeed" in skipped.message
    assert not LxdError("x").unanswered
