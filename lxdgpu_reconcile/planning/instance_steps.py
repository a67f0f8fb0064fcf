"""The containers of one host in its plan: creates, updates and deletes. Pure: no I/O.

``InstanceSteps`` is the part of ``host_planner.HostPlanner`` that looks at containers: it checks
that an existing container may be touched (tagged, owned by the user, a container in a state the
tool handles), creates missing ones (and again those whose create never finished,
``planning.unfinished``), turns differences into updates (``planning.updates``), and
deletes what the fleet file no longer has, only with ``--prune``.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import diff
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning import move_steps as moving
from lxdgpu_reconcile.planning import unfinished as unfinishing
from lxdgpu_reconcile.planning.bulk import trusted
from lxdgpu_reconcile.planning.common import ErrorCode, ObjectKind, ObjectRef, PowerState
from lxdgpu_reconcile.planning.host_steps import HostSteps
from lxdgpu_reconcile.planning.model import (
    ActionKind,
    Cause,
    CreateInstanceBody,
    Hold,
)
from lxdgpu_reconcile.planning.updates import (
    STATUS,
    Update,
    cause_of,
    drift_or_change,
    state_change,
)
from lxdgpu_reconcile.templates import recipe

_NEEDS_PRUNE = "kept: deletes happen only with --prune"


class InstanceSteps(HostSteps):
    """Container steps of a host plan: checks, creates, moves, updates and deletes."""

    # --- containers ---

    def _instance(self, want: desiring.DesiredInstance) -> None:
        if want.name in self.snap.unseen:
            self.notes.append(_out_of_sight(self.snap, want.name))
            return
        obs = self.snap.instances.get(want.name)
        source = self.moves.to.get(moving.key(self.host, want.name))
        if source is not None:
            moving.plan_move(self, want, source, obs)
            return
        if obs is None:
            self._create(want)
            return
        adopting = self._check_instance(want, obs)
        if adopting is False and moving.wants_member_move(self.snap, want, obs):
            moving.plan_member_move(self, want, obs)
        elif adopting is False and unfinishing.unfinished(obs):
            self._recreate(want, obs)
        elif adopting is not None:
            self._update(want, obs, adopting)

    def _recreate(self, want: desiring.DesiredInstance, obs: state.InstanceObs) -> None:
        """Delete a container whose create never finished, and create it again
        (``planning.unfinished``): it has never run, so it holds no user data."""
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=want.name)
        delete = self.add(
            ActionKind.DELETE,
            ref,
            "recreate-delete",
            reason="its create never finished (no root filesystem, never started): deleted "
            "and created again; it has held no user data",
            part_of=self.action_id(ref, "create"),
            observed=fingerprints.instance(obs, None),
            cause=Cause.ABSENT,
        )
        self._create(want, after=delete)

    def _check_instance(
        self, want: desiring.DesiredInstance, obs: state.InstanceObs
    ) -> bool | None:
        """Whether ``obs`` is adopted (True) or already managed (False); None if it may not be
        touched (an error is recorded)."""
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=want.name)
        where = f"{self.host}:{want.name}"
        if obs.type != "container":
            self._error(
                ErrorCode.NOT_A_CONTAINER,
                ref,
                f"{want.name} on {self.host} is a {obs.type}, and the fleet wants a container of "
                "that name",
                f"rename it: lxc rename {where} {want.name}-old",
                f"or give user {want.user} another container name (users.{want.user}.container)",
            )
            return None
        adopting = False
        if not obs.managed:
            if not self._adopts(want.name, want.user):
                self._error(
                    ErrorCode.UNTAGGED_INSTANCE,
                    ref,
                    f"container {want.name} on {self.host} was not made by lxdgpu-reconcile (it "
                    f"has no {state.TAG_MANAGED} tag), and user {want.user} needs a container of "
                    "that name",
                    f"rename it: lxc rename {where} {want.name}-old",
                    f"or adopt it: `apply --adopt {want.name}` (tags it; lxdgpu-reconcile then "
                    "manages it)",
                )
                return None
            adopting = True
        owner = obs.config.get(state.TAG_USER)
        if not adopting and owner != want.user:
            self._error(
                ErrorCode.OTHER_OWNER,
                ref,
                f"container {want.name} on {self.host} is tagged for user {owner}, not {want.user}",
                f"give user {want.user} another container name (users.{want.user}.container)",
                f"or remove it by hand when {owner}'s data is safe: lxc delete {where}",
            )
            return None
        copy = None if adopting else self._copy_of(obs)
        if copy is not None:
            self._error(
                ErrorCode.COPY_IN_THE_WAY,
                ref,
                f"container {want.name} on {self.host} is a copy of {copy} (lxc copy copies the "
                f"tags), not the container lxdgpu-reconcile made for user {want.user}; it is "
                "left alone",
                f"rename it: lxc rename {where} {want.name}-copy (the next apply creates "
                f"{want.user}'s container)",
                f"or, to make it {want.user}'s container, drop the copied identity: "
                f"lxc config unset {where} {state.TAG_CREATED_AS}",
            )
            return None
        if obs.status not in STATUS:
            self._error(
                ErrorCode.UNSUPPORTED_STATUS,
                ref,
                f"container {want.name} on {self.host} is {obs.status}",
                f"bring it to Running or Stopped by hand (lxc start / lxc stop {where}), then "
                "plan again",
            )
            return None
        return adopting

    def _wanted(self, want: desiring.DesiredInstance) -> diff.Essence:
        return diff.essence(
            config=want.config,
            devices=want.devices,
            profiles=want.profiles,
            preserve=self.preserve,
        )

    def _profile_deps(self, names: Iterable[str]) -> list[str]:
        return [self.profile_writes[name] for name in names if name in self.profile_writes]

    def _create(self, want: desiring.DesiredInstance, *, after: str | None = None) -> None:
        """Create ``want`` (``after``: the delete of an unfinished container of that name)."""
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=want.name)
        image_step = self.templates.ready.get((self.host, want.alias))
        if self.snap.image_by_alias(want.alias) is None and image_step is None:
            self._error(
                ErrorCode.MISSING_IMAGE,
                ref,
                f"image {want.alias} (template {want.template}) is not on {self.host}, and "
                f"{want.name} is created from it",
                f"build the template on its build host (`lxdgpu-reconcile build {want.template}`)"
                f" and list {self.host} in its hosts, or copy the image by hand: "
                f"lxc image copy SERVER:{want.alias} {self.host}: --alias {want.alias}",
            )
        wanted = self._wanted(want)
        body = trusted(
            CreateInstanceBody,
            {
                "body": "create-instance",
                "name": want.name,
                "alias": want.alias,
                "profiles": want.profiles,
                "config": dict(want.config),
                "devices": {name: dict(device) for name, device in want.devices.items()},
                # A first password for the container user once it runs (execute.passwords).
                "first_password": want.container_user,
                "vnc": want.vnc,
                "target": want.member if self.snap.clustered else None,
            },
            given=(
                *("name", "alias", "profiles", "config", "devices"),
                *("first_password", "vnc", "target"),
            ),
        )
        unseen = [h for h in self.moves.unseen if h != self.host] if after is None else []
        unseen += [
            h
            for h, names in self.moves.unseen_names.items()
            if h != self.host and want.name in names and after is None
        ]
        pending = _unseen_words(unseen, want.user) if unseen else None
        reason = f"user {want.user} has no container on {self.host}"
        if self.snap.clustered:
            on = f"on member {want.member}" if want.member else "no member"
            reason += f"; {on}: {want.placement}"
            if want.member is None:
                pending = pending or f"not created: {want.placement}"
            pending = pending or moving.member_down(self.snap, want.member)
        create = self.add(
            ActionKind.CREATE,
            ref,
            "create",
            reason=reason,
            pending=pending,
            hold=Hold.UNSEEN_HOSTS if pending else None,
            changes=diff.diff(wanted, diff.EMPTY),
            depends_on=[
                *self._profile_deps(want.profiles),
                *([image_step] if image_step else []),
                *([after] if after else []),
            ],
            body=body,
            cause=Cause.ABSENT,
        )
        if want.state is PowerState.RUNNING:
            self.add(
                ActionKind.START,
                ref,
                "start",
                reason="start it after creating it",
                changes=(state_change(PowerState.STOPPED, PowerState.RUNNING),),
                depends_on=(create,),
                part_of=create,
                cause=Cause.ABSENT,
            )

    def _update(
        self, want: desiring.DesiredInstance, obs: state.InstanceObs, adopting: bool
    ) -> None:
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=want.name)
        have = diff.instance_essence(obs, self.preserve)
        changes = diff.diff(self._wanted(want), have)
        deps = self._profile_deps(want.profiles)
        reason = (
            "adopted (--adopt): tagged and managed from now on"
            if adopting
            else drift_or_change(want.config, obs.config)
        )
        update = Update(
            self,
            ref,
            have,
            changes,
            deps,
            reason,
            observed=fingerprints.of_essence(have),  # fingerprints.instance(obs, self.preserve)
            adopt=adopting,
            cause=Cause.ADOPT if adopting else cause_of(want.config, obs.config),
        )
        if STATUS[obs.status] is PowerState.STOPPED:
            update.when_stopped(start=want.state is PowerState.RUNNING)
        elif want.state is PowerState.STOPPED:
            update.then_stop()
        else:
            update.while_running(allow_restart=self.options.allow_restart)
        writer = self._writer_of(ref, ("profiles",))
        if writer is not None:
            for name in obs.profiles:
                if name not in want.profiles:
                    self.leaving.setdefault(name, []).append(writer)

    def _writer_of(self, ref: ObjectRef, path: tuple[str, ...]) -> str | None:
        """The id of the action that writes field ``path`` of ``ref``, if any."""
        for _, action in self.actions:
            if action.object == ref and any(c.path == path for c in action.changes):
                return action.id
        return None

    # --- deletes ---

    def _prune_instances(self) -> None:
        for name, obs in sorted(self.snap.instances.items()):
            if name in self.want.instances or not obs.managed:
                continue
            if recipe.is_build_container(obs.config):
                continue  # a leftover build container: the template steps remove it
            if moving.key(self.host, name) in self.moves.away:
                continue  # the source of a move: the move takes it
            user = obs.config.get(state.TAG_USER, "")
            scope = self.want.prune
            if not scope.whole_host and user not in scope.users:
                continue
            copy = self._copy_of(obs)
            if copy is not None:
                self.notes.append(
                    f"{self.host}: {obs.name} is a copy of {copy}, tagged for user {user or '?'}: "
                    "lxdgpu-reconcile leaves it alone (never updated, never deleted, not even "
                    f"with --prune); delete it by hand when it is no longer needed: "
                    f"lxc delete {self.host}:{obs.name}"
                )
                continue
            self._delete_instance(obs, user)

    def _copy_of(self, obs: state.InstanceObs) -> str | None:
        """What the tagged container ``obs`` is a copy of; None when it is the tool's own.

        Its ``user.lxdgpu.created-as`` tag (``HOST/NAME``, written by the create request only)
        must be its own host and name: ``lxc copy`` copies the tag to a new name or host. A
        container without the tag (created before the tag existed, or adopted) is the tool's
        own when its name is the one the fleet gives its user, or its user is not in the fleet.
        """
        made = obs.config.get(state.TAG_CREATED_AS)
        if made is not None:
            return None if made == desiring.created_as(self.host, obs.name) else made
        user = obs.config.get(state.TAG_USER, "")
        name = self.want.container_names.get(user)
        if name is None or name == obs.name:
            return None
        return f"user {user}'s container {name}"

    def _delete_instance(self, obs: state.InstanceObs, user: str) -> None:
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=obs.name)
        pending, hold = None, None
        was_moved = moving.moved(obs)
        if was_moved and not self.options.prune:
            self.notes.append(
                f"{self.host}: {obs.name} was {_moved_words(obs)}; it stays, stopped, until "
                "`apply --prune` deletes it"
            )
            return
        if not self.options.prune:
            pending, hold = _NEEDS_PRUNE, Hold.PRUNE
        elif _protected(obs) and not was_moved:
            pending, hold = (
                "protected by security.protection.delete: release it with "
                f"`lxc config set {self.host}:{obs.name} security.protection.delete=false`, "
                "then `apply --prune` (or the next reconcile run) deletes it",
                Hold.PROTECTED,
            )
        delete_id = self.action_id(ref, "delete")
        deps = []
        if obs.running:
            deps.append(
                self.add(
                    ActionKind.STOP,
                    ref,
                    "delete-stop",
                    reason="stop it before deleting it",
                    changes=(state_change(PowerState.RUNNING, PowerState.STOPPED),),
                    pending=pending,
                    part_of=delete_id,
                    cause=Cause.REMOVED,
                    hold=hold,
                )
            )
        reason = f"not in the fleet file (tagged for user {user or '?'})"
        if was_moved:
            reason = f"{_moved_words(obs)}; its delete protection is lifted, then it is deleted"
        self.add(
            ActionKind.DELETE,
            ref,
            "delete",
            reason=reason,
            pending=pending,
            depends_on=deps,
            observed=fingerprints.instance(obs, None),
            cause=Cause.REMOVED,
            hold=hold,
        )
        if pending is None:
            self.deleted.add(obs.name)
        for profile in obs.profiles:
            self.leaving.setdefault(profile, []).append(delete_id)

    def _prune_profiles(self) -> None:
        for name, obs in sorted(self.snap.profiles.items()):
            if name in self.want.profiles or not obs.managed:
                continue
            if name == desiring.DEFAULT_PROFILE:
                self.notes.append(
                    f"{self.host}: the default profile is tagged but no longer declared; LXD "
                    "cannot delete it, so it stays as it is"
                )
                continue
            ref = ObjectRef(kind=ObjectKind.PROFILE, name=name)
            users = self._users_after(name)
            pending, hold = None, None
            if not self.options.prune:
                pending, hold = _NEEDS_PRUNE, Hold.PRUNE
            elif users:
                pending, hold = f"still used by {', '.join(users)}", Hold.IN_USE
            elif self.snap.unseen:
                pending = "containers on a member that is not online could not be seen: " + (
                    ", ".join(sorted(self.snap.unseen))
                )
                hold = Hold.UNSEEN_HOSTS
            self.add(
                ActionKind.DELETE,
                ref,
                "profile-delete",
                reason="no longer needed by the fleet file",
                pending=pending,
                depends_on=self.leaving.get(name, ()),
                observed=fingerprints.profile(obs, None),
                cause=Cause.REMOVED,
                hold=hold,
            )

    def _users_after(self, profile: str) -> list[str]:
        """Containers that use ``profile`` once this plan is applied."""
        users = []
        for name, obs in sorted(self.snap.instances.items()):
            if name in self.deleted:
                continue
            want = self.want.instances.get(name)
            if want is not None and name not in self.blocked:
                if profile in want.profiles:
                    users.append(name)
            elif profile in obs.profiles:
                users.append(name)
        return users


def _out_of_sight(snap: state.HostSnapshot, name: str) -> str:
    """The note for a container on a cluster member that is not online."""
    member = snap.unseen[name]
    found = snap.member(member)
    status = found.status.lower() if found is not None and found.status else "not online"
    if found is not None and found.online:  # listed online, but LXD could not reach it
        status = "not answering"
    return (
        f"{snap.host}: {name} is on member {member}, which is {status}: it could not be seen, "
        "and nothing is planned for it"
    )


def _moved_words(obs: state.InstanceObs) -> str:
    to = obs.config.get(state.TAG_MOVED_TO, "?").replace("/", ":")
    return f"moved to {to} at {obs.config.get(state.TAG_MOVED_AT, '?')}"


def _protected(obs: state.InstanceObs) -> bool:
    config = obs.expanded_config or obs.config
    return config.get("security.protection.delete", "false").lower() == "true"


def _unseen_words(hosts: list[str], user: str) -> str:
    """Why the create of ``user``'s container waits while ``hosts`` could not be read."""
    where = ", ".join(hosts)
    return (
        f"{where} could not be read, and {user}'s container may be there (a move would take it "
        "from there): created once every host answers, so that no user ever has two containers"
    )
