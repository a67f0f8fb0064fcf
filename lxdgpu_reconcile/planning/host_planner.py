"""One reachable host's plan: its actions, errors and notes, then their order. Pure: no I/O.

``HostPlanner`` collects the template steps, profile writes (here), container creates, updates
and deletes (``planning.instance_steps``) of one host, then orders them by phase (``_STEPS``)
and holds back what a pause, a host error or a pending dependency stops.
"""

from __future__ import annotations

from collections.abc import Mapping

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import diff
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning import host_layer as layering
from lxdgpu_reconcile.planning import member_layer as member_layering
from lxdgpu_reconcile.planning import preflight as preflighting
from lxdgpu_reconcile.planning.common import ErrorCode, ObjectKind, ObjectRef
from lxdgpu_reconcile.planning.instance_steps import _NEEDS_PRUNE, InstanceSteps
from lxdgpu_reconcile.planning.model import (
    Action,
    ActionKind,
    Cause,
    DelegationBody,
    Hold,
    HostPlan,
    ProfileBody,
)
from lxdgpu_reconcile.planning.updates import cause_of, drift_or_change

#: Steps of an object's actions: the phase they run in, and their order within it.
_STEPS: dict[str, tuple[int, int]] = {
    # The host layer first: accounts, homes, delegations (``planning.host_layer``).
    layering.ACCOUNT_STEP: (-5, 0),
    layering.HOME_STEP: (-4, 0),
    layering.DELEGATION_STEP: (-3, 0),
    "leftover-stop": (-2, 0),
    "leftover-delete": (-2, 1),
    "template-build": (-1, 0),
    "template-alias": (-1, 0),
    "template-copy": (-1, 1),
    "profile-write": (0, 0),
    "recreate-delete": (1, -1),  # a container whose create never finished, before its create
    "create": (1, 0),
    "move": (1, 1),
    "stop": (2, 0),
    "update": (2, 1),
    "restart-stop": (2, 2),
    "restart-update": (2, 3),
    "start": (3, 0),
    "restart-start": (3, 1),
    "delete-stop": (4, 0),
    "delete": (4, 1),
    "profile-delete": (5, 0),
    # Last: a delegation no user needs, once the containers that map it are gone.
    layering.DELEGATION_DELETE_STEP: (6, 0),
}
_HOST_ERRORS = "not applied: this host has plan errors"
_PAUSED = "paused in the fleet file ({key}.paused: true)"


class HostPlanner(InstanceSteps):
    """Collects the actions and errors of one reachable host, then orders them."""

    def run(self) -> HostPlan:
        self._host_layer()
        self._check_external_profiles()
        self._template_steps()
        for name in self.want.profiles:
            self._profile(self.want.profiles[name])
        for name in sorted(self.want.instances):
            self._instance(self.want.instances[name])
        self._prune_instances()
        if self.want.prune.whole_host:
            self._prune_profiles()
            self._prune_delegations()
        return HostPlan(
            host=self.host,
            applyable=not self.errors,
            errors=tuple(self.errors),
            notes=tuple(self.notes),
            actions=self._ordered(),
        )

    # --- the host layer and preflight ---

    def _host_layer(self) -> None:
        """The host actions of the users in scope (first in the plan), and preflight."""
        removed = {
            obs.config.get(state.TAG_USER, "")
            for obs in self.snap.instances.values()
            if obs.managed and obs.config.get(state.TAG_USER)
        }
        if self.want.layer.cluster:
            layer = member_layering.plan_cluster_layer(self.want, self.snap)
        else:
            layer = layering.plan_host_layer(
                self.want.layer, self.host, self.snap.facts, removed_users=removed
            )
        self.errors.extend(layer.errors)
        self.notes.extend(layer.notes)
        planned = []
        for step in layer.steps:
            action_id = self.add(
                step.kind,
                step.ref,
                step.step,
                reason=step.reason,
                changes=step.changes,
                body=step.body,
                cause=step.cause,
            )
            self.layer_users[action_id] = step.users
            for user in step.users:
                self.layer_deps.setdefault(user, []).append(action_id)
            if step.ref.kind is ObjectKind.DELEGATION:
                planned.append(step.ref.name)
        errors, notes = preflighting.preflight(self.want, self.snap, planned=planned)
        self.errors.extend(errors)
        self.notes.extend(notes)

    def _prune_delegations(self) -> None:
        """Delegations the tool added that no user of the host needs: deleted (with --prune)
        after the containers that still map them; kept while one that stays maps them."""
        for member, facts, instances in member_layering.ledgers(self.want.layer, self.snap):
            self._prune_ledger(member, facts, instances)

    def _prune_ledger(
        self,
        member: str | None,
        facts: state.HostFacts | None,
        instances: Mapping[str, state.InstanceObs],
    ) -> None:
        """The stale delegations of one system: the host's, or cluster ``member``'s."""
        stale = layering.stale_delegations(self.want.layer, facts)
        if not stale:
            return
        mapped = layering.mapped_ids(instances)
        planned = {action.id: action for _, action in self.actions}
        where = self.host if member is None else f"{self.host} member {member}"
        for file, ident in stale:
            name = layering.delegation_name(file, ident)
            deletes, staying = [], []
            for inst in sorted(mapped.get(name, ())):
                delete = self.action_id(ObjectRef(kind=ObjectKind.INSTANCE, name=inst), "delete")
                if delete in planned:
                    deletes.append(delete)
                else:
                    staying.append(inst)
            line = f"root:{ident}:1"
            if staying:
                self.notes.append(
                    f"{where}: {file} {line} stays while {', '.join(staying)} "
                    "(no longer in the fleet file) still maps it"
                )
                continue
            pending, hold = (None, None) if self.options.prune else (_NEEDS_PRUNE, Hold.PRUNE)
            self.add(
                ActionKind.DELETE,
                ObjectRef(
                    kind=ObjectKind.DELEGATION,
                    name=layering.object_name(ObjectKind.DELEGATION, name, member),
                ),
                layering.DELEGATION_DELETE_STEP,
                reason=f"added by lxdgpu-reconcile, and no user on {self.host} needs it any more",
                body=DelegationBody(file=file, id=ident, member=member),
                depends_on=deletes,
                pending=pending,
                hold=hold,
                cause=Cause.REMOVED,
            )

    # --- templates ---

    def _template_steps(self) -> None:
        """The template builds and copies, and leftover build containers, of this host."""
        for step in self.templates.steps.get(self.host, ()):
            self.add(
                ActionKind(step.kind),
                step.object,
                step.step,
                reason=step.reason,
                changes=step.changes,
                depends_on=step.depends_on,
                part_of=step.part_of,
                body=step.body,
                observed=step.observed,
            )

    # --- profiles ---

    def _check_external_profiles(self) -> None:
        for name in self.want.external_profiles:
            if name not in self.snap.profiles:
                self._error(
                    ErrorCode.MISSING_PROFILE,
                    ObjectRef(kind=ObjectKind.PROFILE, name=name),
                    f"profile {name} is used by containers on {self.host} but is neither declared "
                    "in the fleet file nor on the host",
                    f"declare it under profiles: (lxdgpu-reconcile then creates it on {self.host})",
                    f"or create it by hand: lxc profile create {self.host}:{name}",
                )

    def _profile(self, want: desiring.DesiredProfile) -> None:
        ref = ObjectRef(kind=ObjectKind.PROFILE, name=want.name)
        wanted = diff.essence(
            config=want.config,
            devices=want.devices,
            description=want.description,
            preserve=self.preserve,
        )
        body = ProfileBody(
            name=want.name,
            description=want.description,
            config=want.config,
            devices=want.devices,
            preserve=self.preserve,
        )
        obs = self.snap.profiles.get(want.name)
        if obs is None:
            changes = diff.diff(wanted, diff.EMPTY)
            self.profile_writes[want.name] = self.add(
                ActionKind.CREATE,
                ref,
                "profile-write",
                reason=f"not on {self.host}",
                changes=changes,
                body=body,
                cause=Cause.ABSENT,
            )
            return
        reason = self._profile_reason(want, obs)
        if reason is None:
            return
        changes = diff.diff(wanted, diff.profile_essence(obs, self.preserve))
        if changes:
            pending, hold = self._reaches_unmanaged(want.name, obs)
            self.profile_writes[want.name] = self.add(
                ActionKind.UPDATE,
                ref,
                "profile-write",
                reason=reason,
                changes=changes,
                body=body,
                observed=fingerprints.profile(obs, self.preserve),
                adopt=not obs.managed,
                cause=cause_of(want.config, obs.config) if obs.managed else Cause.ADOPT,
                pending=pending,
                hold=hold,
            )

    def _reaches_unmanaged(
        self, name: str, obs: state.ProfileObs
    ) -> tuple[str | None, Hold | None]:
        """Why a write of profile ``name`` is held: it reaches containers the tool does not
        manage, and neither ``--touch-unmanaged`` nor ``--adopt NAME`` allows that. A note
        names those containers either way."""
        reached = self._unmanaged_users(name, obs)
        if not reached:
            return None, None
        listed = ", ".join(reached)
        note = (
            f"{self.host}: the change of profile {name} reaches containers lxdgpu-reconcile does "
            f"not manage (untagged): {listed}"
        )
        if self.options.touch_unmanaged or self._adopts(name):
            self.notes.append(f"{note}; allowed (--touch-unmanaged or --adopt {name})")
            return None, None
        self.notes.append(f"{note}; held until apply --touch-unmanaged (or --adopt {name})")
        return (
            f"reaches containers lxdgpu-reconcile does not manage ({listed}): apply with "
            f"--touch-unmanaged, or --adopt {name}, to change them too",
            Hold.UNMANAGED_USERS,
        )

    def _unmanaged_users(self, name: str, obs: state.ProfileObs) -> list[str]:
        """The untagged containers that use profile ``name`` (by their profile lists, and by
        the profile's ``used_by``, which also names containers of other projects), but those
        this plan adopts."""
        users = {n for n, inst in self.snap.instances.items() if name in inst.profiles}
        users.update(n for n in obs.used_by if "/" not in n)
        reached = []
        for user in sorted(users):
            inst = self.snap.instances.get(user)
            if inst is not None and inst.managed:
                continue
            want = self.want.instances.get(user)
            if inst is not None and want is not None and self._adopts(user, want.user):
                continue
            reached.append(user)
        return reached

    def _profile_reason(self, want: desiring.DesiredProfile, obs: state.ProfileObs) -> str | None:
        """Why the profile is updated; None (with an error recorded) when it may not be."""
        if obs.managed:
            return drift_or_change(want.config, obs.config)
        if want.name == desiring.DEFAULT_PROFILE:
            return (
                "LXD creates the default profile on every host; the fleet file declares it, so "
                "it is tagged and managed from now on"
            )
        if self._adopts(want.name):
            return "adopted (--adopt): tagged and managed from now on"
        self._error(
            ErrorCode.UNTAGGED_PROFILE,
            ObjectRef(kind=ObjectKind.PROFILE, name=want.name),
            f"profile {want.name} on {self.host} was not made by lxdgpu-reconcile (it has no "
            f"{state.TAG_MANAGED} tag), and the fleet file wants a profile of that name",
            f"rename it: lxc profile rename {self.host}:{want.name} {want.name}-old",
            f"or adopt it: `apply --adopt {want.name}` (tags it; lxdgpu-reconcile then manages it)",
        )
        return None

    # --- order ---

    def _ordered(self) -> tuple[Action, ...]:
        ranked = sorted(
            self.actions,
            key=lambda item: (_STEPS[item[0]][0], item[1].object.name, _STEPS[item[0]][1]),
        )
        done: dict[str, Action] = {}
        for _, action in ranked:
            local = (dep for dep in action.depends_on if dep.startswith(f"{self.host}/"))
            missing = [dep for dep in local if dep not in done]
            if missing:
                raise AssertionError(f"{action.id} is ordered before {', '.join(missing)}")
            pending, hold = self._paused(action) or (action.pending, action.hold)
            if pending is None:
                pending, hold = self._held_back(action, done)
            if (pending, hold) != (action.pending, action.hold):
                action = action.model_copy(update={"pending": pending, "hold": hold})
            done[action.id] = action
        return tuple(done.values())

    def _paused(self, action: Action) -> tuple[str, Hold] | None:
        """Why ``action`` is left alone by a ``paused: true`` in the fleet file, if it is."""
        if self.want.paused:
            return _PAUSED.format(key=f"hosts.{self.host}"), Hold.PAUSED
        if action.object.kind is ObjectKind.INSTANCE and action.object.name in self.paused:
            return _PAUSED.format(key=self.paused[action.object.name]), Hold.PAUSED
        users = self.layer_users.get(action.id)
        if users and all(user in self.want.paused_users for user in users):
            return _PAUSED.format(key=f"users.{users[0]}"), Hold.PAUSED
        return None

    def _held_back(
        self, action: Action, done: Mapping[str, Action]
    ) -> tuple[str | None, Hold | None]:
        if self.errors:
            return _HOST_ERRORS, Hold.HOST_ERRORS
        for dep in action.depends_on:
            if dep in done and done[dep].pending is not None:
                if done[dep].hold is Hold.UNMANAGED_USERS:
                    return (
                        f"waits for {dep}, which is held: that profile change reaches containers "
                        "lxdgpu-reconcile does not manage",
                        Hold.DEPENDENCY,
                    )
                return f"waits for {dep}, which is pending", Hold.DEPENDENCY
        return None, None
