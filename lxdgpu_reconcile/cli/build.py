"""``build``: build one template now on its build host and copy it to its hosts, watched live.

A plan scoped to the template (``service.build_template``), shown on standard error and performed
by the executor like any plan. Writes to the build host (a temporary build container, the
published image, the alias) and to the distribution hosts (the copied image and alias). Progress
goes to standard error, one line per stage and per step with the step's output indented below it;
the result to standard output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from lxdgpu_reconcile.cli import defaults
from lxdgpu_reconcile.cli.app import app
from lxdgpu_reconcile.cli.common import FleetOpt, LabOpt, err_console, load, out
from lxdgpu_reconcile.cli.locking import LockFileOpt, LockWaitOpt, held

if TYPE_CHECKING:
    from lxdgpu_reconcile.execute import images as executing
    from lxdgpu_reconcile.execute.results import Event


@app.command()
def build(
    template: Annotated[
        str,
        typer.Argument(metavar="TEMPLATE", help="The template to build: its key under templates:."),
    ],
    fleet: FleetOpt = "fleet.yaml",  # type: ignore[assignment]
    lab: LabOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Build even when the recipe is unchanged.")
    ] = False,
    no_distribute: Annotated[
        bool,
        typer.Option("--no-distribute", help="Do not copy the image to the template's hosts."),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds for each LXD operation (create, publish, copy).", min=1),
    ] = defaults.LXD_TIMEOUT,
    step_timeout: Annotated[
        float, typer.Option(help="Seconds each build step may run.", min=1)
    ] = defaults.STEP_TIMEOUT,
    lock_file: LockFileOpt = None,
    lock_wait: LockWaitOpt = 60.0,
) -> None:
    """Build TEMPLATE now on its build host and copy the image to the hosts that use it.

    A temporary build container starts from the base; the template's files are pushed in.

    Each step runs as root in it, its output shown as it runs.

    The container is published under the alias with the recipe hash, then deleted.

    The image the alias named before stays as ALIAS-previous, for rollback.

    Nothing is built when the alias already has the fleet's recipe, unless --force.

    User containers are never rebuilt: new containers use the new image.

    It holds the same lock as apply and reconcile, which would otherwise take a running build
    container for one an interrupted build left behind.

    Example: [bold]lxdgpu-reconcile build desktop -f fleet.yaml[/bold]

    Example: [bold]lxdgpu-reconcile build desktop -f fleet.yaml --force --no-distribute[/bold]
    """
    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.report import build_text, plan_text

    loaded = load(fleet, lab)
    request = service.PlanRequest(
        only_template=template, force_build=force, distribute=not no_distribute
    )
    with held(lock_file, lock_wait, "build", required=False):
        try:
            planned = service.plan(loaded, request, timeout=min(timeout, service.OBSERVE_TIMEOUT))
            if planned.plan.actions:
                err_console.print(plan_text.render(planned.plan))
            outcome = service.perform_build(
                loaded,
                planned,
                template,
                timeout=timeout,
                step_timeout=step_timeout,
                progress=show_progress,
                events=show_stage,
            )
        except KeyboardInterrupt:
            err_console.print(
                "interrupted: the build container was deleted and the template's alias is "
                "unchanged; run the build again when ready",
                markup=False,
            )
            raise typer.Exit(130) from None
    for problem, line in build_text.lines(outcome):
        (err_console if problem else out).print(line, markup=False, soft_wrap=True)
    if not outcome.ok:
        raise typer.Exit(1)


def show_progress(event: executing.BuildEvent) -> None:
    """One line per stage and per step on standard error; step output indented below."""
    from lxdgpu_reconcile.execute import images as executing

    if isinstance(event, executing.StepStarted):
        first = event.command.strip().splitlines()[0] if event.command.strip() else ""
        err_console.print(f"[{event.number}/{event.total}] {first}", markup=False)
    elif isinstance(event, executing.StepOutput):
        err_console.print(
            f"    {event.line}", markup=False, soft_wrap=True, highlight=False, emoji=False
        )
    elif isinstance(event, executing.BuildNote):
        prefix = "warning: " if event.warning else ""
        err_console.print(f"{prefix}{event.message}", markup=False, soft_wrap=True)


def show_stage(event: Event) -> None:
    """A line on standard error when a build, alias move, copy or leftover removal starts."""
    from lxdgpu_reconcile.planning import model as plans

    action = event.action
    if event.result is not None or event.line is not None:
        return
    body = action.body
    if isinstance(body, plans.BuildTemplateBody):
        line = f"{action.host}: building {body.spec.alias}: {action.reason}"
    elif isinstance(body, plans.AliasTemplateBody):
        line = f"{action.host}: pointing {body.alias} back at {body.fingerprint[:12]}"
    elif isinstance(body, plans.CopyTemplateBody):
        line = f"{action.host}: copying {body.alias} from {body.source_host}"
    elif action.kind is plans.ActionKind.DELETE:
        line = f"{action.host}: removing leftover build container {action.object.name}"
    else:
        return
    err_console.print(line, markup=False, soft_wrap=True)
