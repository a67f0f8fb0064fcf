"""Template images in the plan: build, copy, stand-ins, leftovers, and what waits for them."""

from __future__ import annotations

from typing import Any

import pytest

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.templates import recipe
from tests.unit.planning import support

FLEET = Fleet.model_validate(
    {
        "version": 1,
        "hosts": {
            "h1": {"endpoint": "unix:///var/lib/lxd/unix.socket"},
            "h2": {"endpoint": "unix:///var/lib/lxd/unix.socket"},
        },
        "templates": {
            "tools": {
                "alias": "tpl-tools",
                "base": "busybox",
                "build_host": "h1",
                "steps": ["echo built > /etc/built"],
                "files": [{"path": "/etc/tools.conf", "content": "x = 1\n"}],
            }
        },
        "users": {"ann": {"host": "h2", "template": "tools", "uid": 1003, "gid": 1003}},
    }
)
BASE = state.ImageObs(fingerprint="f" * 64, aliases=("busybox",))


def recipe_hash() -> str:
    template = FLEET.templates["tools"]
    return recipe.recipe_hash(
        template, BASE.fingerprint, file_contents=recipe.inline_contents(template)
    )


def built(alias: str = "tpl-tools", recipe_of: str | None = None, **props: str) -> state.ImageObs:
    return state.ImageObs(
        fingerprint="b" * 64,
        aliases=(alias,),
        properties={
            state.TAG_MANAGED: "true",
            recipe.PROP_TEMPLATE: "tools",
            recipe.PROP_RECIPE_HASH: recipe_of or recipe_hash(),
            **props,
        },
    )


def host(name: str, *images: state.ImageObs, **more: Any) -> state.HostSnapshot:
    default = {"default": state.ProfileObs(name="default")}
    return state.HostSnapshot(
        host=name, endpoint="unix:///x", cpus=4, images=images, profiles=default, **more
    )


def plan_of(h1: state.HostSnapshot, h2: state.HostSnapshot) -> planning.Plan:
    snapshot = state.FleetSnapshot(hosts={"h1": h1, "h2": h2})
    return planner.make_plan(FLEET, snapshot, sites.REAL)


def kinds(plan: planning.Plan, host: str) -> list[tuple[str, str, str | None]]:
    (found,) = [h for h in plan.hosts if h.host == host]
    return [(a.kind.value, a.object.name, a.pending) for a in found.actions]


def test_missing_alias_is_built_then_copied_then_the_container_created() -> None:
    plan = plan_of(host("h1", BASE), host("h2"))
    assert kinds(plan, "h1") == [("build", "tools", None)]
    assert kinds(plan, "h2")[:2] == [("copy", "tools", None), ("create", "ann-container", None)]
    build = plan.hosts[0].actions[0]
    copy, create = plan.hosts[1].actions[:2]
    assert copy.depends_on == (build.id,)  # across hosts: the copy waits for the build
    assert copy.id in create.depends_on
    assert isinstance(build.body, planning.BuildTemplateBody)
    assert build.body.recipe_hash == recipe_hash()
    assert build.body.base_source == {"type": "image", "fingerprint": BASE.fingerprint}
    assert plan.summary.builds == 1 and plan.summary.copies == 1
    assert not plan.all_errors


def test_current_image_everywhere_plans_nothing() -> None:
    plan = plan_of(host("h1", BASE, built()), host("h2", built()))
    assert kinds(plan, "h1") == []
    assert kinds(plan, "h2") == [
        ("create", "ann-container", None),
        ("start", "ann-container", None),
    ]


def test_changed_recipe_rebuilds_and_recopies_with_the_reason() -> None:
    old = built(recipe_of="sha256:" + "0" * 64)
    plan = plan_of(host("h1", BASE, old), host("h2", old))
    (build,) = plan.hosts[0].actions
    assert build.reason.startswith("recipe changed (000000000000 -> ")
    assert "existing containers keep what they were created from" in build.reason
    assert kinds(plan, "h2")[0] == ("copy", "tools", None)


def test_a_host_with_the_current_image_gets_no_copy() -> None:
    plan = plan_of(host("h1", BASE, built()), host("h2"))
    assert kinds(plan, "h1") == []
    (copy, *_) = plan.hosts[1].actions
    assert (copy.kind, copy.depends_on) == (planning.ActionKind.COPY, ())


def test_lab_stand_in_is_taken_as_it_is() -> None:
    stand_in = state.ImageObs(
        fingerprint=BASE.fingerprint,
        aliases=("busybox", "tpl-tools"),
        properties={state.TAG_LAB: "true"},
    )
    plan = plan_of(host("h1", stand_in), host("h2", stand_in))
    assert kinds(plan, "h1") == []
    assert [a.kind.value for a in plan.hosts[1].actions] == ["create", "start"]
    assert any("stand-in image" in note for note in plan.notes)


def test_missing_base_is_an_error_on_the_build_host() -> None:
    plan = plan_of(host("h1"), host("h2"))
    codes = [e.code.value for e in plan.all_errors]
    assert "missing-base" in codes
    assert "missing-image" in codes  # nothing can put the alias on h2


def test_a_held_back_build_holds_back_the_copy_on_the_other_host() -> None:
    untagged = state.InstanceObs(name="intruder", status="Stopped")
    fleet_with_h1_user = FLEET.model_copy(
        update={
            "users": {
                **FLEET.users,
                "intruder": FLEET.users["ann"].model_copy(update={"host": "h1", "uid": 1004}),
            }
        }
    )
    h1 = host(
        "h1",
        BASE,
        instances={
            "intruder-container": untagged.model_copy(update={"name": "intruder-container"})
        },
    )
    snapshot = state.FleetSnapshot(hosts={"h1": h1, "h2": host("h2")})
    plan = planner.make_plan(fleet_with_h1_user, snapshot, sites.REAL)
    assert not plan.hosts[0].applyable  # the untagged container blocks h1
    copy = plan.hosts[1].actions[0]
    assert copy.kind is planning.ActionKind.COPY
    assert copy.pending is not None and "which is pending" in copy.pending


@pytest.mark.parametrize("prune", [False, True])
def test_leftover_build_container_is_removed_not_pruned_as_a_user(prune: bool) -> None:
    leftover = state.InstanceObs(
        name="lxdgpu-build-tools-abc123",
        status="Running",
        config=recipe.build_container_config("tools"),
    )
    h1 = host("h1", BASE, built(), instances={leftover.name: leftover})
    snapshot = state.FleetSnapshot(hosts={"h1": h1, "h2": host("h2", built())})
    plan = planner.make_plan(FLEET, snapshot, sites.REAL, prune=prune)
    assert kinds(plan, "h1") == [
        ("stop", leftover.name, None),
        ("delete", leftover.name, None),
    ]
    delete = plan.hosts[0].actions[1]
    assert delete.observed is not None
    assert "interrupted build" in delete.reason


def test_container_from_an_older_build_is_noted_never_rebuilt() -> None:
    ann = state.InstanceObs(
        name="ann-container",
        status="Running",
        config={
            state.TAG_MANAGED: "true",
            state.TAG_USER: "ann",
            "volatile.base_image": "a" * 64,
        },
    )
    plan = plan_of(host("h1", BASE, built()), host("h2", built(), instances={ann.name: ann}))
    assert any("ann-container runs an older build of template tools" in n for n in plan.notes)
    assert all(a.kind is not planning.ActionKind.DELETE for a in plan.actions)


def test_a_copy_whose_build_host_is_outside_the_targets_waits_pending() -> None:
    """With --target, the build on another host is not in the plan: the copy (and what waits
    for it) is held back instead of depending on an action apply would never perform."""
    snapshot = state.FleetSnapshot(hosts={"h1": host("h1", BASE), "h2": host("h2")})
    for target in ("h2", "ann"):
        plan = planner.make_plan(FLEET, snapshot, sites.REAL, targets=(target,))
        assert [h.host for h in plan.hosts] == ["h2"]
        copy, create, start = plan.actions
        assert copy.depends_on == ("h1/template/tools/template-build",)
        assert copy.hold is planning.Hold.DEPENDENCY
        assert "h1 is outside --target" in (copy.pending or "")
        assert [create.hold, start.hold] == [planning.Hold.DEPENDENCY] * 2
        assert plan.summary.pending == 2 and plan.summary.create == 0
    (build,) = planner.make_plan(FLEET, snapshot, sites.REAL, targets=("h1",)).actions
    assert (build.kind, build.pending) == (planning.ActionKind.BUILD, None)


LEFTOVER = state.InstanceObs(
    name="lxdgpu-build-tools-abc123",
    status="Running",
    config=recipe.build_container_config("tools"),
)


@pytest.mark.parametrize(
    ("h1", "h2"),
    [
        pytest.param(host("h1", BASE), host("h2"), id="alias-missing-everywhere"),
        pytest.param(
            host("h1", BASE, built(recipe_of="sha256:" + "0" * 64)),
            host("h2", built(recipe_of="sha256:" + "0" * 64)),
            id="recipe-changed",
        ),
        pytest.param(host("h1", BASE, built()), host("h2"), id="copy-only"),
        pytest.param(
            host("h1", BASE, instances={LEFTOVER.name: LEFTOVER}), host("h2"), id="leftover-build"
        ),
    ],
)
def test_applied_template_plan_leaves_nothing_to_do(
    h1: state.HostSnapshot, h2: state.HostSnapshot
) -> None:
    made = plan_of(h1, h2)
    assert made.actions and not made.all_errors
    after = support.simulate_apply(made, state.FleetSnapshot(hosts={"h1": h1, "h2": h2}), FLEET)
    assert planner.make_plan(FLEET, after, sites.REAL).actions == ()
