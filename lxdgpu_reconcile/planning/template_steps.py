"""Template images in the plan: what to build, what to copy, what to clean up. Pure: no I/O.

For every template in scope the recipe hash (``templates.recipe``) is compared with the image its
alias names:

- on the build host: a missing alias or a different recipe hash plans ``build template X`` there;
- on every other host that needs the template (``recipe.copy_targets``): an image without the
  current recipe hash plans ``copy template X to HOST``, after the build when there is one;
- on every host: build containers left by an interrupted build (tagged
  ``user.lxdgpu.role: build``) are deleted; one whose builder process still runs
  (``recipe.running_builder``, over the ``LiveBuilders`` facts the caller gathered) is a build in
  progress: it is left alone and named in a note.

Images the local lab imported as stand-ins (``user.lxdgpu.lab: "true"``, a busybox image under
the template's alias) are taken as they are: the lab cannot run a real template's steps (no
network), and ``lxdgpu-reconcile build`` builds one for real on demand.

Existing user containers are never rebuilt when their template changes: users own what is
inside them. The plan notes which containers run an older build of their template.

This module returns ``TemplateStep``s; ``plan.build_plan`` turns them into actions of the hosts
they run on. A copy depends on the build on another host: the only dependency across hosts.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet import models
from lxdgpu_reconcile.planning import diff, fingerprint, rules
from lxdgpu_reconcile.planning.common import ErrorCode, ObjectKind, ObjectRef, PlanError
from lxdgpu_reconcile.planning.model import AliasTemplateBody, BuildTemplateBody, CopyTemplateBody
from lxdgpu_reconcile.templates import recipe


@dataclass(frozen=True)
class TemplateStep:
    """One template action before it becomes a plan ``Action``."""

    host: str
    kind: Literal["build", "copy", "alias", "stop", "delete"]
    object: ObjectRef
    step: str
    reason: str
    body: BuildTemplateBody | CopyTemplateBody | AliasTemplateBody | None = None
    depends_on: tuple[str, ...] = ()
    observed: str | None = None
    part_of: str | None = None
    changes: tuple[diff.FieldChange, ...] = ()

    @property
    def id(self) -> str:
        return step_id(self.host, self.object, self.step)


@dataclass
class TemplatePlan:
    """The template steps, errors and notes of every host, and which step makes an alias ready."""

    steps: dict[str, list[TemplateStep]] = field(default_factory=dict)
    errors: dict[str, list[PlanError]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    #: ``(host, alias)`` -> id of the build or copy that puts the alias on that host.
    ready: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, step: TemplateStep) -> None:
        self.steps.setdefault(step.host, []).append(step)

    def error(self, host: str, error: PlanError) -> None:
        self.errors.setdefault(host, []).append(error)

    def note(self, host: str, note: str) -> None:
        self.notes.setdefault(host, []).append(note)


@dataclass(frozen=True)
class BuildScope:
    """A plan for ``build TEMPLATE``: that template only; ``force`` builds an unchanged recipe,
    ``distribute`` False plans no copies."""

    template: str
    force: bool = False
    distribute: bool = True


def step_id(host: str, ref: ObjectRef, step: str) -> str:
    """The id of an action, as ``plan`` makes them: ``HOST/KIND/NAME/STEP``."""
    return f"{host}/{ref.kind.value}/{ref.name}/{step}"


def in_scope(fleet: models.Fleet, users: Iterable[str], hosts: Iterable[str]) -> tuple[str, ...]:
    """The templates a plan of ``users`` on ``hosts`` looks after: those the users need, and those
    built on or distributed to the hosts."""
    hosts = set(hosts)
    wanted = {fleet.users[u].template for u in users if u in fleet.users}
    for name, template in fleet.templates.items():
        if template.build_host in hosts or hosts & set(recipe.distribution_hosts(fleet, name)):
            wanted.add(name)
    return tuple(name for name in fleet.templates if name in wanted)


def plan_templates(
    fleet: models.Fleet,
    snapshot: state.FleetSnapshot,
    *,
    templates: Iterable[str],
    hosts: Iterable[str],
    contents: Mapping[str, Mapping[str, bytes]] | None = None,
    build: BuildScope | None = None,
    builders: recipe.LiveBuilders | None = None,
) -> TemplatePlan:
    """Template steps for ``templates``, and leftover build containers on ``hosts``.

    ``contents`` holds, per template, the bytes of every file it pushes (read from the fleet's
    folder by the caller); without it only inline ``content:`` files are known. ``build`` is set
    for ``build TEMPLATE``: only that template, lab stand-ins replaced, leftovers of that template
    only, optionally forced or without copies. ``builders`` tells which builder processes are
    alive (``recipe.running_builder``); None: every build container that names its builder is
    taken for a build in progress.
    """
    result = TemplatePlan()
    for name in templates:
        _plan_template(fleet, snapshot, name, contents, result, build)
    for host in hosts:
        snap = snapshot.hosts.get(host)
        if snap is not None and snap.reachable:
            _leftover_builds(snap, result, only=build.template if build else None, live=builders)
            if build is None:
                _older_builds(fleet, snap, result)
    return result


def build_hosts(fleet: models.Fleet, build: BuildScope) -> tuple[str, ...]:
    """The hosts a ``build TEMPLATE`` plan covers: the build host, then the copy targets."""
    template = fleet.templates[build.template]
    copies = recipe.copy_targets(fleet, build.template) if build.distribute else ()
    return (template.build_host, *copies)


def _reachable(snapshot: state.FleetSnapshot, host: str) -> state.HostSnapshot | None:
    snap = snapshot.hosts.get(host)
    return snap if snap is not None and snap.reachable else None


def _plan_template(
    fleet: models.Fleet,
    snapshot: state.FleetSnapshot,
    name: str,
    contents: Mapping[str, Mapping[str, bytes]] | None,
    result: TemplatePlan,
    build: BuildScope | None = None,
) -> None:
    template = fleet.templates[name]
    ref = ObjectRef(kind=ObjectKind.TEMPLATE, name=name)
    build_host = template.build_host
    snap = _reachable(snapshot, build_host)
    if snap is None:
        return  # the host's own plan reports it unreachable
    files = (
        dict(contents[name]) if contents and name in contents else recipe.inline_contents(template)
    )
    missing = [f.path for f in template.files if f.path not in files]
    if missing:
        result.error(
            build_host,
            PlanError(
                code=ErrorCode.TEMPLATE_FILES,
                host=build_host,
                object=ref,
                message=f"the content of {', '.join(missing)} (template {name}) was not read",
                fixes=("plan from the command line, which reads template files",),
            ),
        )
        return
    base = recipe.parse_base(template, fleet.image_servers)
    key = recipe.base_key(base, snap.images)
    source = recipe.base_source(base, snap.images)
    current = snap.image_by_alias(template.alias)
    if key is None or source is None:
        if current is None:
            result.error(build_host, _missing_base(name, template))
        return
    recipe_hash = recipe.recipe_hash(template, key, file_contents=files)
    build_id = None
    if _is_lab_stand_in(current) and build is None:
        result.note(
            build_host,
            f"lab: {template.alias} is a stand-in image; `lxdgpu-reconcile build {name}` "
            "builds the template for real",
        )
    else:
        why = recipe.build_reason(template.alias, current, recipe_hash)
        forced = build is not None and build.force
        if why is not None or forced:
            body = BuildTemplateBody(
                template=name,
                spec=template,
                recipe_hash=recipe_hash,
                base_key=key,
                base_source=source,
            )
            step = _image_step(snap, body, why or "--force", current, forced=forced)
            result.add(step)
            build_id = step.id
            result.ready[(build_host, template.alias)] = step.id
    targets = recipe.copy_targets(fleet, name)
    for host in targets if build is None or build.distribute else ():
        _plan_copy(snapshot, host, name, template, recipe_hash, build_id, result, build)


def _image_step(
    snap: state.HostSnapshot,
    body: BuildTemplateBody,
    why: str,
    current: state.ImageObs | None,
    *,
    forced: bool,
) -> TemplateStep:
    """The build of ``body`` on its build host; or, when an image of the template was already
    built from this recipe (the fleet file was reverted) and the build is not forced, the move
    of the alias back onto it."""
    ref = ObjectRef(kind=ObjectKind.TEMPLATE, name=body.template)
    alias = body.spec.alias
    change = (_image_change(alias, current, body.recipe_hash),)
    kept = (
        None if forced else recipe.image_with_recipe(snap.images, body.template, body.recipe_hash)
    )
    if kept is not None:
        return TemplateStep(
            host=snap.host,
            kind="alias",
            object=ref,
            step="template-alias",
            reason=f"{why}; image {kept.fingerprint[:12]} was built from this recipe",
            body=AliasTemplateBody(
                template=body.template,
                alias=alias,
                fingerprint=kept.fingerprint,
                recipe_hash=body.recipe_hash,
            ),
            changes=change,
        )
    return TemplateStep(
        host=snap.host,
        kind="build",
        object=ref,
        step="template-build",
        reason=why if current is None else f"{why}; {_KEPT}",
        body=body,
        changes=change,
    )


def _plan_copy(
    snapshot: state.FleetSnapshot,
    host: str,
    name: str,
    template: models.Template,
    recipe_hash: str,
    build_id: str | None,
    result: TemplatePlan,
    build: BuildScope | None = None,
) -> None:
    snap = _reachable(snapshot, host)
    if snap is None:
        return
    current = snap.image_by_alias(template.alias)
    stand_in = _is_lab_stand_in(current) and build is None
    rebuilt = build is not None and build_id is not None
    if stand_in or (recipe.is_current(current, recipe_hash) and not rebuilt):
        return
    ref = ObjectRef(kind=ObjectKind.TEMPLATE, name=name)
    source = snapshot.hosts[template.build_host]
    if build_id is None and not recipe.is_current(
        source.image_by_alias(template.alias), recipe_hash
    ):
        return  # nothing current to copy from; the build host's plan says why
    step = TemplateStep(
        host=host,
        kind="copy",
        object=ref,
        step="template-copy",
        reason=f"{host} lacks the current image of {template.alias} (copied from "
        f"{template.build_host})",
        body=CopyTemplateBody(
            template=name,
            alias=template.alias,
            source_host=template.build_host,
            recipe_hash=recipe_hash,
        ),
        depends_on=(build_id,) if build_id else (),
        changes=(_image_change(template.alias, current, recipe_hash),),
    )
    result.add(step)
    result.ready[(host, template.alias)] = step.id


def _leftover_builds(
    snap: state.HostSnapshot,
    result: TemplatePlan,
    *,
    only: str | None,
    live: recipe.LiveBuilders | None,
) -> None:
    for name, obs in sorted(snap.instances.items()):
        if not recipe.is_build_container(obs.config):
            continue
        if only is not None and obs.config.get(recipe.TAG_TEMPLATE) != only:
            continue
        template = obs.config.get(recipe.TAG_TEMPLATE, "?")
        running = recipe.running_builder(obs.config, live)
        if running is not None:
            result.note(snap.host, _in_progress(name, template, running, checked=live is not None))
            continue
        ref = ObjectRef(kind=ObjectKind.INSTANCE, name=name)
        delete_id = step_id(snap.host, ref, "leftover-delete")
        deps: tuple[str, ...] = ()
        if obs.running:
            stop = TemplateStep(
                host=snap.host,
                kind="stop",
                object=ref,
                step="leftover-stop",
                reason="stop it before deleting it",
                part_of=delete_id,
            )
            result.add(stop)
            deps = (stop.id,)
        result.add(
            TemplateStep(
                host=snap.host,
                kind="delete",
                object=ref,
                step="leftover-delete",
                reason=f"build container of template {template} left by an interrupted build",
                depends_on=deps,
                observed=fingerprint.instance(obs, None),
            )
        )


def _in_progress(name: str, template: str, builder: recipe.Builder, *, checked: bool) -> str:
    since = builder.started.astimezone(datetime.UTC).isoformat(timespec="seconds")
    note = (
        f"{name}: build of template {template} in progress, run by pid {builder.pid} on "
        f"{builder.host} since {since}; not deleted"
    )
    return note if checked else f"{note} (whether that process still runs was not checked)"


def _older_builds(fleet: models.Fleet, snap: state.HostSnapshot, result: TemplatePlan) -> None:
    for name, obs in sorted(snap.instances.items()):
        user = obs.config.get(state.TAG_USER)
        if not obs.managed or user not in fleet.users:
            continue
        template = fleet.templates.get(fleet.users[user].template)
        image = snap.image_by_alias(template.alias) if template else None
        built_from = obs.config.get("volatile.base_image")
        if image is None or not built_from or _is_lab_stand_in(image):
            continue
        if built_from != image.fingerprint and recipe.PROP_RECIPE_HASH in image.properties:
            result.note(
                snap.host,
                f"{name} runs an older build of template {fleet.users[user].template}; "
                "containers are never rebuilt (users own what is inside them)",
            )


def _is_lab_stand_in(image: state.ImageObs | None) -> bool:
    return image is not None and image.properties.get(state.TAG_LAB) == "true"


def _image_change(alias: str, current: state.ImageObs | None, recipe_hash: str) -> diff.FieldChange:
    """The change a build or copy makes: the recipe of the image ``alias`` names."""
    old = None
    if current is not None:
        old = current.properties.get(recipe.PROP_RECIPE_HASH, "(not built by lxdgpu-reconcile)")
    return diff.FieldChange(
        path=("image", alias), old=old, new=recipe_hash, timing=rules.Timing.STORED
    )


def _missing_base(name: str, template: models.Template) -> PlanError:
    base = template.base.rpartition(":")[2]
    return PlanError(
        code=ErrorCode.MISSING_BASE,
        host=template.build_host,
        object=ObjectRef(kind=ObjectKind.TEMPLATE, name=name),
        message=f"the base image {template.base!r} of template {name} is not on build host "
        f"{template.build_host}",
        fixes=(
            f"import it there under the alias {base!r} (lxc image import ... --alias {base})",
            "or write the base as IMAGE_SERVER:ALIAS with a server from image_servers",
        ),
    )


_KEPT = "existing containers keep what they were created from"
