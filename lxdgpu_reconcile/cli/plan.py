"""``plan`` and ``apply``: compare the fleet with its hosts, and make them match.

``plan`` reads only; ``--out FILE`` saves the plan with what it was computed from. ``apply``
plans, shows the plan, asks (unless ``--yes``), then performs the plan and nothing else; ``apply
FILE`` performs a saved plan, if nothing it depends on changed (``cli.saved``). Both hold the lock
that ``reconcile`` holds while they write.
"""

from __future__ import annotations

import dataclasses
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from lxdgpu_reconcile.cli import saved as saved_plans
from lxdgpu_reconcile.cli.app import app
from lxdgpu_reconcile.cli.common import (
    DEFAULT_PARALLEL,
    FleetOpt,
    LabOpt,
    LocalOpt,
    NotApplied,
    ParallelOpt,
    load,
    out,
    perform,
    read_fleet,
    show_plan,
)
from lxdgpu_reconcile.cli.locking import LockFileOpt, LockWaitOpt, held
from lxdgpu_reconcile.cli.passwords import CredentialsDirOpt

if TYPE_CHECKING:
    from lxdgpu_reconcile import service


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
ForceOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--force",
        help="Stop this container even while processes use its GPUs (repeatable; a container "
        "name). Without it a restart, move or delete that stops a busy container fails.",
        show_default=False,
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
    from lxdgpu_reconcile import service

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
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Plan against this snapshot file (`status --snapshot-out`) instead of the live "
            "hosts: no host is contacted, no certificate is needed (docs/performance.md).",
            show_default=False,
        ),
    ] = None,
    local: LocalOpt = False,
) -> None:
    """Show what apply would change on every host, and why. Changes nothing.

    Example: [bold]lxdgpu-reconcile plan -f fleet.yaml --target tom[/bold]

    Example: [bold]lxdgpu-reconcile plan -f fleet.yaml --state snap.json --format markdown[/bold]

    Example: [bold]lxdgpu-reconcile plan -f fleet.yaml --out plan.json --format markdown[/bold]
    """
    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.planning import model as plans
    from lxdgpu_reconcile.report import plan_json, plan_markdown, plan_text

    request = _request(target, prune, adopt, allow_restart, touch_unmanaged)
    if state is not None:
        planned = _plan_offline(
            fleet, lab, state, request, saving=out_file is not None, local=local
        )
    else:
        digest = service.fleet_digest(fleet) if out_file is not None else ""
        loaded = load(fleet, lab, local=local)
        planned = service.plan(loaded, request, timeout=timeout)
    p = planned.plan
    if out_file is not None and state is None:
        saved_plans.write(out_file, planned, fleet_path=fleet, digest=digest, lab=lab)
    if output is PlanFormat.json:
        sys.stdout.write(plan_json.render(p))
    elif output is PlanFormat.markdown:
        sys.stdout.write(plan_markdown.render(p))
    else:
        out.print(plan_text.render(p))
    raise typer.Exit(plans.exit_code(p, detailed=detailed_exitcode))


def _plan_offline(
    fleet: Path,
    lab: Path | None,
    state: Path,
    request: service.PlanRequest,
    *,
    saving: bool,
    local: bool = False,
) -> service.Planned:
    """``plan --state FILE``: the plan against the snapshot in ``FILE``; no host is contacted."""
    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.errors import ToolError
    from lxdgpu_reconcile.observe import snapshot_file

    if saving:
        raise ToolError(
            "--out with --state: a saved plan is applied to the live hosts, so it is made from "
            "them, not from a snapshot file",
            "plan against the hosts to save a plan (`plan --out FILE` without --state)",
        )
    saved = snapshot_file.read(state)
    loaded = service.locate_offline(read_fleet(fleet, certs=False), lab, local=local)
    return service.plan(loaded, request, timeout=0, snapshot=saved)


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
    force: ForceOpt = None,
    timeout: TimeoutOpt = 120.0,
    lock_file: LockFileOpt = None,
    lock_wait: LockWaitOpt = 60.0,
    parallel: ParallelOpt = DEFAULT_PARALLEL,
    local: LocalOpt = False,
    credentials_dir: CredentialsDirOpt = None,
    state: Annotated[Path | None, typer.Option("--state", hidden=True)] = None,
) -> None:
    """Plan, show the plan, ask, then make every host match the fleet file.

    Hosts are applied in parallel; a failed action stops what depends on it on that host, and the
    other hosts go on. Run it again after a failure: it converges.

    With PLANFILE (from plan --out), apply exactly that plan, refused if anything it used changed.

    Exit status: 0 applied (or nothing to do), 1 errors or refused, 4 lock held by another run.

    Example: [bold]lxdgpu-reconcile apply -f fleet.yaml --allow-restart[/bold]

    Example: [bold]lxdgpu-reconcile apply plan.json[/bold]
    """
    if state is not None:
        raise NotApplied(
            "--state: apply changes the live hosts, so it plans against them, never against a "
            "snapshot file",
            "run apply without --state (`plan --state FILE` shows a plan from a snapshot)",
        )
    if plan_file is not None and force:
        raise NotApplied(
            "--force: a saved plan is applied as it was made; to stop a container whose GPUs "
            "are busy, apply from the fleet file: `lxdgpu-reconcile apply --force NAME`"
        )
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
            parallel=parallel,
            local=local,
            credentials=credentials_dir,
        )
    with held(lock_file, lock_wait, "apply", required=False):
        _apply_fresh(
            fleet or Path("fleet.yaml"),
            lab,
            yes=yes,
            request=dataclasses.replace(
                _request(target, prune, adopt, allow_restart, touch_unmanaged),
                force=tuple(force or ()),
            ),
            timeout=timeout,
            parallel=parallel,
            local=local,
            credentials=credentials_dir,
        )


def _apply_fresh(
    fleet: Path,
    lab: Path | None,
    *,
    yes: bool,
    request: service.PlanRequest,
    timeout: float,
    parallel: int = DEFAULT_PARALLEL,
    local: bool = False,
    credentials: Path | None = None,
) -> NoReturn:
    loaded = load(fleet, lab, local=local)
    from lxdgpu_reconcile import service

    p = service.plan(loaded, request, timeout=min(timeout, 30.0)).plan
    show_plan(p, if_errors="fix the errors above, then apply again.")
    if not yes:
        if not sys.stdin.isatty():
            raise NotApplied("Not applied: no terminal to ask on; run with --yes to apply.")
        if not typer.confirm("Apply these changes?", default=False, err=True):
            raise NotApplied("Not applied.")
    perform(p, loaded, timeout=timeout, request=request, parallel=parallel, credentials=credentials)
