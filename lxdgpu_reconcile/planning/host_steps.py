"""The state of one host's plan while it is made, and how steps are added to it. Pure: no I/O.

``HostSteps`` holds what the planner of one host knows (the desired host, its snapshot, the
options, the template steps and moves of the plan) and collects: actions, errors, notes, which
action writes which profile, which containers are deleted or blocked. ``add`` makes an action
with its stable id ``HOST/KIND/NAME/STEP``. The container steps (``instance_steps``) and the
host planner (``host_planner``) build on it; moves and updates take it as their planner.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import diff, rules
from lxdgpu_reconcile.planning import move_steps as moving
from lxdgpu_reconcile.planning import template_steps as templating
from lxdgpu_reconcile.planning.bulk import trusted
from lxdgpu_reconcile.planning.common import ErrorCode, ObjectKind, ObjectRef, PlanError
from lxdgpu_reconcile.planning.model import (
    Action,
    ActionKind,
    Body,
    Cause,
    Hold,
    PlanOptions,
)

#: Steps of a container that wait for its user's host actions (and any write of its idmap).
_NEEDS_LAYER = frozenset({"create", "move", "start", "restart-start"})
_IDMAP = ("config", "raw.idmap")


class HostSteps:
    """What the planner of one reachable host knows and has collected so far."""

    def __init__(
        self,
        want: desiring.DesiredHost,
        snap: state.HostSnapshot,
        preserve: rules.Preserve,
        options: PlanOptions,
        adopted: set[str],
        templates: templating.TemplatePlan,
        moves: moving.MovePlan | None = None,
    ) -> None:
        self.want = want
        self.moves = moves or moving.MovePlan()
        self.snap = snap
        self.host = want.host
        self.preserve = preserve
        self.options = options
        self.adopted = adopted
        self.templates = templates
        self.actions: list[tuple[str, Action]] = []
        self.errors: list[PlanError] = [*want.errors, *templates.errors.get(self.host, ())]
        self.notes: list[str] = [*want.notes, *templates.notes.get(self.host, ())]
        self.profile_writes: dict[str, str] = {}
        self.leaving: dict[str, list[str]] = {}
        self.deleted: set[str] = set()
        self.blocked: set[str] = set()
        #: The host actions (accounts, homes, delegations) each user's container needs, and the
        #: users each host action is for (``planning.host_layer``).
        self.layer_deps: dict[str, list[str]] = {}
        self.layer_users: dict[str, tuple[str, ...]] = {}
        #: Paused containers (of paused users) -> the fleet key that pauses them.
        self.paused: dict[str, str] = {
            name: f"users.{want.user}" for name, want in want.instances.items() if want.paused
        }
        for name, obs in snap.instances.items():
            user = obs.config.get(state.TAG_USER, "")
            if obs.managed and user in want.paused_users:
                self.paused.setdefault(name, f"users.{user}")

    def action_id(self, ref: ObjectRef, step: str) -> str:
        return f"{self.host}/{ref.kind.value}/{ref.name}/{step}"

    def add(
        self,
        kind: ActionKind,
        ref: ObjectRef,
        step: str,
        *,
        reason: str,
        changes: Iterable[diff.FieldChange] = (),
        restart: bool = False,
        pending: str | None = None,
        depends_on: Iterable[str] = (),
        part_of: str | None = None,
        body: Body | None = None,
        observed: str | None = None,
        adopt: bool = False,
        cause: Cause | None = None,
        hold: Hold | None = None,
    ) -> str:
        action_id = self.action_id(ref, step)
        if self.layer_deps and ref.kind is ObjectKind.INSTANCE:
            changes = tuple(changes)
            depends_on = [*depends_on, *self._needs_layer(ref, step, changes)]
        # Every value is of its field's type (mypy checks the callers): made without validating
        # again, as a large fleet's plan has tens of thousands of actions (planning.bulk).
        action = trusted(
            Action,
            {
                "id": action_id,
                "kind": kind,
                "host": self.host,
                "object": ref,
                "changes": tuple(changes),
                "restart": restart,
                "reason": reason,
                "pending": pending,
                "depends_on": tuple(dict.fromkeys(depends_on)),
                "part_of": part_of,
                "body": body,
                "observed": observed,
                "adopt": adopt,
                "cause": cause,
                "hold": hold if pending is not None else None,
            },
        )
        self.actions.append((step, action))
        return action_id

    def _needs_layer(
        self, ref: ObjectRef, step: str, changes: tuple[diff.FieldChange, ...]
    ) -> list[str]:
        """The host actions an action on container ``ref`` waits for: its create, move and
        starts, and a write of its ``raw.idmap``, need its user's account, home and
        delegations on the host."""
        want = self.want.instances.get(ref.name)
        if want is None:
            return []
        if step not in _NEEDS_LAYER and not any(c.path == _IDMAP for c in changes):
            return []
        return self.layer_deps.get(want.user, [])

    def _error(self, code: ErrorCode, ref: ObjectRef, message: str, *fixes: str) -> None:
        self.errors.append(
            PlanError(code=code, host=self.host, object=ref, message=message, fixes=fixes)
        )
        self.blocked.add(ref.name)

    def _adopts(self, *names: str) -> bool:
        adopt = self.options.adopt
        if adopt is True:
            return True
        if adopt is False:
            return False
        found = [name for name in names if name in adopt]
        self.adopted.update(found)
        return bool(found)
