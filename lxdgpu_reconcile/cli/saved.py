"""Saved plans on the command line: ``plan --out FILE`` writes one, ``apply FILE`` applies it.

``apply FILE`` applies exactly the saved plan and nothing else, without asking (it was reviewed
when it was made), after checking every precondition: the fleet file is byte for byte the one the
plan was made from, the tool is the same version, and every object the plan writes is still as
it was (absent for a create). Any difference is reported, object by object, and nothing is
written. See docs/gitops.md.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import NoReturn

import typer

from lxdgpu_reconcile import __version__
from lxdgpu_reconcile.cli.common import err_console, fleet_for_hosts, perform, show_plan
from lxdgpu_reconcile.cli.locking import held
from lxdgpu_reconcile.observe.reading import observe_fleet
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import saving
from lxdgpu_reconcile.reconcile import files
from lxdgpu_reconcile.report import saved_text
from lxdgpu_reconcile.state import FleetSnapshot


def fleet_digest(path: Path) -> str:
    """The SHA-256 of the fleet file; exits 1 with what to do when it cannot be read."""
    try:
        return files.sha256_of(path)
    except OSError as exc:
        _fail(
            f"cannot read the fleet file {path}: {exc.strerror or exc}",
            "give its path with -f FLEET",
        )


def write(
    out_file: Path,
    plan: plans.Plan,
    snapshot: FleetSnapshot,
    *,
    fleet_path: Path,
    digest: str,
    lab: Path | None,
) -> None:
    """Save ``plan`` (made from ``snapshot`` and the fleet file with ``digest``) to ``out_file``.

    Refuses when the fleet file changed while the plan was being made.
    """
    if fleet_digest(fleet_path) != digest:
        _fail(
            f"{fleet_path} changed while the plan was being made; the plan was not saved",
            "run plan again",
        )
    saved = saving.save(
        plan,
        snapshot,
        fleet=saving.FleetFile(path=str(fleet_path), sha256=digest),
        lab=str(lab.resolve()) if lab is not None else None,
        tool_version=__version__,
        created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    try:
        files.write_atomic(out_file, saving.render(saved))
    except OSError as exc:
        _fail(f"cannot write {out_file}: {exc.strerror or exc}", "choose another --out path")
    err_console.print(
        f"Saved this plan to {out_file}. Apply exactly it with: lxdgpu-reconcile apply {out_file}",
        markup=False,
        soft_wrap=True,
    )


def apply_saved(
    plan_file: Path,
    *,
    fleet: Path | None,
    lab: Path | None,
    timeout: float,
    lock_file: Path | None,
    lock_wait: float,
) -> NoReturn:
    """``apply PLANFILE``: check, then apply exactly the saved plan; exits."""
    try:
        text = plan_file.read_text()
    except OSError as exc:
        _fail(f"cannot read {plan_file}: {exc.strerror or exc}", "check the path of the plan")
    try:
        saved = saving.parse(text, name=str(plan_file))
    except saving.SavedPlanError as exc:
        _fail(exc.message, exc.hint)
    fleet_path = fleet or Path(saved.fleet.path)
    saved_lab = Path(saved.lab) if saved.lab else None
    if lab is not None and (saved_lab is None or lab.resolve() != saved_lab):
        made_for = f"the lab in {saved.lab}" if saved.lab else "the real hosts"
        _fail(
            f"{plan_file} was made for {made_for}, and --lab (or LXDGPU_LAB) points at {lab}",
            "apply it where it was made (unset LXDGPU_LAB, or give the same --lab), or plan again "
            "for the other one",
        )
    replan = f"lxdgpu-reconcile plan -f {fleet_path} --out {plan_file}"
    digest = fleet_digest(fleet_path)
    early = saving.check(
        saved.model_copy(update={"preconditions": ()}),
        FleetSnapshot(),
        fleet_sha256=digest,
        tool_version=__version__,
    )
    if early:
        _stale(early, plan_file, replan)
    spec, _site = fleet_for_hosts(fleet_path, saved_lab)
    with held(lock_file, lock_wait, "apply", required=False):
        snapshot = observe_fleet(spec, timeout=min(timeout, 30.0), hosts=saved.hosts_to_check)
        stale = saving.check(saved, snapshot, fleet_sha256=digest, tool_version=__version__)
        if stale:
            _stale(stale, plan_file, replan)
        show_plan(saved.plan, if_errors="the plan has errors; fix them and plan again.")
        perform(saved.plan, spec, fleet_path, timeout=timeout)


def _stale(stale: tuple[saving.Stale, ...], plan_file: Path, replan: str) -> NoReturn:
    for line in saved_text.lines(stale, plan_file=str(plan_file), replan=replan):
        err_console.print(line, markup=False, soft_wrap=True)
    raise typer.Exit(1)


def _fail(message: str, hint: str) -> NoReturn:
    err_console.print(f"{message}\n  what to do: {hint}", markup=False, soft_wrap=True)
    raise typer.Exit(1)
