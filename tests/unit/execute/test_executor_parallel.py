"""Actions of one host performed side by side (``apply --parallel``), over in-memory LXD hosts.

Each connection the executor opens is wrapped in ``_Watched``, which makes every write take a
moment and records when it ran, on which connection, and how many writes were in flight at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from lxdgpu_reconcile.execute import executor, ordering
from lxdgpu_reconcile.execute.results import Outcome
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.connect import HostConnectError
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import ObjectKind, ObjectRef
from lxdgpu_reconcile.state import HostErrorKind
from tests.fakes.fleet import FakeFleet
from tests.unit.execute.test_executor_checks import plan_for
from tests.unit.execute.test_executor_faults import _Silent
from tests.unit.planning import support

SIX = support.fleet_from(
    {
        "users": {
            f"u{i}": {"host": "h1", "template": "desk", "uid": 2000 + i, "gid": 2000 + i}
            for i in range(6)
        }
    }
)
WRITES = ("create", "set_state", "put", "delete")


class _Calls:
    """What reached the hosts: every write with its connection and interval, the peak of
    writes in flight at once, and connections used by two threads at once (never)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.log: list[tuple[str, str, int, float, float]] = []
        self.shared: list[int] = []
        self.opened = 0
        self.closed = 0

    def interval(self, verb: str, name: str) -> tuple[float, float]:
        return next((s, e) for v, n, _, s, e in self.log if (v, n) == (verb, name))


class _Watched:
    """An ``LxdApi`` over a fake host whose writes take ``delay`` seconds and are recorded."""

    def __init__(self, inner: LxdApi, calls: _Calls, delay: float) -> None:
        self.inner, self.calls, self.delay = inner, calls, delay
        self.busy = False
        with calls.lock:
            calls.opened += 1
            self.number = calls.opened

    def close(self) -> None:
        with self.calls.lock:
            self.calls.closed += 1

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        calls = self.calls

        def watched(*args: Any, **kwargs: Any) -> Any:
            if self.busy:
                calls.shared.append(self.number)
            self.busy = True
            try:
                if name not in WRITES:
                    return method(*args, **kwargs)
                with calls.lock:
                    calls.in_flight += 1
                    calls.peak = max(calls.peak, calls.in_flight)
                start = time.monotonic()
                try:
                    time.sleep(self.delay)
                    return method(*args, **kwargs)
                finally:
                    with calls.lock:
                        calls.in_flight -= 1
                        target = args[1]["name"] if name == "create" else args[0]
                        target = target if isinstance(target, str) else "?"
                        calls.log.append((name, target, self.number, start, time.monotonic()))
            finally:
                self.busy = False

        return watched


def _apply(
    fleet: Fleet = SIX, *, parallel: int, fail: str | None = None, delay: float = 0.05
) -> tuple[plans.Plan, dict[str, Any], _Calls, FakeFleet]:
    made, snapshot = plan_for({"h1": {}}, fleet)
    hosts = FakeFleet(snapshot)
    if fail is not None:
        hosts.hosts["h1"].fail("create", fail, "Failed creating instance record")
    calls = _Calls()

    def connect(host: str) -> LxdApi:
        return _Watched(hosts.connect(host), calls, delay)

    report = executor.apply_plan(made, fleet, timeout=5.0, connect=connect, parallel=parallel)
    assert [r.id for r in report.results] == [a.id for a in made.actions]  # plan order
    return made, {r.id: r for r in report.results}, calls, hosts


def test_independent_creates_overlap_up_to_the_width() -> None:
    _, results, calls, hosts = _apply(parallel=4)
    assert {r.outcome for r in results.values()} == {Outcome.DONE}
    assert 1 < calls.peak <= 4
    assert all(hosts.hosts["h1"].snapshot().instances[f"u{i}-container"].running for i in range(6))
    assert calls.shared == []  # one connection per worker: never two threads on one
    assert 1 < calls.opened <= 4 and calls.closed == calls.opened


def test_a_container_starts_only_after_its_create_ended() -> None:
    _, _, calls, _ = _apply(parallel=4)
    for i in range(6):
        name = f"u{i}-container"
        assert calls.interval("create", name)[1] <= calls.interval("set_state", name)[0]


def test_a_failure_skips_only_what_depends_on_it() -> None:
    _, results, _, hosts = _apply(parallel=4, fail="u2-container")
    assert results["h1/instance/u2-container/create"].outcome is Outcome.FAILED
    skipped = results["h1/instance/u2-container/start"]
    assert skipped.outcome is Outcome.SKIPPED
    assert skipped.message == "not run: h1/instance/u2-container/create did not succeed"
    others = [r for r in results.values() if "/u2-container/" not in r.id]
    assert len(others) == 10 and {r.outcome for r in others} == {Outcome.DONE}
    assert "u2-container" not in hosts.hosts["h1"].instances


def test_width_one_runs_a_host_one_action_after_another_in_plan_order() -> None:
    made, results, calls, _ = _apply(parallel=1)
    assert {r.outcome for r in results.values()} == {Outcome.DONE}
    assert calls.peak == 1 and calls.opened == calls.closed == 1
    ran = [(verb, name) for verb, name, *_ in calls.log]
    verbs = {plans.ActionKind.CREATE: "create", plans.ActionKind.START: "set_state"}
    assert ran == [(verbs[a.kind], a.object.name) for a in made.actions]


def test_a_host_that_stops_answering_is_asked_only_by_the_actions_already_running() -> None:
    made, _ = plan_for({"h1": {}}, SIX)
    silent = _Silent()
    report = executor.apply_plan(made, SIX, timeout=5.0, connect=lambda h: silent, parallel=4)
    outcomes = [r.outcome for r in report.results]
    # Only the actions already running when the first got no answer asked the host.
    failed = outcomes.count(Outcome.FAILED)
    assert 1 <= failed == silent.calls <= 4
    assert outcomes.count(Outcome.SKIPPED) == len(made.actions) - failed
    skipped = [r for r in report.results if r.outcome is Outcome.SKIPPED]
    assert all(r.message.startswith(executor.HOST_STOPPED_ANSWERING) for r in skipped)


def test_a_host_that_cannot_be_reached_is_connected_to_once_whatever_the_width() -> None:
    made, _ = plan_for({"h1": {}}, SIX)
    opened: list[str] = []

    def connect(host: str) -> LxdApi:
        opened.append(host)
        raise HostConnectError(HostErrorKind.TIMEOUT, "host h1: no answer within 5 s")

    report = executor.apply_plan(made, SIX, timeout=5.0, connect=connect, parallel=8)
    outcomes = [r.outcome for r in report.results]
    assert outcomes.count(Outcome.FAILED) == 1 and opened == ["h1"]
    assert outcomes.count(Outcome.SKIPPED) == len(made.actions) - 1


def test_an_unexpected_error_in_a_worker_is_raised_and_the_rest_is_not_run() -> None:
    made, snapshot = plan_for({"h1": {}}, SIX)
    hosts = FakeFleet(snapshot)
    seen: list[Any] = []

    def progress(event: Any) -> None:
        seen.append(event)
        if event.result is None and event.action.id.endswith("u1-container/create"):
            raise RuntimeError("a bug")

    try:
        executor.apply_plan(made, SIX, connect=hosts.connect, progress=progress, parallel=4)
    except RuntimeError as exc:
        assert str(exc) == "a bug"
    else:
        raise AssertionError("the worker's error was not raised")
    ended = [e.action.id for e in seen if e.result is not None]
    assert len(ended) == len(set(ended)) == len(made.actions)  # each result published once


# --- ordering: what waits for what --------------------------------------------------------------


def _action(kind: plans.ActionKind, obj: ObjectKind, name: str, step: str) -> plans.Action:
    return plans.Action(
        id=f"h1/{obj.value}/{name}/{step}",
        kind=kind,
        host="h1",
        object=ObjectRef(kind=obj, name=name),
    )


K, INST, P, T = plans.ActionKind, ObjectKind.INSTANCE, ObjectKind.PROFILE, ObjectKind.TEMPLATE
LEFTOVER = _action(K.DELETE, INST, "build-desk", "leftover-delete")
BUILD = _action(K.BUILD, T, "desk", "template-build")
PROFILE = _action(K.UPDATE, P, "gpu", "profile-write")
CREATE_A = _action(K.CREATE, INST, "a", "create")
CREATE_B = _action(K.CREATE, INST, "b", "create")
START_A = _action(K.START, INST, "a", "start")
DROP = _action(K.DELETE, P, "old", "profile-delete")
HOST = plans.HostPlan(
    host="h1",
    applyable=True,
    actions=(LEFTOVER, BUILD, PROFILE, CREATE_A, CREATE_B, START_A, DROP),
)


def test_wide_ordering_keeps_each_object_in_order_and_profiles_and_templates_apart() -> None:
    after = ordering.after(HOST, 4)
    assert after[LEFTOVER.id] == ()
    assert after[BUILD.id] == (LEFTOVER.id,)  # a template action waits for all before it
    assert after[PROFILE.id] == ()
    assert after[CREATE_A.id] == (PROFILE.id,)  # a container waits for the profile writes
    assert after[CREATE_B.id] == (PROFILE.id,)  # ... but not for another container
    assert after[START_A.id] == (PROFILE.id, CREATE_A.id)
    assert after[DROP.id] == tuple(a.id for a in HOST.actions[:-1])


def test_width_one_orders_every_action_after_the_one_before() -> None:
    after = ordering.after(HOST, 1)
    ids = [a.id for a in HOST.actions]
    assert [after[i] for i in ids] == [(), *[(earlier,) for earlier in ids[:-1]]]


def test_a_cycle_only_through_plan_order_is_none_when_wide() -> None:
    # Width 1: a runs c1 then c2, c1 waits for b's c2 behind b's c1, which waits for a's c2.
    def start(host: str, name: str, *deps: str) -> plans.Action:
        action = _action(K.START, INST, name, "start")
        return action.model_copy(update={"id": f"{host}/{name}", "host": host, "depends_on": deps})

    a = plans.HostPlan(
        host="a", applyable=True, actions=(start("a", "c1", "b/c2"), start("a", "c2"))
    )
    b = plans.HostPlan(
        host="b", applyable=True, actions=(start("b", "c1", "a/c2"), start("b", "c2"))
    )
    assert executor._never_ready([a, b], 1) == {"a/c1", "a/c2", "b/c1", "b/c2"}
    assert executor._never_ready([a, b], 4) == set()


def test_the_command_line_default_is_the_executor_default() -> None:
    from lxdgpu_reconcile.cli import common

    assert common.DEFAULT_PARALLEL == ordering.DEFAULT_WIDTH
