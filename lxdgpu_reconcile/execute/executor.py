"""Apply a plan: perform its actions on every host, and report each one's outcome.

Does I/O, through the ``observe.lxdapi.LxdApi`` connections that ``connect`` opens (pylxd clients
of the fleet's hosts unless told otherwise). Apply executes the plan and nothing else: it never
plans. Hosts run in parallel, one thread per host; within a host up to ``parallel`` actions run at
once, each with a connection of its own (``execute.lanes``), in plan order as far as
``execute.ordering`` allows: the steps of one object, and what depends on what, keep their order;
with ``parallel=1`` a host's actions run one after another. An action runs only when everything
it depends on succeeded; pending actions, and every action of a host the plan marks not
applyable, are reported, never performed. An action whose dependencies can never finish (waiting
on each other) is skipped before anything runs, and one on an action that is not in the plan is
skipped, so no host waits forever.

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

from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute import (
    cluster_moves,
    host_actions,
    host_checks,
    images,
    invariants,
    lanes,
    lxdops,
    moves,
    ordering,
    passwords,
    release,
    requests,
    template_actions,
)
from lxdgpu_reconcile.execute.credentials import CredentialStore
from lxdgpu_reconcile.execute.invariants import Authority as Authority
from lxdgpu_reconcile.execute.results import ActionResult, ApplyReport, Event, Outcome
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.observe.hostshell import HostShell, OpenShell, member_shell
from lxdgpu_reconcile.observe.lxdapi import Connect, LxdApi
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import ObjectKind
from lxdgpu_reconcile.state import HostErrorKind
from lxdgpu_reconcile.templates import recipe

Progress = Callable[[Event], None]
#: Actions performed at once on one host (``apply --parallel``): see ``execute.ordering``.
DEFAULT_PARALLEL = ordering.DEFAULT_WIDTH


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
    parallel: int = DEFAULT_PARALLEL,
    open_shell: OpenShell | None = None,
    credentials: CredentialStore | None = None,
) -> ApplyReport:
    """Perform ``plan`` on the hosts of ``fleet``; ``timeout`` bounds each LXD operation,
    ``step_timeout`` each step of a template build; up to ``parallel`` actions run at once on
    each host (1: one after another, in plan order).

    ``authority`` is what this run was given (``--adopt``, ``--prune``): the plan's own options
    and ``adopt`` flags never widen it. Default: no adopt, no delete (but of build containers).

    ``connect`` opens the API of a host by name (default: a pinned pylxd client of the fleet's
    host, ``observe.connect.connect``); each connection is closed once its host is done.

    ``template_files`` holds, per template, the contents of the files it pushes (read from the
    fleet's folder); a build checks them against the recipe hash the plan was made with.

    ``open_shell`` opens the shell of a host's own system (``observe.transport.open_shell``):
    actions on accounts, homes and delegations run through it (``execute.host_actions``); a
    host it gives no shell for (or without it) fails them, saying how to reach the host.

    ``credentials``: the admin's credentials store; the start of a container this plan creates
    sets its first password there (``execute.passwords``). None: no first passwords are set.
    """

    hosts = [host for host in plan.hosts if host.actions]
    if not hosts:
        return ApplyReport()
    width = max(1, parallel)
    run = _Run(
        fleet=fleet,
        hosts=hosts,
        width=width,
        timeout=timeout,
        notify=progress or (lambda event: None),
        template_files=template_files or {},
        connect=connect or _pylxd_connect(fleet, timeout),
        step_timeout=step_timeout,
        authority=authority,
        open_shell=open_shell,
        credentials=credentials,
    )
    for action_id in sorted(_never_ready(hosts, width), key=run.index.__getitem__):
        message = "not run: it waits, through its dependencies, on itself; plan again"
        run.publish(
            run.actions[action_id], _result(run.actions[action_id], Outcome.SKIPPED, message)
        )
    run.seed()
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
    """One apply: what every host thread and worker shares. Results are published under a
    condition; publishing one makes ready what waited only for it (``ordering.waits``), on its
    host's lane or another's (a template copy waits for its build on another host)."""

    def __init__(
        self,
        *,
        fleet: Fleet,
        hosts: Sequence[plans.HostPlan],
        width: int,
        timeout: float,
        notify: Progress,
        template_files: Mapping[str, Mapping[str, bytes]],
        connect: Connect,
        step_timeout: float,
        authority: Authority,
        open_shell: OpenShell | None = None,
        credentials: CredentialStore | None = None,
    ) -> None:
        self.fleet = fleet
        self.credentials = credentials
        self._open_shell = open_shell
        self._shells: dict[tuple[str, str | None], HostShell | None] = {}
        self._shells_lock = threading.Lock()
        self.authority = authority
        self.step_timeout = step_timeout
        self.connect = connect
        self.actions = {action.id: action for host in hosts for action in host.actions}
        self.index = {action_id: index for index, action_id in enumerate(self.actions)}
        #: Creates whose start is in the plan (a first password is set when it starts).
        self.started = {
            a.part_of for a in self.actions.values() if a.kind is plans.ActionKind.START
        }
        self.width = width
        self.timeout = timeout
        self._notify = notify
        self._notifying = threading.Lock()
        self.template_files = template_files
        self.results: dict[str, ActionResult] = {}
        self._published = threading.Condition()
        self.lanes = {host.host: lanes.Lane(host, self.open) for host in hosts}
        after, every = ordering.waits(hosts, width)
        #: What each action still waits for: earlier actions of its host, and dependencies.
        self._after = {key: {d for d in deps if d in self.actions} for key, deps in after.items()}
        self._deps = {key: {d for d in deps if d in self.actions} for key, deps in every.items()}
        self._followers: dict[str, list[str]] = {}
        for action_id, deps in every.items():
            for dep in deps:
                self._followers.setdefault(dep, []).append(action_id)

    def notify(self, event: Event) -> None:
        """Tell the progress callback, one event at a time."""
        with self._notifying:
            self._notify(event)

    def publish(self, action: plans.Action, result: ActionResult) -> None:
        with self._published:
            if action.id in self.results:
                return
            self.results[action.id] = result
            self.lanes[action.host].left -= 1
            for follower in self._followers.get(action.id, ()):
                self._after[follower].discard(action.id)
                self._deps[follower].discard(action.id)
                self._promote(follower)
            self._published.notify_all()
        self.notify(Event(action, result))

    def seed(self) -> None:
        """Hand out every action that waits for nothing."""
        with self._published:
            for action_id in self.actions:
                self._promote(action_id)
            self._published.notify_all()

    def _promote(self, action_id: str) -> None:
        """Queue ``action_id`` on its lane once it may start (under the condition): instant
        when it will not run (pending, host silent, a dependency failed)."""
        if action_id in self.results or self._after[action_id]:
            return
        action = self.actions[action_id]
        lane = self.lanes[action.host]
        if action.pending is not None or not lane.host.applyable or lane.silent is not None:
            lane.push(self.index[action_id], action_id, instant=True)
        elif not self._deps[action_id]:
            blocked = any(self.outcome_of(d) is not Outcome.DONE for d in action.depends_on)
            lane.push(self.index[action_id], action_id, instant=blocked)

    def outcome_of(self, action_id: str) -> Outcome:
        """The outcome of ``action_id``, waiting for it when it runs on another host (never for one
        that is not in the plan, or that ``_never_ready`` skipped)."""
        if action_id not in self.actions:
            return Outcome.SKIPPED
        with self._published:
            self._published.wait_for(lambda: action_id in self.results)
            return self.results[action_id].outcome

    def host(self, host: plans.HostPlan) -> None:
        """Perform ``host``'s actions. Every action gets a result, whatever happens, so that no
        other host waits for one forever."""
        try:
            self._host(self.lanes[host.host])
        finally:
            for action in host.actions:
                if action.id not in self.results:
                    message = "not run: the apply of this host stopped early"
                    self.publish(action, _result(action, Outcome.SKIPPED, message))

    def _host(self, lane: lanes.Lane) -> None:
        """Hand out the lane's actions as they become ready: an instant result here, a run to a
        worker (at most ``width`` at once); raises what a worker raised unexpectedly."""
        name = f"apply-{lane.host.host}"
        try:
            with ThreadPoolExecutor(max_workers=self.width, thread_name_prefix=name) as workers:
                while True:
                    with self._published:
                        self._published.wait_for(lambda: lane.stirs(self.width))
                        if lane.error is not None or not lane.left:
                            break
                        picked = lane.pop(width=self.width)
                        if picked is None:
                            continue
                        action = self.actions[picked[0]]
                        run = not picked[1] and lane.silent is None
                        if run:
                            lane.running += 1
                        result = None if run else self._settled(action, lane)
                    if result is None:
                        workers.submit(self._work, lane, action)
                    else:
                        self.publish(action, result)
        finally:
            lane.close()
        if lane.error is not None:
            raise lane.error

    def _settled(self, action: plans.Action, lane: lanes.Lane) -> ActionResult:
        """The result of an action that does not run (under the condition)."""
        if action.pending is not None or not lane.host.applyable:
            reason = action.pending or "held back: the plan has errors for this host"
            return _result(action, Outcome.PENDING, reason)
        if lane.silent is not None:
            return _not_answering(action, lane.silent)
        outcomes = {d: self.outcome_of(d) for d in action.depends_on}
        blocked = [d for d, outcome in outcomes.items() if outcome is not Outcome.DONE]
        if all(outcomes[d] is Outcome.PENDING for d in blocked):
            return _result(action, Outcome.PENDING, f"waits for {blocked[0]}, which is pending")
        return _result(action, Outcome.SKIPPED, f"not run: {blocked[0]} did not succeed")

    def _work(self, lane: lanes.Lane, action: plans.Action) -> None:
        """Run ``action`` in a worker of its lane and publish its result."""
        try:
            self.publish(action, self._perform_on(lane, action))
        except BaseException as exc:  # a bug: the lane stops, the executor raises it
            with self._published:
                lane.error = lane.error or exc
        finally:
            with self._published:
                lane.running -= 1
                self._published.notify_all()

    def _perform_on(self, lane: lanes.Lane, action: plans.Action) -> ActionResult:
        if lane.silent is not None:
            return _not_answering(action, lane.silent)
        self.notify(Event(action))
        started = time.monotonic()
        if host_actions.is_host_action(action):
            return self._perform_host(action, started)
        client: LxdApi | None = None
        try:
            client = lane.acquire()
            message = self.perform(client, action)
            outcome, hint = Outcome.DONE, ""
        except lanes.Silenced as exc:
            return _not_answering(action, exc.failed)
        except moves.GpuBusy as exc:  # held, as the plan holds it when it sees the GPUs busy
            outcome, message, hint = Outcome.PENDING, exc.message, exc.hint
        except (lxdops.LxdError, connecting.HostConnectError) as exc:
            outcome, message, hint = Outcome.FAILED, exc.message, exc.hint
            if _unanswered(exc):
                self._silence(lane, action.id)
        finally:
            if client is not None:
                lane.release(client)
        seconds = time.monotonic() - started
        return _result(action, outcome, message, hint=hint, seconds=seconds)

    def _perform_host(self, action: plans.Action, started: float) -> ActionResult:
        """Perform an action on the host's own system (account, home, delegation)."""
        try:
            message = host_actions.perform(
                self.shell(action.host, host_checks.member_of(action)),
                action,
                self.fleet,
                self.authority,
            )
            outcome, hint = Outcome.DONE, ""
        except ToolError as exc:  # a command failed, a refusal, the host unreachable
            outcome, message, hint = Outcome.FAILED, exc.message, exc.hint
        seconds = time.monotonic() - started
        return _result(action, outcome, message, hint=hint, seconds=seconds)

    def shell(self, host: str, member: str | None = None) -> HostShell | None:
        """The shell of ``host``'s own system (of its cluster ``member``'s), opened once per
        apply; None: none."""
        with self._shells_lock:
            if (host, member) not in self._shells:
                opener = self._open_shell
                self._shells[host, member] = (
                    member_shell(opener, host, member)
                    if member is not None
                    else opener(host)
                    if opener is not None
                    else None
                )
            return self._shells[host, member]

    def _silence(self, lane: lanes.Lane, failed: str) -> None:
        """``failed`` got no answer: what of the lane has not started is skipped."""
        with self._published:
            if lane.silent is None:
                lane.silent = failed
                for action in lane.host.actions:
                    self._promote(action.id)
                self._published.notify_all()

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
        if isinstance(body, plans.MoveInstanceBody) and cluster_moves.in_cluster(action, body):
            return cluster_moves.move_member(
                client,
                action,
                body,
                fleet=self.fleet,
                authority=self.authority,
                timeout=self.timeout,
            )
        if isinstance(body, plans.MoveInstanceBody):
            return moves.move(
                client,
                action,
                body,
                open_host=self.open,
                fleet=self.fleet,
                authority=self.authority,
                timeout=self.timeout,
            )
        owner = self.actions.get(action.part_of or "")
        rules = _Rules(self.fleet, self.authority, self.credentials)
        done = _perform(client, action, self.timeout, owner=owner, rules=rules)
        if action.kind is plans.ActionKind.CREATE and done == "created":
            return passwords.created_stopped(action, action.id in self.started)
        return done

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


def _never_ready(hosts: Sequence[plans.HostPlan], width: int = 1) -> set[str]:
    """Actions that would wait forever (``ordering.never_ready``): with ``width`` 1 each host
    runs its actions in order; an action also waits for its ``depends_on``."""
    return ordering.never_ready(ordering.waits(hosts, width)[1])


@dataclass(frozen=True)
class _Rules:
    """What the invariants are checked against: the fleet file and this run's authority."""

    fleet: Fleet
    authority: Authority
    credentials: CredentialStore | None = None


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
            request = requests.create_instance_request(body)
            lxdops.create(client, collection, request, timeout=timeout, target=body.target)
            if body.target is not None:
                return f"created on {body.target}"
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
            done = f"already {want.lower()}"
            if kind is plans.ActionKind.STOP:
                return done
            return passwords.after_start(client, action, owner, rules.credentials, done)
        gpus = ""
        if kind is plans.ActionKind.STOP:  # GPUs busy: refused unless --force; unknown: said
            gpus = moves.guard(client, name, rules.authority)
        lxdops.set_state(client, name, kind.value, timeout=timeout)
        if kind is plans.ActionKind.START:
            return passwords.after_start(client, action, owner, rules.credentials, "started")
        return "stopped" if gpus in ("", moves.GPUS_IDLE) else f"stopped ({gpus})"
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
