"""Template images against real LXD daemons (the local lab): build, copy, launch, rebuild, fail.

Every test builds its own template on the lab's busybox image under an alias of its own, and
removes the containers and images it made, so the lab's own aliases are never touched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from lxdgpu_reconcile import service
from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.execute import images as executing
from lxdgpu_reconcile.execute.build_outcome import BuildError, BuildOutcome
from lxdgpu_reconcile.fleet.models import Fleet, Host, Template, TemplateFile
from lxdgpu_reconcile.observe.connect import connect
from lxdgpu_reconcile.templates import recipe
from tests.integration.conftest import LabHandle

pytestmark = pytest.mark.lxd

HOSTS = ("server01", "server02")


class Scratch:
    """A unique template name and alias, the clients of both lab hosts, and clean-up."""

    def __init__(self, lab: LabHandle) -> None:
        self.lab = lab
        self.name = f"it-{uuid.uuid4().hex[:8]}"
        self.alias = f"{self.name}-img"
        self.clients = {h: connect(h, lab.fleet.hosts[h], timeout=30) for h in HOSTS}
        self.containers: list[tuple[str, str]] = []

    def template(self, *steps: str, **changes: Any) -> Template:
        fields: dict[str, Any] = {
            "alias": self.alias,
            "base": "busybox",
            "build_host": "server01",
            "hosts": ["server02"],
            "steps": steps,
            "files": (TemplateFile(path="/opt/x/pushed.txt", content="pushed\n", mode="0640"),),
        }
        return Template.model_validate({**fields, **changes})

    def fleet(self, template: Template) -> Fleet:
        return self.lab.fleet.model_copy(update={"templates": {self.name: template}})

    def build(self, template: Template, **options: Any) -> BuildOutcome:
        return build_fleet(self.lab, self.fleet(template), self.name, **options)

    def launch(self, host: str, image: str) -> str:
        container = f"{self.name}-c{len(self.containers)}"
        self.containers.append((host, container))
        self.lab.lxc(host, "launch", image, container)
        return container

    def run(self, host: str, container: str, *command: str) -> str:
        return self.lab.lxc(host, "exec", container, "--", *command).stdout

    def alias_target(self, host: str, alias: str | None = None) -> str | None:
        return executing.alias_target(self.clients[host], alias or self.alias)

    def build_containers(self, host: str) -> list[str]:
        listed = self.lab.lxc(host, "list", "--format", "csv", "-c", "n").stdout.split()
        return [name for name in listed if name.startswith(recipe.BUILD_PREFIX)]

    def clean(self) -> None:
        for host, container in self.containers:
            self.lab.lxc(host, "delete", "--force", container, check=False)
        for host, client in self.clients.items():
            for alias in (self.alias, recipe.previous_alias(self.alias)):
                self.lab.lxc(host, "image", "alias", "delete", alias, check=False)
            for image in executing.list_images(client):
                if image.properties.get(recipe.PROP_TEMPLATE) == self.name:
                    self.lab.lxc(host, "image", "delete", image.fingerprint, check=False)


def build_fleet(lab: LabHandle, fleet: Fleet, name: str, **options: Any) -> BuildOutcome:
    """``build TEMPLATE`` of ``fleet`` (template files relative to the lab directory)."""
    loaded = service.Loaded(fleet=fleet, site=lab.site, path=lab.dir / "fleet.yaml")
    return service.build_template(loaded, name, timeout=60, **options)


@pytest.fixture
def scratch(lab: LabHandle) -> Iterator[Scratch]:
    made = Scratch(lab)
    try:
        yield made
    finally:
        made.clean()


def test_build_distribute_and_launch_a_user_container(scratch: Scratch) -> None:
    template = scratch.template("echo hi > /etc/built-by-step", "mkdir -p /opt/x/made")

    outcome = scratch.build(template)

    assert outcome.action == "built"
    assert outcome.reason == f"alias {scratch.alias} does not exist on the build host"
    assert [(c.host, c.action) for c in outcome.copies] == [("server02", "copied")]
    assert scratch.alias_target("server01") == outcome.fingerprint
    assert scratch.alias_target("server02") == outcome.fingerprint
    assert scratch.build_containers("server01") == []
    copied = next(
        i
        for i in executing.list_images(scratch.clients["server02"])
        if i.fingerprint == outcome.fingerprint
    )
    assert copied.properties[recipe.PROP_RECIPE_HASH] == outcome.recipe_hash
    assert copied.properties[recipe.PROP_TEMPLATE] == scratch.name
    assert copied.managed
    operations = scratch.lab.lxc("server01", "operation", "list", "--format", "csv").stdout
    tokens = [line for line in operations.splitlines() if "Image download token" in line]
    assert not [line for line in tokens if "RUNNING" in line.upper()], operations

    container = scratch.launch("server02", scratch.alias)
    assert scratch.run("server02", container, "cat", "/etc/built-by-step") == "hi\n"
    assert scratch.run("server02", container, "cat", "/opt/x/pushed.txt") == "pushed\n"
    assert scratch.run("server02", container, "stat", "-c", "%a", "/opt/x/pushed.txt") == "640\n"
    assert scratch.run("server02", container, "test", "-d", "/opt/x/made") == ""

    again = scratch.build(template)
    assert again.action == "unchanged"
    assert again.fingerprint == outcome.fingerprint
    assert [(c.host, c.action) for c in again.copies] == [("server02", "up to date")]


def test_a_changed_step_rebuilds_and_keeps_the_previous_image(scratch: Scratch) -> None:
    first = scratch.build(scratch.template("echo one > /etc/version"))
    second = scratch.build(scratch.template("echo two > /etc/version"))

    assert second.action == "built"
    assert second.recipe_hash != first.recipe_hash
    assert second.reason.startswith("recipe changed")
    for host in HOSTS:
        assert scratch.alias_target(host) == second.fingerprint
        assert scratch.alias_target(host, recipe.previous_alias(scratch.alias)) == (
            first.fingerprint
        )
    container = scratch.launch("server02", scratch.alias)
    assert scratch.run("server02", container, "cat", "/etc/version") == "two\n"

    # Reverting the fleet file points the alias back at the image built from that recipe.
    back = scratch.build(scratch.template("echo one > /etc/version"))
    assert back.action == "restored"
    assert back.fingerprint == first.fingerprint
    assert scratch.alias_target("server01") == first.fingerprint


def test_a_failing_step_reports_it_and_leaves_the_alias(scratch: Scratch) -> None:
    good = scratch.build(scratch.template("echo good > /etc/state"))
    failing = scratch.template(
        "echo good > /etc/state", "echo about to fail; echo oops >&2; exit 3", "echo never"
    )
    lines: list[str] = []

    def collect(event: executing.BuildEvent) -> None:
        if isinstance(event, executing.StepOutput):
            lines.append(event.line)

    with pytest.raises(BuildError) as caught:
        scratch.build(failing, progress=collect)

    assert caught.value.message == (
        "step 2/3 exited with code 3: echo about to fail; echo oops >&2; exit 3"
    )
    assert caught.value.tail == ("about to fail", "oops")
    assert lines == ["about to fail", "oops"]
    assert f"alias {scratch.alias} is unchanged" in caught.value.hint
    assert scratch.alias_target("server01") == good.fingerprint
    assert scratch.alias_target("server02") == good.fingerprint
    assert scratch.build_containers("server01") == []


def test_steps_stream_their_output_while_they_run(scratch: Scratch) -> None:
    events: list[tuple[float, executing.BuildEvent]] = []
    started = time.monotonic()

    def collect(event: executing.BuildEvent) -> None:
        events.append((time.monotonic() - started, event))

    scratch.build(
        scratch.template("for i in 1 2 3; do echo tick $i; sleep 1; done", hosts=[]),
        progress=collect,
    )
    ticks = [at for at, e in events if isinstance(e, executing.StepOutput)]
    finished = next(at for at, e in events if isinstance(e, executing.StepFinished))
    assert len(ticks) == 3
    assert ticks[0] < finished - 1.0, "the first line arrived only when the step ended"


def test_old_images_are_pruned_only_when_no_container_uses_them(scratch: Scratch) -> None:
    client = scratch.clients["server01"]
    first = scratch.build(scratch.template("echo 1 > /etc/n", hosts=[]))
    user = scratch.launch("server01", scratch.alias)
    scratch.build(scratch.template("echo 2 > /etc/n", hosts=[]))
    third = scratch.build(scratch.template("echo 3 > /etc/n", hosts=[]))

    # The first image lost its alias with the third build, but a container was created from it.
    assert third.pruned == {"server01": ()}
    assert executing.has_image(client, first.fingerprint)

    scratch.lab.lxc("server01", "delete", "--force", user)
    assert executing.prune_old_images(client, scratch.name) == [first.fingerprint]
    assert not executing.has_image(client, first.fingerprint)


def test_leftover_build_containers_are_removed_by_their_tags(scratch: Scratch) -> None:
    leftover = recipe.build_container_name(scratch.name, "abcdef")
    lookalike = f"{scratch.name}-lxdgpu-build"
    tags = [f"--config={k}={v}" for k, v in recipe.build_container_config(scratch.name).items()]
    scratch.containers += [("server01", leftover), ("server01", lookalike)]
    scratch.lab.lxc("server01", "launch", "busybox", leftover, *tags)
    scratch.lab.lxc("server01", "init", "busybox", lookalike)

    # The plan of the template finds build containers by their tags, never by name.
    loaded = service.Loaded(
        fleet=scratch.fleet(scratch.template("true", hosts=[])),
        site=scratch.lab.site,
        path=scratch.lab.dir / "fleet.yaml",
    )
    request = service.PlanRequest(only_template=scratch.name)
    planned = service.plan(loaded, request, timeout=30)
    deletes = [a.object.name for a in planned.plan.actions if a.kind.value == "delete"]
    assert deletes == [leftover]
    report = service.apply(loaded, planned.plan, timeout=60, request=request)
    assert report.ok, report

    listed = scratch.lab.lxc("server01", "list", "--format", "csv", "-c", "n").stdout.split()
    assert leftover not in listed
    assert lookalike in listed


def test_build_command_shows_steps_and_skips_an_unchanged_recipe(
    scratch: Scratch, tmp_path: Path
) -> None:
    spec = yaml.safe_load(scratch.lab.fleet_path.read_text())
    spec["templates"][scratch.name] = {
        "alias": scratch.alias,
        "base": "busybox",
        "build_host": "server01",
        "hosts": [],
        "steps": ["echo from the command > /etc/cli", "echo step two says hi"],
    }
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(spec))
    args = ["build", scratch.name, "-f", str(fleet_file), "--lab", str(scratch.lab.dir)]
    runner = CliRunner()

    built = runner.invoke(app, args)
    assert built.exit_code == 0, built.output
    assert "[1/2] echo from the command > /etc/cli" in built.stderr
    assert "[2/2] echo step two says hi\n    step two says hi\n" in built.stderr
    assert built.stdout.startswith(f"built {scratch.alias} (")

    unchanged = runner.invoke(app, args)
    assert unchanged.exit_code == 0, unchanged.output
    assert unchanged.stdout.startswith(f"unchanged: {scratch.alias} (")

    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert forced.stdout.startswith(f"built {scratch.alias} (")
    assert ": --force" in forced.stdout

    failing = runner.invoke(app, [*args[:2], "-f", str(tmp_path / "missing.yaml")])
    assert failing.exit_code == 1
    assert "Traceback" not in failing.output


def test_an_unreachable_host_fails_its_copy_only(scratch: Scratch) -> None:
    template = scratch.template("true", hosts=["ghost", "server02"])
    ghost = {"endpoint": "unix:///nonexistent/lxd/unix.socket"}
    hosts = {**scratch.lab.fleet.hosts, "ghost": Host.model_validate(ghost)}
    fleet = scratch.fleet(template).model_copy(update={"hosts": hosts})

    outcome = build_fleet(scratch.lab, fleet, scratch.name)

    assert [(c.host, c.action) for c in outcome.copies] == [
        ("ghost", "failed"),
        ("server02", "copied"),
    ]
    assert "no LXD socket" in outcome.copies[0].error
    assert not outcome.ok
