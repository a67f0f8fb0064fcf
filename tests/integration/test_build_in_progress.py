"""A build in progress is not a leftover, against real LXD daemons (the local lab).

A build container tagged with a live builder process (this test's own) survives every plan; the
same container tagged with a builder that has exited is planned for deletion and removed by apply.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from lxdgpu_reconcile import service
from lxdgpu_reconcile.execute import builders
from lxdgpu_reconcile.fleet.models import Template
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.templates import recipe
from tests.integration.conftest import LabHandle

pytestmark = pytest.mark.lxd

HOST = "server01"


@pytest.fixture
def scratch(lab: LabHandle) -> Iterator[tuple[LabHandle, str]]:
    name = f"it-{uuid.uuid4().hex[:8]}"
    container = recipe.build_container_name(name, "abc123")
    try:
        yield lab, name
    finally:
        lab.lxc(HOST, "delete", "--force", container, check=False)


def _loaded(lab: LabHandle, name: str) -> service.Loaded:
    template = Template.model_validate(
        {"alias": f"{name}-img", "base": "busybox", "build_host": HOST, "hosts": []}
    )
    fleet = lab.fleet.model_copy(update={"templates": {name: template}})
    return service.Loaded(fleet=fleet, site=lab.site, path=lab.dir / "fleet.yaml")


def _launch(lab: LabHandle, name: str, who: recipe.Builder) -> str:
    container = recipe.build_container_name(name, "abc123")
    tags = [f"--config={k}={v}" for k, v in recipe.build_container_config(name, who).items()]
    lab.lxc(HOST, "launch", "busybox", container, *tags)
    return container


def _actions_on(plan: planning.Plan, container: str) -> list[str]:
    return [a.kind.value for a in plan.actions if a.object.name == container]


def _exited_builder() -> recipe.Builder:
    """A builder process that has exited (its pid and start time, read while it ran)."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        start = builders.process_start(child.pid)
    finally:
        child.kill()
        child.wait()
    assert start is not None
    me = builders.this_builder()
    return recipe.Builder(host=me.host, pid=child.pid, start=start, started=me.started)


REQUESTS: list[Callable[[str], service.PlanRequest]] = [
    lambda name: service.PlanRequest(targets=(HOST,)),
    lambda name: service.PlanRequest(only_template=name),
]


@pytest.mark.parametrize("request_of", REQUESTS, ids=["apply", "build"])
def test_a_build_whose_builder_runs_is_not_deleted(
    scratch: tuple[LabHandle, str], request_of: Callable[[str], service.PlanRequest]
) -> None:
    lab, name = scratch
    container = _launch(lab, name, builders.this_builder())

    plan = service.plan(_loaded(lab, name), request_of(name), timeout=30).plan

    assert _actions_on(plan, container) == []
    in_progress = f"{container}: build of template {name} in progress, run by pid"
    assert any(note.startswith(in_progress) for note in plan.notes), plan.notes


def test_a_build_whose_builder_exited_is_deleted_by_apply(scratch: tuple[LabHandle, str]) -> None:
    lab, name = scratch
    container = _launch(lab, name, _exited_builder())
    loaded = _loaded(lab, name)
    request = service.PlanRequest(only_template=name, distribute=False)

    planned = service.plan(loaded, request, timeout=30)
    assert _actions_on(planned.plan, container) == ["stop", "delete"]
    leftovers = planning.Plan(
        options=planned.plan.options,
        hosts=tuple(
            host.model_copy(
                update={"actions": tuple(a for a in host.actions if a.object.name == container)}
            )
            for host in planned.plan.hosts
        ),
    )
    report = service.apply(loaded, leftovers, timeout=60, request=request)

    assert report.ok, report
    listed = lab.lxc(HOST, "list", "--format", "csv", "-c", "n").stdout.split()
    assert container not in listed
