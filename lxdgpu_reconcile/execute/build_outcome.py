"""What ``build TEMPLATE`` did, told from its plan, the apply report and the hosts before and
after. Pure: no I/O.

``build TEMPLATE`` is a plan scoped to one template (``planner.make_plan(only_template=...)``),
performed by the executor like any plan. ``outcome_of`` reads the result back in the terms an
admin watching one build wants: built, restored (the alias moved back onto an image of the same
recipe) or unchanged; each copy target copied, aliased (it had the image), up to date or failed;
the old images pruned. ``report.build_text`` renders it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from lxdgpu_reconcile import state
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute.results import ActionResult, ApplyReport, Outcome
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.templates import recipe

CopyAction = Literal["copied", "aliased", "up to date", "failed"]


class BuildError(ToolError):
    """The template could not be built; ``hint`` says what to do, ``tail`` is a step's output."""

    def __init__(self, message: str, hint: str = "", tail: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint)
        self.tail = tail


@dataclass(frozen=True)
class CopyOutcome:
    host: str
    #: copied: the image was transferred; aliased: the host had the image, the alias moved to it.
    action: CopyAction
    seconds: float = 0.0
    error: str = ""
    hint: str = ""


@dataclass(frozen=True)
class BuildOutcome:
    """What a ``build TEMPLATE`` plan did."""

    template: str
    alias: str
    build_host: str
    recipe_hash: str
    fingerprint: str
    action: Literal["built", "restored", "unchanged"]
    #: Why it was built or restored ("" when unchanged).
    reason: str = ""
    #: Seconds the build took (0 unless built).
    seconds: float = 0.0
    copies: tuple[CopyOutcome, ...] = ()
    removed_builds: tuple[str, ...] = ()
    pruned: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(copy.action != "failed" for copy in self.copies)


def outcome_of(
    plan: plans.Plan,
    report: ApplyReport,
    template: str,
    *,
    alias: str,
    before: state.FleetSnapshot,
    after: state.FleetSnapshot,
    tail: tuple[str, ...] = (),
) -> BuildOutcome:
    """The outcome of the ``build TEMPLATE`` ``plan``; raises ``BuildError`` when nothing was
    built (the plan has an error on the build host, or its build failed). ``tail`` is the last
    output of the steps, shown with a failed step."""
    results = {result.id: result for result in report.results}
    build_host = check_buildable(plan, template)
    image = _image_action(plan, build_host)
    _raise_failure(image, results, tail)
    recipe_hash = _recipe_of(plan, after, build_host, alias)
    current = after.hosts[build_host].image_by_alias(alias) if build_host in after.hosts else None
    action: Literal["built", "restored", "unchanged"] = "unchanged"
    if image is not None:
        action = "built" if image.kind is plans.ActionKind.BUILD else "restored"
    copies = tuple(_copies(plan, build_host, results, before, after))
    pruned = {build_host: _pruned(before, after, build_host, template)} if image else {}
    for copy in copies:
        if copy.action in ("copied", "aliased"):
            pruned[copy.host] = _pruned(before, after, copy.host, template)
    done = results.get(image.id) if image else None
    return BuildOutcome(
        template=template,
        alias=alias,
        build_host=build_host,
        recipe_hash=recipe_hash,
        fingerprint=current.fingerprint if current else "",
        action=action,
        reason=image.reason.removesuffix(f"; {_KEPT}") if image else "",
        seconds=done.seconds if done and action == "built" else 0.0,
        copies=copies,
        removed_builds=_removed_builds(plan, build_host, results),
        pruned=pruned,
    )


# --- reading the plan back ------------------------------------------------------------------------

_KEPT = "existing containers keep what they were created from"
_IMAGE_KINDS = (plans.ActionKind.BUILD, plans.ActionKind.ALIAS)


def check_buildable(plan: plans.Plan, template: str) -> str:
    """The build host of the ``build TEMPLATE`` ``plan`` (its first host); raises
    ``BuildError`` when the plan cannot work there (an unknown template, an unreachable build
    host, a missing base image)."""
    error = plan.errors[0] if plan.errors else None
    if plan.hosts and plan.hosts[0].errors:
        error = plan.hosts[0].errors[0]
    if error is not None or not plan.hosts:
        raise BuildError(
            error.message if error else f"nothing was planned for template {template}",
            error.fixes[0] if error and error.fixes else "",
        )
    return plan.hosts[0].host


def _image_action(plan: plans.Plan, build_host: str) -> plans.Action | None:
    host = next(h for h in plan.hosts if h.host == build_host)
    return next((a for a in host.actions if a.kind in _IMAGE_KINDS), None)


def _raise_failure(
    image: plans.Action | None, results: dict[str, ActionResult], tail: tuple[str, ...]
) -> None:
    result = results.get(image.id) if image is not None else None
    if image is None or result is None or result.outcome is Outcome.DONE:
        return
    alias = _alias_of(image)
    if result.outcome is not Outcome.FAILED:
        raise BuildError(f"building template {alias} did not run: {result.message}")
    if result.message.startswith("step "):  # a step failed: its message and hint say it all
        raise BuildError(result.message, result.hint, tail)
    raise BuildError(
        f"building template {alias} failed: {result.message}",
        result.hint or f"the build container was deleted and alias {alias} is unchanged",
        tail,
    )


def _alias_of(action: plans.Action) -> str:
    body = action.body
    if isinstance(body, plans.BuildTemplateBody):
        return body.spec.alias
    if isinstance(body, plans.AliasTemplateBody | plans.CopyTemplateBody):
        return body.alias
    return ""


def _recipe_of(plan: plans.Plan, after: state.FleetSnapshot, build_host: str, alias: str) -> str:
    """The recipe hash the template is built from: the plan's build or alias move, or, when
    nothing was built, the one the alias carries on the build host."""
    for action in plan.actions:
        body = action.body
        if isinstance(body, plans.BuildTemplateBody | plans.AliasTemplateBody):
            return body.recipe_hash
    snap = after.hosts.get(build_host)
    current = snap.image_by_alias(alias) if snap is not None else None
    return current.properties.get(recipe.PROP_RECIPE_HASH, "") if current else ""


def _copies(
    plan: plans.Plan,
    build_host: str,
    results: dict[str, ActionResult],
    before: state.FleetSnapshot,
    after: state.FleetSnapshot,
) -> Iterator[CopyOutcome]:
    for host in plan.hosts:
        if host.host == build_host:
            continue
        if host.errors:
            error = host.errors[0]
            yield CopyOutcome(
                host.host, "failed", error=error.message, hint=error.fixes[0] if error.fixes else ""
            )
            continue
        copy = next((a for a in host.actions if a.kind is plans.ActionKind.COPY), None)
        if copy is None:
            yield CopyOutcome(host.host, "up to date")
            continue
        result = results.get(copy.id)
        if result is None or result.outcome is not Outcome.DONE:
            message = result.message if result else "not run"
            yield CopyOutcome(
                host.host, "failed", error=message, hint=result.hint if result else ""
            )
            continue
        had = _had_image(before, after, host.host, copy)
        yield CopyOutcome(host.host, "aliased" if had else "copied", seconds=result.seconds)


def _had_image(
    before: state.FleetSnapshot, after: state.FleetSnapshot, host: str, copy: plans.Action
) -> bool:
    """Whether ``host`` already had the image its alias names after the copy."""
    body = copy.body
    then, now = before.hosts.get(host), after.hosts.get(host)
    if not isinstance(body, plans.CopyTemplateBody) or then is None or now is None:
        return False
    current = now.image_by_alias(body.alias)
    return current is not None and any(i.fingerprint == current.fingerprint for i in then.images)


def _pruned(
    before: state.FleetSnapshot, after: state.FleetSnapshot, host: str, template: str
) -> tuple[str, ...]:
    """The template's images on ``host`` before that are gone after."""
    then = before.hosts.get(host)
    now = after.hosts.get(host)
    if then is None or now is None or not now.reachable:
        return ()
    left = {image.fingerprint for image in now.images}
    return tuple(
        image.fingerprint
        for image in then.images
        if image.properties.get(recipe.PROP_TEMPLATE) == template and image.fingerprint not in left
    )


def _removed_builds(
    plan: plans.Plan, build_host: str, results: dict[str, ActionResult]
) -> tuple[str, ...]:
    host = next(h for h in plan.hosts if h.host == build_host)
    return tuple(
        a.object.name
        for a in host.actions
        if a.id.endswith("/leftover-delete")
        and (r := results.get(a.id)) is not None
        and r.outcome is Outcome.DONE
    )
