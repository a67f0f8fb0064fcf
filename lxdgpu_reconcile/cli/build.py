"""``build``: build one template now on its build host and copy it to its hosts, watched live.

Writes to the build host (a temporary build container, the published image, the alias) and to
the distribution hosts (the copied image and alias). Progress goes to standard error, one line
per stage and per step with the step's output indented below it; the result to standard output.
"""

from __future__ import annotations

from typing import Annotated, NoReturn

import typer

from lxdgpu_reconcile.cli.app import app
from lxdgpu_reconcile.cli.common import FleetOpt, LabOpt, err_console, fleet_for_hosts, out
from lxdgpu_reconcile.cli.locking import LockFileOpt, LockWaitOpt, held
from lxdgpu_reconcile.execute import images as executing
from lxdgpu_reconcile.execute.lxdops import DEFAULT_TIMEOUT
from lxdgpu_reconcile.templates.workflow import BuildError, Outcome, build_and_distribute

#: Output lines of a failed step shown with the error (the last ones).
TAIL_SHOWN = 20


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
    ] = DEFAULT_TIMEOUT,
    step_timeout: Annotated[
        float, typer.Option(help="Seconds each build step may run.", min=1)
    ] = executing.DEFAULT_STEP_TIMEOUT,
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
    spec, _site = fleet_for_hosts(fleet, lab)
    with held(lock_file, lock_wait, "build", required=False):
        try:
            outcome = build_and_distribute(
                spec,
                template,
                base_dir=fleet.parent,
                force=force,
                distribute=not no_distribute,
                timeout=timeout,
                step_timeout=step_timeout,
                progress=show_progress,
            )
        except BuildError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            err_console.print(
                "interrupted: the build container was deleted and the template's alias is "
                "unchanged; run the build again when ready",
                markup=False,
            )
            raise typer.Exit(130) from None
    _report(outcome)
    if not outcome.ok:
        raise typer.Exit(1)


def show_progress(event: executing.BuildEvent) -> None:
    """One line per stage and per step on standard error; step output indented below."""
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


def _fail(exc: BuildError) -> NoReturn:
    if exc.tail:
        err_console.print("last output of the step:", markup=False)
        for line in exc.tail[-TAIL_SHOWN:]:
            err_console.print(f"    {line}", markup=False, soft_wrap=True)
    err_console.print(f"error: {exc.message}", markup=False, soft_wrap=True)
    if exc.hint:
        err_console.print(f"  what to do: {exc.hint}", markup=False, soft_wrap=True)
    raise typer.Exit(1)


def _report(outcome: Outcome) -> None:
    fp = outcome.fingerprint[:12]
    where = f"{outcome.alias} ({fp}) on {outcome.build_host}"
    if outcome.action == "built" and outcome.build is not None:
        took = f"{outcome.build.seconds:.1f} s"
        out.print(f"built {where} in {took}: {outcome.reason}", markup=False, soft_wrap=True)
    elif outcome.action == "restored":
        out.print(f"restored {where}: {outcome.reason}", markup=False, soft_wrap=True)
    else:
        out.print(f"unchanged: {where} already carries the recipe", markup=False)
    out.print(f"  recipe {outcome.recipe_hash}", markup=False)
    for copy in outcome.copies:
        if copy.action == "failed":
            err_console.print(f"error: {copy.host}: copy failed: {copy.error}", markup=False)
            if copy.hint:
                err_console.print(f"  what to do: {copy.hint}", markup=False)
        elif copy.action == "copied":
            out.print(f"copied to {copy.host} in {copy.seconds:.1f} s", markup=False)
        elif copy.action == "aliased":
            out.print(f"{copy.host} had the image; pointed {outcome.alias} at it", markup=False)
        else:
            out.print(f"{copy.host} already has it", markup=False)
    for host, fingerprints in outcome.pruned.items():
        if fingerprints:
            short = ", ".join(fp[:12] for fp in fingerprints)
            out.print(f"deleted old images on {host}: {short}", markup=False)
