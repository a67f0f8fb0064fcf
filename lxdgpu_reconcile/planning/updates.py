"""The actions of one existing container that differs from the fleet. Pure: no I/O.

Its power state decides the shape: a stopped container takes every change at once; a running
one takes live changes at once and needs stop -> update -> start for what LXD applies only at
start, held back (pending) without ``--allow-restart``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import diff, rules
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning.common import ObjectRef, PowerState
from lxdgpu_reconcile.planning.model import ActionKind, Cause, Hold, InstanceBody

if TYPE_CHECKING:  # the host steps import this module: imported for the types only
    from lxdgpu_reconcile.planning.host_steps import HostSteps

STATUS = {"Running": PowerState.RUNNING, "Stopped": PowerState.STOPPED}
NEEDS_RESTART = (
    "needs a restart: run with --allow-restart (the rest of the plan applies without it)"
)


class Update:
    """The actions of one existing container that differs from the fleet, in its power state.

    A container that is stopped takes every change at once (it applies at its next start). A
    running container takes live changes at once; changes LXD applies only at start need
    stop -> update -> start, which is held back (pending) without ``--allow-restart``.
    """

    def __init__(
        self,
        planner: HostSteps,
        ref: ObjectRef,
        have: diff.Essence,
        changes: tuple[diff.FieldChange, ...],
        deps: list[str],
        reason: str,
        *,
        observed: str,
        adopt: bool,
        cause: Cause,
    ) -> None:
        self.planner = planner
        self.ref = ref
        self.have = have
        self.changes = changes
        self.deps = deps
        self.reason = reason
        self.observed = observed
        self.adopt = adopt
        #: The cause of the writes; a lone start or stop is a difference of power state.
        self.cause = cause if changes else Cause.POWER

    def _write(
        self,
        step: str,
        changes: tuple[diff.FieldChange, ...],
        *,
        reason: str,
        depends_on: Iterable[str],
        before: tuple[diff.FieldChange, ...] = (),
        restart: bool = False,
        pending: str | None = None,
        hold: Hold | None = None,
    ) -> str:
        """An update writing ``changes`` onto the container as it is after ``before``."""
        base = diff.apply_changes(self.have, before)
        after = diff.apply_changes(base, changes)
        return self.planner.add(
            ActionKind.UPDATE,
            self.ref,
            step,
            reason=reason,
            changes=changes,
            restart=restart,
            pending=pending,
            depends_on=depends_on,
            body=InstanceBody(
                profiles=after.profiles or (),
                config=after.config,
                devices=after.devices,
                preserve=self.planner.preserve,
            ),
            observed=fingerprints.of_essence(base),
            adopt=self.adopt,
            cause=self.cause,
            hold=hold,
        )

    def when_stopped(self, *, start: bool) -> None:
        update = None
        if self.changes:
            update = self._write("update", self.changes, reason=self.reason, depends_on=self.deps)
        if start:
            self.planner.add(
                ActionKind.START,
                self.ref,
                "start",
                reason="the fleet file wants it running",
                changes=(state_change(PowerState.STOPPED, PowerState.RUNNING),),
                depends_on=[*self.deps, *([update] if update else [])],
                part_of=update,
                cause=self.cause,
            )

    def then_stop(self) -> None:
        update_id = self.planner.action_id(self.ref, "update") if self.changes else None
        stop = self.planner.add(
            ActionKind.STOP,
            self.ref,
            "stop",
            reason="the fleet file wants it stopped",
            changes=(state_change(PowerState.RUNNING, PowerState.STOPPED),),
            part_of=update_id,
            cause=self.cause,
        )
        if self.changes:
            self._write("update", self.changes, reason=self.reason, depends_on=[stop, *self.deps])

    def while_running(self, *, allow_restart: bool) -> None:
        if not any(change.at_start for change in self.changes):
            if self.changes:
                self._write("update", self.changes, reason=self.reason, depends_on=self.deps)
            return
        if allow_restart:
            self._restart(self.changes, (), [], pending=None)
            return
        live, held = _split(self.changes)
        earlier = []
        if live:
            earlier.append(
                self._write(
                    "update",
                    live,
                    reason=f"{self.reason}; the part LXD applies live",
                    depends_on=self.deps,
                )
            )
        self._restart(held, live, earlier, pending=NEEDS_RESTART)

    def _restart(
        self,
        changes: tuple[diff.FieldChange, ...],
        before: tuple[diff.FieldChange, ...],
        earlier: list[str],
        *,
        pending: str | None,
    ) -> None:
        update_id = self.planner.action_id(self.ref, "restart-update")
        why = _restart_words(changes)
        hold = Hold.RESTART if pending is not None else None
        stop = self.planner.add(
            ActionKind.STOP,
            self.ref,
            "restart-stop",
            reason=f"stop it to apply {why}",
            changes=(state_change(PowerState.RUNNING, PowerState.STOPPED),),
            restart=True,
            pending=pending,
            part_of=update_id,
            cause=self.cause,
            hold=hold,
        )
        self._write(
            "restart-update",
            changes,
            reason=f"{self.reason}; LXD applies {why} only at start, so the container is "
            "stopped, updated and started again",
            depends_on=[stop, *earlier, *self.deps],
            before=before,
            restart=True,
            pending=pending,
            hold=hold,
        )
        self.planner.add(
            ActionKind.START,
            self.ref,
            "restart-start",
            reason="start it again after the update",
            changes=(state_change(PowerState.STOPPED, PowerState.RUNNING),),
            restart=True,
            pending=pending,
            depends_on=(update_id,),
            part_of=update_id,
            cause=self.cause,
            hold=hold,
        )


# --- helpers --------------------------------------------------------------------------------------


def _split(
    changes: tuple[diff.FieldChange, ...],
) -> tuple[tuple[diff.FieldChange, ...], tuple[diff.FieldChange, ...]]:
    """(live, held) parts of a change that needs a restart. The spec-hash tag goes with the
    held part: it records what the container was last written from, which is not yet all."""
    live = tuple(c for c in changes if not c.at_start and c.path != ("config", state.TAG_SPEC_HASH))
    held = tuple(c for c in changes if c not in live)
    return live, held


def _restart_words(changes: Iterable[diff.FieldChange]) -> str:
    names = []
    for change in changes:
        if not change.at_start:
            continue
        if change.path == ("config", rules.TAG_START_HASH):
            names.append("a profile setting")
        elif change.path[0] == "devices":
            names.append(f"device {change.path[1]}")
        else:
            names.append(change.path[-1])
    unique = list(dict.fromkeys(names))
    return ", ".join(unique) or "the change"


def state_change(old: PowerState, new: PowerState) -> diff.FieldChange:
    return diff.FieldChange(path=("state",), old=old.value, new=new.value)


def drift_or_change(want: Mapping[str, str], have: Mapping[str, str]) -> str:
    if cause_of(want, have) is Cause.CHANGE:
        return "the fleet file changed"
    return "changed outside lxdgpu-reconcile (drift)"


def cause_of(want: Mapping[str, str], have: Mapping[str, str]) -> Cause:
    """A fleet change when the spec-hash tags differ; otherwise the host drifted."""
    if want.get(state.TAG_SPEC_HASH) != have.get(state.TAG_SPEC_HASH):
        return Cause.CHANGE
    return Cause.DRIFT
