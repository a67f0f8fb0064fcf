"""What each action of an apply waits for before it may start, and which can never start. Pure.

An action starts once every action it waits for has a result: the earlier actions of its host
that it is ordered after (``after``: their outcome does not matter), and its ``depends_on``
(which must have succeeded for it to run; a dependency that is not in the plan counts as
finished, and the action is then skipped).

With a width of 1 (``apply --parallel 1``) a host performs its actions one after another in plan
order: each is ordered after the one before it. Wider, an action is ordered after only the
earlier actions of its host (plan order) that it could interfere with:

- those on the same object: a container's delete before its create, its create before its
  start, its stop before its update and start;
- every one of them when it acts on a template (build, copy, alias; they follow the removal of
  leftover build containers) or deletes a profile (which comes after every container change);
- the profile writes, when it acts on a container (a container is never changed while a profile
  it may use is being written).

So the creates and starts of different containers overlap, while each container's own steps and
everything the planner orders by ``depends_on`` keep their order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import ObjectKind

#: Actions performed at once on one host by default (``apply --parallel``).
DEFAULT_WIDTH = 4


def after(host: plans.HostPlan, width: int) -> dict[str, tuple[str, ...]]:
    """For each action of ``host``, the earlier actions of the host it is ordered after."""
    actions = host.actions
    if width <= 1:
        return {a.id: (actions[i - 1].id,) if i else () for i, a in enumerate(actions)}
    ordered: dict[str, tuple[str, ...]] = {}
    #: The earlier actions on each object, and the earlier profile actions.
    on_object: dict[tuple[str, str], list[str]] = {}
    profiles: list[str] = []
    for index, action in enumerate(actions):
        key = (action.object.kind.value, action.object.name)
        if _barrier(action):
            ordered[action.id] = tuple(earlier.id for earlier in actions[:index])
        else:
            before = on_object.get(key, [])
            if action.object.kind is ObjectKind.INSTANCE:
                before = [*profiles, *before]
            ordered[action.id] = tuple(dict.fromkeys(before))
        on_object.setdefault(key, []).append(action.id)
        if action.object.kind is ObjectKind.PROFILE:
            profiles.append(action.id)
    return ordered


def _barrier(action: plans.Action) -> bool:
    """Whether ``action`` waits for every earlier action of its host."""
    if action.object.kind is ObjectKind.TEMPLATE:
        return True
    return action.object.kind is ObjectKind.PROFILE and action.kind is plans.ActionKind.DELETE


def waits(
    hosts: Sequence[plans.HostPlan], width: int
) -> tuple[dict[str, tuple[str, ...]], dict[str, set[str]]]:
    """``after`` for every host, and everything each action waits for (``after`` and, unless it
    is pending, its ``depends_on``)."""
    ordered: dict[str, tuple[str, ...]] = {}
    for host in hosts:
        ordered.update(after(host, width))
    every: dict[str, set[str]] = {}
    for host in hosts:
        for action in host.actions:
            deps = set() if action.pending else set(action.depends_on)
            every[action.id] = set(ordered[action.id]) | deps
    return ordered, every


def never_ready(every: Mapping[str, set[str]]) -> set[str]:
    """Actions that would wait forever (``every``: what each waits for, from ``waits``): what is
    left once everything that can become ready has is in (or behind) a cycle. A dependency that
    is not in the plan counts as ready (it is skipped)."""
    ready = {dep for deps in every.values() for dep in deps if dep not in every}
    grew = True
    while grew:
        now = {action_id for action_id, deps in every.items() if deps <= ready}
        grew = not now <= ready
        ready |= now
    return set(every) - ready
