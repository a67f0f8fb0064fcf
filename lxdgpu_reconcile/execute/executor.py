"""Apply a plan: perform its actions on every host, and report each one's outcome.

Does I/O, through the ``observe.lxdapi.LxdApi`` connections that ``connect`` opens (pylxd clients
of the fleet's hosts unless told otherwise). Apply executes the plan and nothing else: it never
plans. Hosts run in parallel, one thread and one connection per host; each host's actions run in
plan order. An action runs only when everything it depends on succeeded; pending actions, and
every action of a host the plan marks not applyable, are reported, never performed. An action
whose dependencies can never finish (waiting on each other) is skipped before anything runs, and
one on an action that is not in the plan is skipped, so no host waits forever.

Before an update or a delete the object is read again. If it no longer is what the plan saw (its
fingerprint, ``planning.fingerprint``, differs) or has lost its ownership tag, nothing is
written and the action fails with the reason. The stop that precedes an update or a delete makes
the same check first, so a container that changed is not stopped for a write that is refused.
The write itself carries the ETag of that read (``If-Match``), so a change made by someone else
in between is refused by LXD, not overwritten.

Whatever the plan says, the executor keeps its invariants (``execute.invariants``): no write to
an untagged object unless this run was given ``--adopt`` for it, no delete unless it was given
``--prune`` (``Authority``, passed by the caller, never read from the plan), and no body with a
key or device that ``validate`` refuses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from lxdgpu_reconcile.execute import (
    images,
    invariants,
    lxdops,
    release,
    requests,
    template_actions,
)
from lxdgpu_reconcile.execute.invariants import Authority as Authority
from lxdgpu_reconcile.execute.results import ActionResult, ApplyReport, Event, Outcome
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.observe.lxdapi import Connect, LxdApi
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import ObjectKind
from lxdgpu_reconcile.state import HostErrorKind
from lxdgpu_reconcile.templates import recipe

Progress = Callable[[Event], None]


def apply_plan(
    plan: plans.Plan,
    fleet: Fleet,
    *,
    timeout: float = lxdops.DEFAULT_TIMEOUT,
    progress: Progress | None = None,
    template_files: Mapping[str, Mapping[str, bytes]] | None = None,
    connect: Connect | None = None,
    step_timeout: float = images.DEFAULT_STEP_TIMEOUT,
    authority: Authority = Authority(),
) -> ApplyReport:
    """Perform ``plan`` on the hosts of ``fleet``; ``timeout`` bounds each LXD operation,
    ``step_timeout`` each step of a template build.

    ``authority`` is what this run was given (``--adopt``, ``--prune``): the plan's own options
    and ``adopt`` flags never widen it. Default: no adopt, no delete (but of build containers).

    ``connect`` opens the API of a host by name (default: a pinned pylxd client of the fleet's
    host, ``observe.connect.connect``); each connection is closed once its host is done.

    ``template_files`` holds, per template, the contents of the files it pushes (read from the
    fleet's folder); a build checks them against the recipe hash the plan was made with.
    """

    hosts = [host for host in plan.hosts if host.actions]
    if not hosts:
        return ApplyReport()
    run = _Run(
        fleet=fleet,
        actions={action.id: action for host in hosts for action in host.actions},
        timeout=timeout,
        notify=progress or (lambda event: None),
        template_files=template_files or {},
        connect=connect or _pylxd_connect(fleet, timeout),
        step_timeout=step_timeout,
        authority=authority,
    )
    for action_id in _never_ready(hosts):
        message = "not run: it waits, through its dependencies, on itself; plan again"
        run.publish(
            run.actions[action_id], _result(run.actions[action_id], Outcome.SKIPPED, message)
        )
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = [pool.submit(run.host, h) for h in hosts]
        for future in futures:
            future.result()
    order = [action.id for host in hosts for action in host.actions]
    return ApplyReport(results=tuple(run.results[action_id] for action_id in order))


def _pylxd_connect(fleet: Fleet, timeout: float) -> Connect:
    def connect(host: str) -> LxdApi:
        return connecting.connect(host, fleet.hosts[host], timeout=timeout)

    return connect


class _Run:
    """One apply: what every host thread shares. Results are published under a condition so
    that an action can wait for one on another host (a template copy waits for its build)."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        actions: Mapping[str, plans.Action],
        timeout: float,
        notify: Progress,
        template_files: Mapping[str, Mapping[str, bytes]],
        connect: Connect,
        step_timeout: float,
        authority: Authority,
    ) -> None:
        self.fleet = fleet
        self.authority = authority
        self.step_timeout = step_timeout
        self.connect = connect
        self.actions = actions
        self.timeout = timeout
        self.notify = notify
        self.template_files = template_files
        self.results: dict[str, ActionResult] = {}
        self._published = threading.Condition()

    def publish(self, action: plans.Action, result: ActionResult) -> None:
        with self._published:
            self.results[action.id] = result
            self._published.notify_all()
        self.notify(Event(action, result))

    def outcome_of(self, action_id: str) -> Outcome:
        """The outcome of ``action_id``, waiting for it when it runs on another host (never for one
        that is not in the plan, or that ``_never_ready`` skipped)."""
        if action_id not in self.actions:
            return Outcome.SKIPPED
        with self._published:
            self._published.wait_for(lambda: action_id in self.results)
            return self.results[action_id].outcome

    def host(self, host: plans.HostPlan) -> None:
        """Perform ``host``'s actions in order. Every action gets a result, whatever happens, so
        that no other host waits for one forever."""
        try:
            self._host(host)
        finally:
            for action in host.actions:
                if action.id not in self.results:
                    message = "not run: the apply of this host stopped early"
                    self.publish(action, _result(action, Outcome.SKIPPED, message))

    def _host(self, host: plans.HostPlan) -> None:
        client: LxdApi | None = None
        #: Set once a request to the host got no answer: its remaining actions are skipped.
        silent: str | None = None
        try:
            for action in host.actions:
                if action.id in self.results:
                    continue
                if action.pending is not None or not host.applyable:
                    reason = action.pending or "held back: the plan has errors for this host"
                    self.publish(action, _result(action, Outcome.PENDING, reason))
                    continue
                if silent is not None:
                    self.publish(action, _not_answering(action, silent))
                    continue
                blocked = [d for d in action.depends_on if self.outcome_of(d) is not Outcome.DONE]
                if blocked:
                    message = f"not run: {blocked[0]} did not succeed"
                    self.publish(action, _result(action, Outcome.SKIPPED, message))
                    continue
                self.notify(Event(action))
                started = time.monotonic()
                try:
                    if client is None:
                        client = self.open(host.host)
                    message = self.perform(client, action)
                    outcome, hint = Outcome.DONE, ""
                except (lxdops.LxdError, connecting.HostConnectError) as exc:
                    outcome, message, hint = Outcome.FAILED, exc.message, exc.hint
                    silent = action.id if _unanswered(exc) else None
                seconds = time.monotonic() - started
                self.publish(action, _result(action, outcome, message, hint=hint, seconds=seconds))
        finally:
            if client is not None:
                client.close()

    def open(self, host: str) -> LxdApi:
        return self.connect(host)

    def perform(self, client: LxdApi, action: plans.Action) -> str:
        """Do ``action``; a short note of what was done. Raises ``lxdops.LxdError``."""
        body = action.body
        if isinstance(body, plans.BuildTemplateBody):
            return self.build(client, action, body)
        if isinstance(body, plans.CopyTemplateBody):
            return self.copy(client, body)
        if isinstance(body, plans.AliasTemplateBody):
            return template_actions.alias(client, body)
        owner = self.actions.get(action.part_of or "")
        rules = _Rules(self.fleet, self.authority)
        return _perform(client, action, self.timeout, owner=owner, rules=rules)

    def build(self, client: LxdApi, action: plans.Action, body: plans.BuildTemplateBody) -> str:
        def show(line: str, event: images.BuildEvent) -> None:
            self.notify(Event(action, line=line, build=event))

        files = self.template_files.get(body.template) or recipe.inline_contents(body.spec)
        return template_actions.build(
            client,
            body,
            files=files,
            timeout=self.timeout,
            step_timeout=self.step_timeout,
            show=show,
        )

    def copy(self, client: LxdApi, body: plans.CopyTemplateBody) -> str:
        source = self.open(body.source_host)
        try:
            endpoint = self.fleet.hosts[body.source_host].endpoint
            return template_actions.copy(
                source, client, body, source_endpoint=endpoint, timeout=self.timeout
            )
        finally:
            source.close()


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


#: The message of an action skipped because an earlier action of its host got no answer.
HOST_STOPPED_ANSWERING = "not run: host stopped answering"


def _unanswered(exc: lxdops.LxdError | connecting.HostConnectError) -> bool:
    """Whether ``exc`` means the host gave no answer: a timeout or a lost connection."""
    if isinstance(exc, connecting.HostConnectError):
        return exc.kind in (HostErrorKind.TIMEOUT, HostErrorKind.UNREACHABLE)
    return exc.unanswered


def _not_answering(action: plans.Action, failed: str) -> ActionResult:
    """The result of an action not run because ``failed``, earlier on its host, got no answer:
    each would wait a whole timeout in turn."""
    return _result(
        action,
        Outcome.SKIPPED,
        f"{HOST_STOPPED_ANSWERING} ({failed} got no answer)",
        hint=lxdops.NO_ANSWER_HINT,
    )


def _never_ready(hosts: Sequence[plans.HostPlan]) -> set[str]:
    """Actions that would wait forever: each host runs its actions in order, and an action waits
    for its ``depends_on``; what is left once everything that can become ready has is in (or
    behind) a cycle. A dependency that is not in the plan counts as ready (it is skipped)."""
    waits: dict[str, set[str]] = {}
    for host in hosts:
        previous: set[str] = set()
        for action in host.actions:
            waits[action.id] = previous | (set() if action.pending else set(action.depends_on))
            previous = {action.id}
    ready = {dep for deps in waits.values() for dep in deps if dep not in waits}
    grew = True
    while grew:
        now = {action_id for action_id, deps in waits.items() if deps <= ready}
        grew = not now <= ready
        ready |= now
    return set(waits) - ready


@dataclass(frozen=True)
class _Rules:
    """What the invariants are checked against: the fleet file and this run's authority."""

    fleet: Fleet
    authority: Authority


def _perform(
    client: LxdApi,
    action: plans.Action,
    timeout: float,
    *,
    owner: plans.Action | None = None,
    rules: _Rules,
) -> str:
    """Do ``action`` (``owner``: the action it is a step of); return a short note of what was
    done. Raises ``lxdops.LxdError`` (``invariants.NotAllowed`` for what no plan may do)."""
    kind, name = action.kind, action.object.name
    collection = "profiles" if action.object.kind is ObjectKind.PROFILE else "instances"
    body = action.body
    if kind is plans.ActionKind.CREATE:
        invariants.check_body(action, rules.fleet, rules.authority)
        if isinstance(body, plans.CreateInstanceBody):
            lxdops.create(
                client, collection, requests.create_instance_request(body), timeout=timeout
            )
        elif isinstance(body, plans.ProfileBody):
            lxdops.create(
                client, collection, requests.create_profile_request(body), timeout=timeout
            )
        else:
            raise _malformed(action)
        return "created"
    if kind is plans.ActionKind.UPDATE:
        if not isinstance(body, plans.InstanceBody | plans.ProfileBody):
            raise _malformed(action)
        current, etag = _read_unchanged(client, action, collection, rules)
        invariants.check_body(action, rules.fleet, rules.authority, current)
        lxdops.put(
            client,
            collection,
            name,
            requests.put_request(body, current),
            etag=etag,
            timeout=timeout,
        )
        return "updated"
    if kind in (plans.ActionKind.START, plans.ActionKind.STOP):
        if kind is plans.ActionKind.STOP and owner is not None and owner.observed is not None:
            # The stop before an update or a delete: only if that write will be allowed.
            current, _ = _read_unchanged(client, owner, collection, rules)
            if owner.kind is plans.ActionKind.UPDATE:
                invariants.check_body(owner, rules.fleet, rules.authority, current)
        else:
            current, _ = lxdops.get(client, collection, name)
            invariants.check_live(action, current, rules.fleet, rules.authority)
        want = "Running" if kind is plans.ActionKind.START else "Stopped"
        if current.get("status") == want:
            return f"already {want.lower()}"
        lxdops.set_state(client, name, kind.value, timeout=timeout)
        return "started" if kind is plans.ActionKind.START else "stopped"
    if kind is plans.ActionKind.DELETE:
        current, etag = _read_unchanged(client, action, collection, rules)
        if collection == "instances":
            release.release_if_unfinished(client, name, current, etag, timeout=timeout)
        lxdops.delete(client, collection, name, timeout=timeout)
        return "deleted"
    raise _malformed(action)


def _read_unchanged(
    client: LxdApi, action: plans.Action, collection: str, rules: _Rules
) -> tuple[Mapping[str, Any], str]:
    """The object as it is now, and its ETag; fails when it is not what the plan saw, or when
    the invariants forbid ``action`` on it (untagged, or a delete without ``--prune``)."""
    current, etag = lxdops.get(client, collection, action.object.name)
    where = f"{action.object} on {action.host}"
    if action.observed is not None:
        now = _fingerprint(action, current)
        if now != action.observed:
            raise lxdops.StaleObject(
                f"{where} changed since the plan was made; nothing was written",
                hint="run plan again to see the change, then apply",
            )
    invariants.check_live(action, current, rules.fleet, rules.authority)
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
