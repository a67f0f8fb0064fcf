"""Saved plans: a plan together with what it was computed from, to apply exactly it later. Pure.

``plan --out FILE`` writes a ``SavedPlan``: the plan (``report.plan_json``'s document) plus its
provenance (the fleet file's path and SHA-256, the lab directory if any, the tool version, the
creation time) and one ``Precondition`` per object that applying it would write: the object
must still be absent (a create), or still have the fingerprint (``planning.fingerprint``) and
power state it had when the plan was made.

``apply FILE`` re-observes only the hosts with such objects and calls ``check``, which returns
every reason the plan is stale (``Stale``), each naming the object and what changed, with the
field-level difference when it can be worked out from the plan itself. Nothing is written when
there is any. Then apply plans again, from the fleet file the plan names, the live state and
the options recorded in the plan, and applies that plan only when ``compare`` finds it equal to
the saved one, action for action and body for body; otherwise it refuses, naming every action
added, removed or different and the fields that differ. A saved plan is a review artefact, not
a program: its own bodies are never sent. The executor's own checks before each write
(fingerprints, ``execute.invariants``) stay the last line of defence.

A saved plan holds what the plan shows: names, and the old and new values of the fields it
changes (as ``plan`` prints them). It never holds certificates, keys or other credentials, nor
values the plan does not change, nor values of secret-looking keys (``render`` writes the plan
masked by ``planning.sensitive``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import pydantic

from lxdgpu_reconcile import state
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.planning import diff, rules, sensitive
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import Frozen, ObjectKind, ObjectRef

KIND: Literal["lxdgpu-reconcile-saved-plan"] = "lxdgpu-reconcile-saved-plan"
FORMAT_VERSION: Literal[1] = 1


class FleetFile(Frozen):
    """The fleet file a plan was made from: its path as given, and the SHA-256 of its bytes."""

    path: str
    sha256: str


class Precondition(Frozen):
    """What one object the plan writes must still be on its host for the plan to apply.

    ``exists`` False: the object must still be absent (the plan creates it). Otherwise it must
    exist with ``fingerprint`` (its compared part: config, devices, profiles, description) and,
    for a container, ``status`` (``Running``, ``Stopped``).
    """

    host: str
    object: ObjectRef
    exists: bool
    fingerprint: str | None = None
    status: str | None = None


class SavedPlan(Frozen):
    """A plan file: the plan, where it came from, and what must still hold to apply it."""

    kind: Literal["lxdgpu-reconcile-saved-plan"] = KIND
    format_version: Literal[1] = FORMAT_VERSION
    tool_version: str
    created_at: str
    fleet: FleetFile
    lab: str | None = None
    preconditions: tuple[Precondition, ...] = ()
    plan: plans.Plan

    @property
    def hosts_to_check(self) -> tuple[str, ...]:
        """The hosts apply must observe to check the preconditions, in plan order."""
        return tuple(dict.fromkeys(p.host for p in self.preconditions))


class Stale(Frozen):
    """One reason a saved plan no longer applies. ``changes``: old (when planned) -> new (now)."""

    message: str
    host: str | None = None
    object: ObjectRef | None = None
    changes: tuple[diff.FieldChange, ...] = ()


class SavedPlanError(ToolError):
    """A file that is not a usable saved plan; ``hint`` says what to do."""


_REPLAN = "save a plan with `lxdgpu-reconcile plan -f FLEET --out FILE`, then apply FILE"


#: The deepest nesting of objects and lists a saved plan may have (it needs about a dozen).
MAX_DEPTH = 64


def parse(text: str, *, name: str) -> SavedPlan:
    """The saved plan in ``text`` (the content of file ``name``); raises ``SavedPlanError``."""
    too_deep = SavedPlanError(
        f"{name} is not a saved plan: it nests more than {MAX_DEPTH} levels deep", _REPLAN
    )
    try:
        data: Any = json.loads(text)
    except RecursionError:
        raise too_deep from None
    except ValueError:
        if text.lstrip().startswith(("version:", "#", "---")) or "\nusers:" in text:
            raise SavedPlanError(
                f"{name} looks like a fleet file, not a saved plan",
                f"apply a fleet file with `lxdgpu-reconcile apply -f {name}`; {_REPLAN}",
            ) from None
        raise SavedPlanError(f"{name} is not a saved plan (not JSON)", _REPLAN) from None
    if _depth(data) > MAX_DEPTH:
        raise too_deep
    if not isinstance(data, dict) or data.get("kind") != KIND:
        what = (
            "a plan printed by `plan --format json`, without what apply checks"
            if isinstance(data, dict) and "hosts" in data and "summary" in data
            else "not a saved plan"
        )
        raise SavedPlanError(f"{name} is {what}", _REPLAN)
    if data.get("format_version") != FORMAT_VERSION:
        raise SavedPlanError(
            f"{name} is a saved plan of format {data.get('format_version')!r}; this version of "
            f"lxdgpu-reconcile reads format {FORMAT_VERSION}",
            _REPLAN,
        )
    try:
        return SavedPlan.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise SavedPlanError(
            f"{name} is not a valid saved plan ({where}: {first['msg']})", _REPLAN
        ) from None


def _depth(data: Any) -> int:
    """How deeply ``data`` nests lists and objects, counted without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                items = value.values() if isinstance(value, dict) else value
                stack.extend((item, depth + 1) for item in items)
    return deepest


def render(saved: SavedPlan) -> str:
    """``saved`` as indented JSON text, ending with a newline (what ``parse`` reads). The file
    holds the masked plan (``sensitive.mask_plan``): no value of a secret-looking key."""
    masked = saved.model_copy(update={"plan": sensitive.mask_plan(saved.plan)})
    return json.dumps(masked.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


# --- saving ---------------------------------------------------------------------------------------


def save(
    plan: plans.Plan,
    snapshot: state.FleetSnapshot,
    *,
    fleet: FleetFile,
    lab: str | None,
    tool_version: str,
    created_at: str,
) -> SavedPlan:
    """``plan`` as a plan file, with a precondition per object it writes, from ``snapshot`` (the
    observation the plan was made from)."""
    preserve = rules.preserve_for(attach_gpus=plan.options.attach_gpus)
    conditions = []
    for host, ref in touched(plan):
        found = precondition(host, ref, snapshot.hosts.get(host), preserve)
        if found is not None:
            conditions.append(found)
    return SavedPlan(
        tool_version=tool_version,
        created_at=created_at,
        fleet=fleet,
        lab=lab,
        preconditions=tuple(conditions),
        plan=plan,
    )


def touched(plan: plans.Plan) -> Iterator[tuple[str, ObjectRef]]:
    """Each object that applying ``plan`` writes (a non-pending action on an applyable host)."""
    seen: set[tuple[str, ObjectRef]] = set()
    for host in plan.hosts:
        if not host.applyable:
            continue
        for action in host.actions:
            key = (host.host, action.object)
            if action.pending is None and key not in seen:
                seen.add(key)
                yield key
            body = action.body
            if action.pending is None and isinstance(body, plans.MoveInstanceBody):
                # A move also stops and tags its source, on its own host.
                ref = ObjectRef(kind=ObjectKind.INSTANCE, name=body.source_name)
                source = (body.source_host, ref)
                if source not in seen:
                    seen.add(source)
                    yield source


def precondition(
    host: str,
    ref: ObjectRef,
    snap: state.HostSnapshot | None,
    preserve: rules.Preserve,
) -> Precondition | None:
    """What ``ref`` is in ``snap`` (None for an object kind without a precondition here)."""
    if ref.kind is ObjectKind.INSTANCE:
        inst = snap.instances.get(ref.name) if snap is not None else None
        if inst is None:
            return Precondition(host=host, object=ref, exists=False)
        return Precondition(
            host=host,
            object=ref,
            exists=True,
            fingerprint=fingerprints.instance(inst, preserve),
            status=inst.status,
        )
    if ref.kind is ObjectKind.PROFILE:
        prof = snap.profiles.get(ref.name) if snap is not None else None
        if prof is None:
            return Precondition(host=host, object=ref, exists=False)
        return Precondition(
            host=host, object=ref, exists=True, fingerprint=fingerprints.profile(prof, preserve)
        )
    # Other kinds (template images) are checked by the executor when it performs them.
    return None


# --- checking -------------------------------------------------------------------------------------


def check(
    saved: SavedPlan,
    snapshot: state.FleetSnapshot,
    *,
    fleet_sha256: str,
    tool_version: str,
) -> tuple[Stale, ...]:
    """Every reason ``saved`` no longer applies, given the fleet file's current SHA-256 and a
    fresh ``snapshot`` of ``saved.hosts_to_check``; empty when it still applies."""
    found: list[Stale] = []
    if saved.tool_version != tool_version:
        found.append(
            Stale(
                message=f"the plan was made by lxdgpu-reconcile {saved.tool_version}; this is "
                f"{tool_version}"
            )
        )
    if saved.fleet.sha256 != fleet_sha256:
        found.append(
            Stale(
                message=f"the fleet file {saved.fleet.path} changed since the plan was made "
                f"(sha256 {saved.fleet.sha256[:12]} then, {fleet_sha256[:12]} now)"
            )
        )
    preserve = rules.preserve_for(attach_gpus=saved.plan.options.attach_gpus)
    unreadable: set[str] = set()
    for want in saved.preconditions:
        snap = snapshot.hosts.get(want.host)
        if snap is None or snap.error is not None:
            if want.host not in unreadable:
                unreadable.add(want.host)
                why = (
                    f"{snap.error.kind.value}: {snap.error.message}"
                    if snap is not None and snap.error is not None
                    else "not observed"
                )
                found.append(
                    Stale(
                        host=want.host,
                        message=f"{want.host} could not be read ({why}), so the plan cannot be "
                        "checked against it",
                    )
                )
            continue
        now = precondition(want.host, want.object, snap, preserve)
        if now is not None:
            found.extend(_compare(saved.plan, want, now, snap, preserve))
    return tuple(found)


def _compare(
    plan: plans.Plan,
    want: Precondition,
    now: Precondition,
    snap: state.HostSnapshot,
    preserve: rules.Preserve,
) -> Iterator[Stale]:
    where = f"{want.host}: {want.object}"
    if not want.exists and now.exists:
        yield Stale(
            host=want.host,
            object=want.object,
            message=f"{where} exists now; the plan creates it",
        )
        return
    if want.exists and not now.exists:
        yield Stale(
            host=want.host,
            object=want.object,
            message=f"{where} is gone; the plan changes it",
        )
        return
    if want.fingerprint != now.fingerprint:
        yield Stale(
            host=want.host,
            object=want.object,
            message=f"{where} changed on the host since the plan was made",
            changes=_what_changed(plan, want, snap, preserve),
        )
    if want.status != now.status:
        yield Stale(
            host=want.host,
            object=want.object,
            message=f"{where} was {want.status} when the plan was made and is {now.status} now",
        )


def _what_changed(
    plan: plans.Plan,
    want: Precondition,
    snap: state.HostSnapshot,
    preserve: rules.Preserve,
) -> tuple[diff.FieldChange, ...]:
    """The fields that changed since the plan, when the plan's own first write of the object
    tells what it was (its body with its changes undone); empty when it does not."""
    before = _as_planned(plan, want)
    if before is None:
        return ()
    if want.object.kind is ObjectKind.INSTANCE:
        now = diff.instance_essence(snap.instances[want.object.name], preserve)
    else:
        now = diff.profile_essence(snap.profiles[want.object.name], preserve)
    return diff.diff(now, before)


def _as_planned(plan: plans.Plan, want: Precondition) -> diff.Essence | None:
    for action in plan.actions:
        if action.host != want.host or action.object != want.object:
            continue
        body = action.body
        if action.kind is not plans.ActionKind.UPDATE or not isinstance(
            body, plans.InstanceBody | plans.ProfileBody
        ):
            continue
        if isinstance(body, plans.InstanceBody):
            after = diff.essence(
                config=body.config,
                devices=body.devices,
                profiles=body.profiles,
                preserve=body.preserve,
            )
        else:
            after = diff.essence(
                config=body.config,
                devices=body.devices,
                description=body.description,
                preserve=body.preserve,
            )
        undo = [
            diff.FieldChange(path=c.path, old=c.new, new=c.old, timing=c.timing)
            for c in action.changes
        ]
        before = diff.apply_changes(after, undo)
        if fingerprints.of_essence(before) == want.fingerprint:
            return before
        return None
    return None


# --- comparing with the plan made now -------------------------------------------------------------

#: Field differences listed per action (or per plan-level field) before the rest is counted.
MAX_FIELDS = 8
_ABSENT = object()


def compare(saved: plans.Plan, now: plans.Plan) -> tuple[Stale, ...]:
    """How the plan of a plan file (``saved``) differs from the plan made ``now`` from the same
    fleet file, options and hosts (masked as the file is): every action added, removed or
    different, with the fields that differ; plan-level fields (summary, options, errors) too.
    Empty when they are equal, field for field."""
    a, b = saved.model_dump(mode="json"), now.model_dump(mode="json")
    found: list[Stale] = []
    for key in ("format_version", "options", "summary", "notes", "errors"):
        found.extend(Stale(message=m) for m in _field_lines(a[key], b[key], (key,)))
    hosts_a = {host["host"]: host for host in a["hosts"]}
    hosts_b = {host["host"]: host for host in b["hosts"]}
    for name in sorted(hosts_a.keys() | hosts_b.keys()):
        found.extend(_compare_host(name, hosts_a.get(name), hosts_b.get(name)))
    return tuple(found)


def _compare_host(name: str, a: Any, b: Any) -> Iterator[Stale]:
    if a is None or b is None:
        where = "the plan file" if a is not None else "the plan made now"
        yield Stale(host=name, message=f"host {name} is only in {where}")
        return
    for key in ("applyable", "errors", "notes"):
        for line in _field_lines(a[key], b[key], (key,)):
            yield Stale(host=name, message=f"{name}: {line}")
    actions_a = {action["id"]: action for action in a["actions"]}
    actions_b = {action["id"]: action for action in b["actions"]}
    for action_id, action in actions_a.items():
        ref = ObjectRef.model_validate(action["object"])
        if action_id not in actions_b:
            yield Stale(
                host=name,
                object=ref,
                message=f"action {action_id} ({action['kind']} {ref}) is added in the plan "
                "file: the plan made now has no such action",
            )
            continue
        lines = list(_field_lines(action, actions_b[action_id], ()))
        if lines:
            yield Stale(
                host=name,
                object=ref,
                message=f"action {action_id} differs: " + "; ".join(lines),
            )
    for action_id, action in actions_b.items():
        if action_id not in actions_a:
            ref = ObjectRef.model_validate(action["object"])
            yield Stale(
                host=name,
                object=ref,
                message=f"action {action_id} ({action['kind']} {ref}) is removed from the plan "
                "file: the plan made now has it",
            )
    order_a = [action_id for action_id in actions_a if action_id in actions_b]
    order_b = [action_id for action_id in actions_b if action_id in actions_a]
    if order_a != order_b:
        yield Stale(host=name, message=f"{name}: the plan file has the actions in another order")


def _field_lines(a: Any, b: Any, path: tuple[str, ...]) -> Iterator[str]:
    """``PATH: VALUE in the plan file, VALUE now`` for each field that differs, at most
    ``MAX_FIELDS``, then how many more."""
    found = list(_fields(a, b, path))
    for where, old, new in found[:MAX_FIELDS]:
        yield f"{'.'.join(where) or 'value'}: {_shown(old)} in the plan file, {_shown(new)} now"
    if len(found) > MAX_FIELDS:
        yield f"and {len(found) - MAX_FIELDS} more field(s)"


def _fields(a: Any, b: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """The leaves where ``a`` and ``b`` (JSON data) differ, with their paths (without
    recursion into data nested deeper than a plan has)."""
    stack = [(path, a, b)]
    while stack:
        where, x, y = stack.pop(0)
        if x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            keys = list(x) + [k for k in y if k not in x]
            stack.extend(((*where, str(k)), x.get(k, _ABSENT), y.get(k, _ABSENT)) for k in keys)
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            stack.extend(
                ((*where, str(i)), p, q) for i, (p, q) in enumerate(zip(x, y, strict=True))
            )
        else:
            yield where, x, y


def _shown(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
