"""The one template path: an alias moved back is a planned action, and ``build TEMPLATE`` is a
plan scoped to that template (forced, without copies, stand-ins replaced, nothing else)."""

from __future__ import annotations

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.report import plan_markdown, plan_text
from lxdgpu_reconcile.templates import recipe
from tests.unit.planning.test_planning_templates import (
    BASE,
    FLEET,
    built,
    host,
    kinds,
    plan_of,
    recipe_hash,
)

OLD = "sha256:" + "0" * 64


def older(fingerprint: str, alias: str = "tpl-tools") -> state.ImageObs:
    """An image of the template built from another recipe, under ``alias``."""
    return built(alias, recipe_of=OLD).model_copy(update={"fingerprint": fingerprint})


def reverted_h1() -> state.HostSnapshot:
    """The alias names a build of another recipe; ALIAS-previous is this recipe's build."""
    previous = built(recipe.previous_alias("tpl-tools"))
    return host("h1", BASE, older("a" * 64), previous)


def scoped(h1: state.HostSnapshot, h2: state.HostSnapshot, **options: bool) -> planning.Plan:
    snapshot = state.FleetSnapshot(hosts={"h1": h1, "h2": h2})
    return planner.make_plan(FLEET, snapshot, sites.REAL, only_template="tools", **options)


def test_a_reverted_recipe_plans_the_alias_move_back_not_a_build() -> None:
    plan = plan_of(reverted_h1(), host("h2", built()))
    (move,) = plan.hosts[0].actions
    assert move.kind is planning.ActionKind.ALIAS
    assert move.id == "h1/template/tools/template-alias"
    assert isinstance(move.body, planning.AliasTemplateBody)
    assert move.body.fingerprint == "b" * 64
    assert move.body.recipe_hash == recipe_hash()
    assert move.reason.endswith(f"image {'b' * 12} was built from this recipe")
    assert plan.summary.builds == 0 and plan.summary.update == 1
    text = plan_text.plain(plan)
    assert f"~ template tools (point tpl-tools back at {'b' * 12})" in text
    markdown = plan_markdown.render(plan)
    assert f"! template tools (point tpl-tools back at {'b' * 12})" in markdown


def test_a_copy_after_an_alias_move_waits_for_it() -> None:
    plan = plan_of(reverted_h1(), host("h2", older("c" * 64)))
    (move,) = plan.hosts[0].actions
    copy = plan.hosts[1].actions[0]
    assert copy.kind is planning.ActionKind.COPY
    assert copy.depends_on == (move.id,)


def test_build_scope_plans_only_the_template() -> None:
    plan = scoped(host("h1", BASE), host("h2"))
    assert kinds(plan, "h1") == [("build", "tools", None)]
    assert kinds(plan, "h2") == [("copy", "tools", None)]  # no profile, no container
    assert plan.summary.create == 0


def test_build_scope_with_a_current_recipe_plans_nothing_unless_forced() -> None:
    current = (host("h1", BASE, built()), host("h2", built()))
    assert scoped(*current).actions == ()
    forced = scoped(*current, force_build=True)
    (build,) = forced.hosts[0].actions
    assert build.kind is planning.ActionKind.BUILD
    assert build.reason.startswith("--force")
    assert kinds(forced, "h2") == [("copy", "tools", None)]  # the new image goes out again


def test_force_builds_even_when_an_image_of_the_recipe_exists() -> None:
    plan = scoped(reverted_h1(), host("h2"), force_build=True)
    assert kinds(plan, "h1") == [("build", "tools", None)]


def test_build_scope_without_distribute_plans_no_copy() -> None:
    plan = scoped(host("h1", BASE), host("h2"), distribute=False)
    assert [h.host for h in plan.hosts] == ["h1"]
    assert kinds(plan, "h1") == [("build", "tools", None)]


def test_build_scope_replaces_a_lab_stand_in() -> None:
    stand_in = state.ImageObs(
        fingerprint="d" * 64, aliases=("tpl-tools",), properties={state.TAG_LAB: "true"}
    )
    assert kinds(plan_of(host("h1", BASE, stand_in), host("h2")), "h1") == []
    plan = scoped(host("h1", BASE, stand_in), host("h2", stand_in))
    assert kinds(plan, "h1") == [("build", "tools", None)]
    assert kinds(plan, "h2") == [("copy", "tools", None)]


def test_build_scope_removes_only_its_own_leftover_builds() -> None:
    def leftover(name: str, template: str) -> state.InstanceObs:
        config = recipe.build_container_config(template)
        return state.InstanceObs(name=name, status="Stopped", config=config)

    mine, other = leftover("tools-lxdgpu-build-1", "tools"), leftover("x-lxdgpu-build-2", "x")
    h1 = host("h1", BASE, built(), instances={mine.name: mine, other.name: other})
    plan = scoped(h1, host("h2", built()))
    assert [(a.kind.value, a.object.name) for a in plan.hosts[0].actions] == [("delete", mine.name)]


def test_build_scope_names_an_unknown_template() -> None:
    snapshot = state.FleetSnapshot(hosts={"h1": host("h1", BASE)})
    plan = planner.make_plan(FLEET, snapshot, sites.REAL, only_template="nope")
    (error,) = plan.errors
    assert "the fleet has no template 'nope' (templates: tools)" in error.message
