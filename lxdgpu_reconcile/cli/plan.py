"""``plan`` and ``apply``: compare the fleet with its hosts, and make them match.

``plan`` reads only; ``--out FILE`` saves the plan with what it was computed from. ``apply``
plans, shows the plan, asks (unless ``--yes``), then performs the plan and nothing else; ``apply
FILE`` performs a saved plan, if nothing it depends on changed (``cli.saved``). Both hold the lock
that ``reconcile`` holds while they write.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from lxdgpu_reconcile import service
from lxdgpu_reconcile.cli import saved as saved_plans
from lxdgpu_reconcile.cli.app import app
from lxdgpu_reconcile.cli.common import FleetOpt, LabOpt, NotApplied, load, out, perform, show_plan
from lxdgpu_reconcile.cli.locking import LockFileOpt, LockWaitOpt, held
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.report import plan_json, plan_markdown, plan_text


class PlanFormat(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


TargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        "-t",
        help="Plan only this user or host (repeatable).",
        show_default=False,
    ),
]
PruneOpt = Annotated[
    bool,
    typer.Option(
        "--prune",
        help="Delete tagged containers and profiles no longer in the fleet file "
        "(never a protected container).",
    ),
]
AdoptOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--adopt",
        help="Tag and manage this untagged container or profile that is in the fleet's way "
        "(repeatable; a container name, user name or profile name).",
        show_default=False,
    ),
]
RestartOpt = Annotated[
    bool,
    typer.Option(
        "--allow-restart",
        help="Restart running containers for changes LXD applies only at start "
        "(raw.idmap, nvidia.*, ...). Without it those are reported as pending.",
    ),
]
UnmanagedOpt = Annotated[
    bool,
    typer.Option(
        "--touch-unmanaged",
        help="Write profiles that containers lxdgpu-reconcile does not manage (untagged) use; "
        "the change reaches them too. Without it such profile writes are pending.",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(help="Seconds each host gets to answer, and each LXD operation to end.", min=1),
]


def _request(
    target: list[str] | None,
    prune: bool,
    adopt: list[str] | None,
    allow_restart: bool,
    touch_unmanaged: bool = False,
) -> service.PlanRequest:
    return service.PlanRequest(
        targets=tuple(target or ()),
        prune=prune,
        adopt=tuple(adopt or ()),
        allow_restart=allow_restart,
        touch_unmanaged=touch_unmanaged,
    )


@app.command()
def plan(
    fleet: FleetOpt = "fleet.yaml",  # type: ignore[assignment]
    lab: LabOpt = None,
    output: Annotated[
        PlanFormat,
        typer.Option(
            "--format",
            help="text: like terraform plan; json: stable, for bots; markdown: for a pull-request "
            "comment.",
        ),
    ] = PlanFormat.text,
    out_file: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also save the plan to this file, for `apply FILE` to apply exactly it.",
            show_default=False,
        ),
    ] = None,
    target: TargetOpt = None,
    prune: PruneOpt = False,
    adopt: AdoptOpt = None,
    allow_restart: RestartOpt = False,
    touch_unmanaged: UnmanagedOpt = False,
    detailed_exitcode: Annotated[
        bool,
        typer.Option(
            "--detailed-exitcode", help="Exit 2 when there are changes (0: none, 1: error)."
        ),
    ] = False,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Show what apply would change on every host, and why. Changes nothing.

    Example: [bold]lxdgpu-reconcile plan -f fleet.yaml --target tom[/bold]

    Example: [bold]lxdgpu-reconcile plan -f fleet.yaml --out plan.json --format markdown[/bold]
    """
    digest = service.fleet_digest(fleet) if out_file is not None else ""
    loaded = load(fleet, lab)
    request = _request(target, prune, adopt, allow_restart, touch_unmanaged)
    planned = service.plan(loaded, request, timeout=timeout)
    p = planned.plan
    if out_file is not None:
        saved_plans.write(out_file, planned, fleet_path=fleet, digest=digest, lab=lab)
    if output is PlanFormat.json:
        sys.stdout.write(plan_json.render(p))
    elif output is PlanFormat.markdown:
        sys.stdout.write(plan_markdown.render(p))
    else:
        out.print(plan_text.render(p))
    raise typer.Exit(plans.exit_code(p, detailed=detailed_exitcode))


@app.command()
def apply(
    plan_file: Annotated[
        Path | None,
        typer.Argument(
            metavar="PLANFILE",
            help="A plan saved by `plan --out`: apply exactly it, without asking, if nothing it "
            "was made from changed.",
            show_default=False,
        ),
    ] = None,
    fleet: Annotated[
        Path | None,
        typer.Option(
            "-f",
            "--fleet",
            help="The fleet file. Default: fleet.yaml; with PLANFILE, the one the plan names.",
            show_default=False,
        ),
    ] = None,
    lab: LabOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    target: TargetOpt = None,
    prune: PruneOpt = False,
    adopt: AdoptOpt = None,
    allow_restart: RestartOpt = False,
    touch_unmanaged: UnmanagedOpt = False,
    timeout: TimeoutOpt = 120.0,
    lock_file: LockFileOpt = None,
    lock_wait: LockWaitOpt = 60.0,
) -> None:
    """Plan, show the plan, ask, then make every host match the fleet file.

    Hosts are applied in parallel; a failed action stops what depends on it on that host, and the
    other hosts go on. Run it again after a failure: it converges.

    With PLANFILE (from plan --out), apply exactly that plan, refused if anything it used changed.

    Exit status: 0 applied (or nothing to do), 1 errors or refused, 4 lock held by another run.

    Example: [bold]lxdgpu-reconcile apply -f fleet.yaml --allow-restart[/bold]

    Example: [bold]lxdgpu-reconcile apply plan.json[/bold]
    """
    if plan_file is not None:
        fixed = [
            name
            for name, given in (
                ("--target", target),
                ("--prune", prune),
                ("--adopt", adopt),
                ("--allow-restart", allow_restart),
                ("--touch-unmanaged", touch_unmanaged),
            )
            if given
        ]
        if fixed:
            raise NotApplied(
                f"{', '.join(fixed)}: a saved plan was made with its options; plan again with "
                "them (`plan --out`) and apply that plan"
            )
        saved_plans.apply_saved(
            plan_file,
            fleet=fleet,
            lab=lab,
            timeout=timeout,
            lock_file=lock_file,
            lock_wait=lock_wait,
        )
    with held(lock_file, lock_wait, "apply", required=False):
        _apply_fresh(
            fleet or Path("fleet.yaml"),
            lab,
            yes=yes,
            request=_request(target, prune, adopt, allow_restart, touch_unmanaged),
            timeout=timeout,
        )


def _apply_fresh(
    fleet: Path,
    lab: Path | None,
    *,
    yes: bool,
    request: service.PlanRequest,
    timeout: float,
) -> NoReturn:
    loaded = load(fleet, lab)
    p = service.plan(loaded, request, timeout=min(timeout, 30.0)).plan
    show_plan(p, if_errors="fix the errors above, then apply again.")
    if not yes:
        if not sys.stdin.isatty():
            raise NotApplied("Not applied: no terminal to ask on; run with --yes to apply.")
        if not typer.confirm("Apply these changes?", default=False, err=True):
            raise NotApplied("Not applied.")
    perform(p, loaded, timeout=timeout, request=request)
