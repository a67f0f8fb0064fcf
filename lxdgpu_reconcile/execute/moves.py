"""Perform a move between hosts or a rename, and never stop a container whose GPUs are busy.

Does I/O, through the ``observe.lxdapi.LxdApi`` connections of the two hosts. ``move`` performs
a ``move`` or ``rename`` action (``planning.move_steps``) from wherever a previous, interrupted move
left off, read from the live objects:

1. the source still runs: ask its GPUs (``guard``), stop it; tag it ``user.lxdgpu.moved-to``;
2. the target is absent: copy the source there with LXD's migration (the source offers a
   stateless, instance-only migration; the target pulls it over https with the source's
   certificate and the operation's secrets), created stopped with the fleet's profiles, config
   and devices for the new host (no ``volatile.*`` key carried over); on the same host: rename;
3. write the fleet's profiles, config and devices on the target (``raw.idmap`` for the user,
   the home source, ``created-as`` of the new host and name), with ``If-Match``;
4. start it (when the fleet wants it running) and check it runs;
5. tag the source ``user.lxdgpu.moved-at``. The source is never deleted here.

``guard`` runs ``nvidia-smi --query-compute-apps`` in a running container before anything stops
it: busy GPUs refuse the stop (``GpuBusy``) unless ``--force`` names the container; without
``nvidia-smi`` the use is unknown and the stop goes on. ``hold_busy`` asks the same before apply,
when the plan is made (``service.plan``): what would stop a busy container is pending, with
``hold: gpu-busy``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from lxdgpu_reconcile import state
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute import commands, image_ops, invariants, lxdops, requests
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning import holds
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import ObjectKind

#: What asks a container which processes use a GPU; one CSV line per process.
GPU_QUERY = "nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader"
_GPU_COMMAND = f"command -v nvidia-smi >/dev/null 2>&1 || exit 127\n{GPU_QUERY}"
#: What ``guard`` says of a container whose GPUs no process uses.
GPUS_IDLE = "GPUs idle"
#: Seconds ``guard`` waits for ``nvidia-smi``.
GPU_QUERY_TIMEOUT = 30.0


class GpuBusy(invariants.NotAllowed):
    """A stop refused: processes use the container's GPUs, and ``--force`` does not name it."""


def guard(
    client: LxdApi,
    name: str,
    authority: invariants.Authority,
    *,
    timeout: float = GPU_QUERY_TIMEOUT,
) -> str:
    """Refuse to stop the running container ``name`` while processes use its GPUs (``GpuBusy``)
    unless ``--force`` names it; a short note of what was found."""
    try:
        code, lines = commands.run_command(
            client, name, _GPU_COMMAND, on_line=lambda line: None, timeout=timeout
        )
    except lxdops.LxdError as exc:
        if exc.unanswered:
            raise  # the host does not answer: the stop would not either
        return f"GPU use unknown ({exc.message})"
    if code != 0:
        return (
            "GPU use unknown (no nvidia-smi in the container)"
            if code == 127
            else (f"GPU use unknown (nvidia-smi exited with {code})")
        )
    busy = describe_gpu_use(lines)
    if busy is None:
        return GPUS_IDLE
    if name in authority.force:
        return f"GPU busy ({busy}), stopped anyway (--force {name})"
    raise GpuBusy(
        f"instance {name}: GPU busy: {busy}; it was not stopped",
        hint=f"wait until the work ends, or stop it anyway with `apply --force {name}`",
    )


def describe_gpu_use(lines: tuple[str, ...] | list[str]) -> str | None:
    """``2 processes, python 21 GiB`` from ``nvidia-smi``'s CSV lines; None when none."""
    procs = []
    for line in lines:
        parts = [part.strip() for part in line.split(",")]
        if len(parts) >= 3 and parts[0].isdigit():
            procs.append((parts[1].rsplit("/", 1)[-1], _mib(parts[2])))
    if not procs:
        return None
    name, mib = max(procs, key=lambda p: p[1])
    count = f"{len(procs)} process{'es' if len(procs) > 1 else ''}"
    size = f"{round(mib / 1024)} GiB" if mib >= 1024 else f"{mib} MiB"
    return f"{count}, {name} {size}"


def _mib(text: str) -> int:
    digits = "".join(ch for ch in text if ch.isdigit())
    return int(digits) if digits else 0


def move(
    target: LxdApi,
    action: plans.Action,
    body: plans.MoveInstanceBody,
    *,
    open_host: Callable[[str], LxdApi],
    fleet: Fleet,
    authority: invariants.Authority,
    timeout: float,
) -> str:
    """Perform the move (or rename) ``action`` on its target host; a short note of what was
    done. Raises ``lxdops.LxdError`` (``invariants.NotAllowed`` for what no plan may do)."""
    _check_fleet(action, body, fleet)
    invariants.check_body(action, fleet, authority)
    renaming = body.source_host == action.host
    source = target if renaming else open_host(body.source_host)
    try:
        done: list[str] = []
        copy_made = _read(target, body.name) is not None
        if copy_made:
            _check_target(target, action, body)
        src = _read(source, body.source_name)
        if src is not None:
            _check_source(action, body, src)
            if copy_made and src.get("status") == "Running":
                raise invariants.NotAllowed(
                    f"{body.source_name} on {body.source_host} runs, and its copy "
                    f"{action.object} on {action.host} exists: two containers of user "
                    f"{body.user} would run; nothing was started",
                    hint="stop the one that does not hold the work, then plan again",
                )
            if not copy_made:
                done += _stop_and_tag(source, action, body, src, authority, timeout)
                if renaming:
                    source.rename(body.source_name, body.name, timeout=timeout)
                    done.append("renamed")
                else:
                    _copy(source, target, action, body, src, fleet, timeout)
                    done.append(f"copied from {body.source_host}")
        elif not copy_made:
            raise lxdops.StaleObject(
                f"{action.object} on {action.host}: neither it nor {body.source_name} on "
                f"{body.source_host} exists; nothing was written",
                hint="run plan again to see the change, then apply",
            )
        done += _finish(target, body, timeout)
        if src is not None and not renaming:
            _tag(source, body.source_name, {state.TAG_MOVED_AT: _now()})
        return ", ".join(done)
    finally:
        if source is not target:
            source.close()


def _read(client: LxdApi, name: str) -> dict[str, Any] | None:
    try:
        found, _ = lxdops.get(client, "instances", name)
    except lxdops.LxdError as exc:
        if exc.status == 404:
            return None
        raise
    return found


def _check_fleet(action: plans.Action, body: plans.MoveInstanceBody, fleet: Fleet) -> None:
    """A move goes only where the fleet file puts the user's container now."""
    spec = fleet.users.get(body.user)
    ok = spec is not None and spec.host == action.host
    if not ok or fleet.container_of(body.user) != body.name or body.name != action.object.name:
        raise invariants.NotAllowed(
            f"{action.object} on {action.host}: the plan moves user {body.user}'s container "
            "where the fleet file does not put it; nothing was written",
            hint=invariants._REPLAN,
        )


def _check_source(
    action: plans.Action, body: plans.MoveInstanceBody, src: Mapping[str, Any]
) -> None:
    config = src.get("config") or {}
    where = f"{body.source_name} on {body.source_host}"
    if config.get(state.TAG_MANAGED) != "true" or config.get(state.TAG_USER) != body.user:
        raise invariants.NotAllowed(
            f"{where} is not tagged as user {body.user}'s container; nothing was moved",
            hint=invariants._REPLAN,
        )
    if state.TAG_MOVED_TO in config:
        return  # tagged by this move, which goes on from where it stopped
    now = fingerprints.instance(reading.parse_instance(dict(src)), None)
    if now != body.source_observed:
        raise lxdops.StaleObject(
            f"{where} changed since the plan was made; nothing was moved",
            hint="run plan again to see the change, then apply",
        )


def _check_target(target: LxdApi, action: plans.Action, body: plans.MoveInstanceBody) -> None:
    current, _ = lxdops.get(target, "instances", body.name)
    config = current.get("config") or {}
    where = f"{action.object} on {action.host}"
    if config.get(state.TAG_MANAGED) != "true" or config.get(state.TAG_USER) != body.user:
        raise invariants.NotAllowed(
            f"{where} exists and is not user {body.user}'s; nothing was moved",
            hint=invariants._REPLAN,
        )
    if action.observed is None:
        raise lxdops.StaleObject(
            f"{where} exists now; the plan moves a container there; nothing was written",
            hint="run plan again to see the change, then apply",
        )
    now = fingerprints.instance(reading.parse_instance(dict(current)), body.preserve)
    if now != action.observed:
        raise lxdops.StaleObject(
            f"{where} changed since the plan was made; nothing was written",
            hint="run plan again to see the change, then apply",
        )


def _stop_and_tag(
    source: LxdApi,
    action: plans.Action,
    body: plans.MoveInstanceBody,
    src: Mapping[str, Any],
    authority: invariants.Authority,
    timeout: float,
) -> list[str]:
    done = []
    if src.get("status") == "Running":
        note = guard(source, body.source_name, authority, timeout=min(timeout, GPU_QUERY_TIMEOUT))
        lxdops.set_state(source, body.source_name, "stop", timeout=timeout)
        done.append(f"{note}; stopped on {body.source_host}")
    _tag(source, body.source_name, {state.TAG_MOVED_TO: f"{action.host}/{body.name}"})
    return done


def _tag(client: LxdApi, name: str, tags: Mapping[str, str]) -> None:
    client.patch("instances", name, {"config": dict(tags)}, what=f"tag instance {name}")


def _copy(
    source: LxdApi,
    target: LxdApi,
    action: plans.Action,
    body: plans.MoveInstanceBody,
    src: Mapping[str, Any],
    fleet: Fleet,
    timeout: float,
) -> None:
    """Copy the stopped source to the target with LXD's migration: the target pulls it."""
    endpoint = fleet.hosts[body.source_host].endpoint
    address = image_ops.https_address(source, endpoint)
    op_id, secrets = source.migrate_source(
        body.source_name, what=f"prepare the move of {body.source_name} from {body.source_host}"
    )
    request = {
        "name": body.name,
        "type": "container",
        "architecture": src.get("architecture", ""),
        "ephemeral": False,
        "stateful": False,
        "profiles": list(body.profiles),
        "config": dict(body.config),
        "devices": {name: dict(dev) for name, dev in body.devices.items()},
        "source": {
            "type": "migration",
            "mode": "pull",
            "operation": f"{address}/1.0/operations/{op_id}",
            "certificate": source.host_info["environment"]["certificate"],
            "secrets": secrets,
            "base-image": (src.get("config") or {}).get("volatile.base_image", ""),
            "instance_only": True,
            "live": False,
        },
    }
    what = f"copy {body.source_name} from {body.source_host} ({address}) to {action.host}"
    if body.member is not None:  # into a cluster: onto the member the fleet gives it
        what += f" (member {body.member})"
    try:
        if body.member is None:
            target.create("instances", request, timeout=timeout, what=what)
        else:
            target.create("instances", request, timeout=timeout, what=what, target=body.member)
    except lxdops.LxdError as exc:
        image_ops.cancel_operation(source, op_id)
        raise lxdops.LxdError(
            f"{exc.message}; the source stays, stopped, on {body.source_host}",
            status=exc.status,
            hint=exc.hint
            or f"{action.host} must reach {address} (the source's https listener); check the "
            "network between them, then apply again (the move goes on from here)",
        ) from None


def _finish(target: LxdApi, body: plans.MoveInstanceBody, timeout: float) -> list[str]:
    """Write the fleet's state for the new host, start, and check it runs."""
    current, etag = lxdops.get(target, "instances", body.name)
    update = plans.InstanceBody(
        profiles=body.profiles, config=body.config, devices=body.devices, preserve=body.preserve
    )
    # The body's config has the new host's ``created-as``; ``moved-to`` (a rename's) is dropped.
    request = requests.put_request(update, current)
    lxdops.put(target, "instances", body.name, request, etag=etag, timeout=timeout)
    done = ["rewritten for the new host"]
    if body.start and current.get("status") != "Running":
        lxdops.set_state(target, body.name, "start", timeout=timeout)
        after, _ = lxdops.get(target, "instances", body.name)
        if after.get("status") != "Running":
            raise lxdops.LxdError(
                f"instance {body.name}: started, but it is {after.get('status')}",
                hint=f"look at `lxc info --show-log {body.name}`; apply again finishes the move",
            )
        done.append("started")
    return done


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the guard at plan time -----------------------------------------------------------------------


def gpu_use(client: LxdApi, name: str, *, timeout: float = GPU_QUERY_TIMEOUT) -> str | None:
    """What uses the GPUs of the running container ``name`` (``2 processes, python 21 GiB``);
    None when nothing does or it cannot be told (no ``nvidia-smi``, a failed query)."""
    try:
        code, lines = commands.run_command(
            client, name, _GPU_COMMAND, on_line=lambda line: None, timeout=timeout
        )
    except lxdops.LxdError as exc:
        if exc.unanswered:
            raise
        return None
    return describe_gpu_use(lines) if code == 0 else None


def hold_busy(
    plan: plans.Plan,
    snapshot: state.FleetSnapshot,
    open_host: Callable[[str], LxdApi],
    *,
    force: tuple[str, ...] = (),
) -> plans.Plan:
    """``plan`` with every action that would stop a running container whose GPUs are busy held
    back (``Hold.GPU_BUSY``, and what waits for it), unless ``force`` names the container. One
    query per such container; a host that cannot be asked is left to the guard at apply."""
    stops: dict[tuple[str, str], list[str]] = {}
    for hplan in plan.hosts:
        for action in hplan.actions if hplan.applyable else ():
            stopped = _stops(action, snapshot) if action.pending is None else None
            if stopped is not None and stopped[1] not in force:
                # A helper stop holds the action it is a step of with the same words.
                ids = [action.id, *([action.part_of] if action.part_of else [])]
                stops.setdefault(stopped, []).extend(ids)
    held: dict[str, tuple[str, plans.Hold]] = {}
    silent: set[str] = set()
    for (where, name), ids in sorted(stops.items()):
        if where in silent:
            continue
        try:
            client = open_host(where)
            try:
                busy = gpu_use(client, name)
            finally:
                client.close()
        except (lxdops.LxdError, ToolError):
            silent.add(where)  # not answering: left to the guard at apply
            continue
        if busy is not None:
            why = f"GPU busy: {busy}; apply --force {name} stops it anyway"
            held.update({action_id: (why, plans.Hold.GPU_BUSY) for action_id in ids})
    return holds.hold_back(plan, held) if held else plan


def _stops(action: plans.Action, snapshot: state.FleetSnapshot) -> tuple[str, str] | None:
    """The running container (host, name) that ``action`` stops, if any."""
    body = action.body
    if isinstance(body, plans.MoveInstanceBody):
        where = (body.source_host, body.source_name)
    elif action.kind is plans.ActionKind.STOP and action.object.kind is ObjectKind.INSTANCE:
        where = (action.host, action.object.name)
    else:
        return None
    snap = snapshot.hosts.get(where[0])
    found = snap.instances.get(where[1]) if snap is not None else None
    return where if found is not None and found.running else None
