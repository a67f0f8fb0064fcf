"""Apply a plan: perform its actions on every host, and report each one's outcome.

Does I/O (through ``lxdops``). Apply executes the plan and nothing else: it never plans. Hosts run
in parallel, one thread and one client per host; each host's actions run in plan order. An action
runs only when everything it depends on succeeded; pending actions are reported, never performed.

Before an update or a delete the object is read again. If it no longer is what the plan saw (its
fingerprint, ``planning.fingerprint``, differs) or has lost its ownership tag, nothing is
written and the action fails with the reason. The write itself carries the ETag of that read
(``If-Match``), so a change made by someone else in between is refused by LXD, not overwritten.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import lxdops
from lxdgpu_reconcile.execute.results import ActionResult, ApplyReport, Event, Outcome
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning import plan as plans
from lxdgpu_reconcile.planning.common import ObjectKind
from lxdgpu_reconcile.spec.models import Fleet

Progress = Callable[[Event], None]
Connect = Callable[[str], Any]


def apply_plan(
    plan: plans.Plan,
    fleet: Fleet,
    *,
    timeout: float = lxdops.DEFAULT_TIMEOUT,
    progress: Progress | None = None,
    connect: Connect | None = None,
) -> ApplyReport:
    """Perform ``plan`` on the hosts of ``fleet``; ``timeout`` bounds each LXD operation."""

    def open_client(host: str) -> Any:
        return connecting.connect(host, fleet.hosts[host], timeout=timeout)

    opener = connect or open_client
    notify = progress or (lambda event: None)
    hosts = [host for host in plan.hosts if host.actions]
    if not hosts:
        return ApplyReport()
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = [pool.submit(_apply_host, h, opener, timeout, notify) for h in hosts]
        results = [result for future in futures for result in future.result()]
    return ApplyReport(results=tuple(results))


def _apply_host(
    host: plans.HostPlan, opener: Connect, timeout: float, notify: Progress
) -> list[ActionResult]:
    results: dict[str, ActionResult] = {}
    client: Any = None
    for action in host.actions:
        if action.pending is not None:
            results[action.id] = _result(action, Outcome.PENDING, action.pending)
            notify(Event(action, results[action.id]))
            continue
        blocked = [dep for dep in action.depends_on if results[dep].outcome is not Outcome.DONE]
        if blocked:
            results[action.id] = _result(
                action, Outcome.SKIPPED, f"not run: {blocked[0]} did not succeed"
            )
            notify(Event(action, results[action.id]))
            continue
        notify(Event(action))
        started = time.monotonic()
        try:
            if client is None:
                client = opener(host.host)
            message = _perform(client, action, timeout)
            outcome, hint = Outcome.DONE, ""
        except lxdops.LxdError as exc:
            outcome, message, hint = Outcome.FAILED, exc.message, exc.hint
        except connecting.HostConnectError as exc:
            outcome, message, hint = Outcome.FAILED, exc.message, exc.hint
        results[action.id] = _result(
            action, outcome, message, hint=hint, seconds=time.monotonic() - started
        )
        notify(Event(action, results[action.id]))
    return list(results.values())


def _result(
    action: plans.Action, outcome: Outcome, message: str, *, hint: str = "", seconds: float = 0.0
) -> ActionResult:
    return ActionResult(
        id=action.id,
        host=action.host,
        outcome=outcome,
        message=message,
        hint=hint,
        seconds=round(seconds, 3),
    )


def _perform(client: Any, action: plans.Action, timeout: float) -> str:
    """Do ``action``; return a short note of what was done. Raises ``lxdops.LxdError``."""
    kind, name = action.kind, action.object.name
    collection = "profiles" if action.object.kind is ObjectKind.PROFILE else "instances"
    body = action.body
    if kind is plans.ActionKind.CREATE:
        if isinstance(body, plans.CreateInstanceBody):
            lxdops.create(client, collection, body.request(), timeout=timeout)
        elif isinstance(body, plans.ProfileBody):
            lxdops.create(client, collection, body.create_request(), timeout=timeout)
        else:
            raise _malformed(action)
        return "created"
    if kind is plans.ActionKind.UPDATE:
        if not isinstance(body, plans.InstanceBody | plans.ProfileBody):
            raise _malformed(action)
        current, etag = _read_unchanged(client, action, collection)
        lxdops.put(
            client,
            collection,
            name,
            plans.put_request(body, current),
            etag=etag,
            timeout=timeout,
        )
        return "updated"
    if kind in (plans.ActionKind.START, plans.ActionKind.STOP):
        current, _ = lxdops.get(client, collection, name)
        want = "Running" if kind is plans.ActionKind.START else "Stopped"
        if current.get("status") == want:
            return f"already {want.lower()}"
        lxdops.set_state(client, name, kind.value, timeout=timeout)
        return "started" if kind is plans.ActionKind.START else "stopped"
    if kind is plans.ActionKind.DELETE:
        _read_unchanged(client, action, collection)
        lxdops.delete(client, collection, name, timeout=timeout)
        return "deleted"
    raise _malformed(action)


def _read_unchanged(
    client: Any, action: plans.Action, collection: str
) -> tuple[Mapping[str, Any], str]:
    """The object as it is now, and its ETag; fails when it is not what the plan saw."""
    current, etag = lxdops.get(client, collection, action.object.name)
    where = f"{action.object} on {action.host}"
    if action.observed is not None:
        now = _fingerprint(action, current)
        if now != action.observed:
            raise lxdops.StaleObject(
                f"{where} changed since the plan was made; nothing was written",
                hint="run plan again to see the change, then apply",
            )
    tagged = (current.get("config") or {}).get(state.TAG_MANAGED) == "true"
    if not tagged and not action.adopt:
        raise lxdops.LxdError(
            f"{where} is not tagged {state.TAG_MANAGED}; lxdgpu-reconcile does not touch it",
            hint="adopt it with --adopt, or rename it",
        )
    return current, etag


def _fingerprint(action: plans.Action, current: Mapping[str, Any]) -> str:
    preserve = (
        action.body.preserve
        if isinstance(action.body, plans.InstanceBody | plans.ProfileBody)
        else None
    )
    if action.object.kind is ObjectKind.PROFILE:
        return fingerprints.profile(reading.parse_profile(dict(current)), preserve)
    return fingerprints.instance(reading.parse_instance(dict(current)), preserve)


def _malformed(action: plans.Action) -> lxdops.LxdError:
    return lxdops.LxdError(
        f"{action.id}: the plan has no usable body for this action",
        hint="the plan was not made by this version of lxdgpu-reconcile: plan again",
    )
