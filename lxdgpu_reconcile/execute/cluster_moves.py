"""Move a container to another member of its cluster; does I/O through the cluster's ``LxdApi``.

A ``move`` action whose source is on the same fleet host and whose body names a ``member``
(``planning.move_steps.plan_member_move``, or a rename that also changes the member) is LXD's
own move inside the cluster. ``move_member`` goes from wherever an interrupted one left off,
read from the live instance:

0. the member it goes to must be online (``GET /1.0/cluster/members/MEMBER``), or nothing is
   stopped;
1. under its old name (a rename too): the checks of a rename (``execute.moves``), then, while
   it runs, ask its GPUs (``moves.guard``: busy GPUs refuse the stop unless ``--force`` names
   it), stop it, tag it ``user.lxdgpu.moved-to``, rename it;
2. not yet on the member: the same GPU check and stop when it runs, the tag, its delete
   protection lifted (LXD's move deletes the source; a protected one fails the move and leaves
   LXD's copy ``lxd-move-of-UUID`` on the target, which is removed before the next try), then
   ``POST /1.0/instances/NAME?target=MEMBER {"name": NAME, "migration": true, "live": false}``
   (LXD 5.0 moves a stopped instance between members; a running one would need CRIU);
3. on the member: write the fleet's profiles, config and devices (``raw.idmap``, the home
   source, the delete protection; the tag dropped) with ``If-Match``, start it when the fleet
   wants it running, and check it runs.

LXD moves the one instance: there is never a second copy, so two can never run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import invariants, lxdops, moves
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.planning import model as plans


def in_cluster(action: plans.Action, body: plans.MoveInstanceBody) -> bool:
    """Whether ``action`` moves a container between members of one cluster host."""
    return body.source_host == action.host and body.member is not None


def move_member(
    client: LxdApi,
    action: plans.Action,
    body: plans.MoveInstanceBody,
    *,
    fleet: Fleet,
    authority: invariants.Authority,
    timeout: float,
) -> str:
    """Perform the move of ``action`` to member ``body.member``; a short note of what was done.
    Raises ``lxdops.LxdError`` (``invariants.NotAllowed`` for what no plan may do)."""
    member = body.member
    assert member is not None
    moves._check_fleet(action, body, fleet)
    named = fleet.users[body.user].member
    if named is not None and named != member:
        raise invariants.NotAllowed(
            f"{action.object} on {action.host}: the plan moves it to member {member}, and the "
            f"fleet file names {named}; nothing was written",
            hint=invariants._REPLAN,
        )
    invariants.check_body(action, fleet, authority)
    _check_online(client, member)
    done: list[str] = []
    current = moves._read(client, body.name)
    if current is None:
        src = moves._read(client, body.source_name) if body.source_name != body.name else None
        if src is None:
            raise lxdops.StaleObject(
                f"{action.object} on {action.host}: neither it nor {body.source_name} exists; "
                "nothing was written",
                hint="run plan again to see the change, then apply",
            )
        moves._check_source(action, body, src)
        done += moves._stop_and_tag(client, action, body, src, authority, timeout)
        client.rename(body.source_name, body.name, timeout=timeout)
        done.append("renamed")
        current, _ = lxdops.get(client, "instances", body.name)
    else:
        moves._check_source(action, body, current)
    was = str(current.get("location") or "")
    if was != member:
        _check_online(client, member)
        done += _stop_and_tag(client, action, body, current, authority, timeout)
        client.move_to_member(body.name, member, timeout=timeout)
        after, _ = lxdops.get(client, "instances", body.name)
        if after.get("location") != member:
            raise lxdops.LxdError(
                f"instance {body.name}: moved to member {member}, but LXD says it is on "
                f"{after.get('location')}",
                hint="look at `lxc info NAME`; apply again finishes the move",
            )
        done.append(f"moved from {was or '?'} to {member}")
    done += moves._finish(client, body, timeout)
    return ", ".join(done)


def _check_online(client: LxdApi, member: str) -> None:
    """Refuse before anything is stopped when ``member`` is not online
    (``GET /1.0/cluster/members/MEMBER``)."""
    found, _ = client.get("cluster/members", member, what=f"read cluster member {member}")
    if found.get("status") != "Online":
        raise lxdops.LxdError(
            f"member {member} is {str(found.get('status') or 'not online').lower()}: nothing "
            "was stopped or moved",
            hint="bring the member back (`lxc cluster list`), then apply again",
        )


#: The delete protection the tool gives every container (``planning.desired``).
PROTECTION = "security.protection.delete"
#: LXD 5.0.2 moves a stopped instance between members by copying it to the target member as
#: ``lxd-move-of-UUID`` (its ``volatile.uuid``), deleting the source, then renaming the copy.
#: A move that failed (a protected source: "Delete instance operation failed: Container is
#: protected") leaves that copy behind, and the next move then fails ("This "instances" entry
#: already exists").
MOVE_COPY = "lxd-move-of-"


def _stop_and_tag(
    client: LxdApi,
    action: plans.Action,
    body: plans.MoveInstanceBody,
    current: Mapping[str, Any],
    authority: invariants.Authority,
    timeout: float,
) -> list[str]:
    """Stop ``body.name`` (its GPUs asked first), tag it ``moved-to`` and lift its delete
    protection (the rewrite for the new member puts it back), as far as not done; remove the
    copy an earlier, failed move of it left on a member (``MOVE_COPY``)."""
    done = []
    if current.get("status") == "Running":
        note = moves.guard(
            client, body.name, authority, timeout=min(timeout, moves.GPU_QUERY_TIMEOUT)
        )
        lxdops.set_state(client, body.name, "stop", timeout=timeout)
        done.append(f"{note}; stopped")
    config = current.get("config") or {}
    tags = {}
    if state.TAG_MOVED_TO not in config:
        tags[state.TAG_MOVED_TO] = f"{action.host}/{body.name}"
    if str(config.get(PROTECTION, "false")).lower() == "true":
        tags[PROTECTION] = "false"  # LXD deletes the source at the end of its move
    if tags:
        moves._tag(client, body.name, tags)
    uuid = str(config.get("volatile.uuid") or "")
    leftover = moves._read(client, MOVE_COPY + uuid) if uuid else None
    if leftover is not None and (leftover.get("config") or {}).get("volatile.uuid") == uuid:
        if str((leftover.get("config") or {}).get(PROTECTION, "false")).lower() == "true":
            moves._tag(client, MOVE_COPY + uuid, {PROTECTION: "false"})
        lxdops.delete(client, "instances", MOVE_COPY + uuid, timeout=timeout)
        done.append(f"removed {MOVE_COPY + uuid}, the copy a failed move left")
    return done
