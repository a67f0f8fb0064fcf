"""Saved plans on the command line: ``plan --out FILE`` writes one, ``apply FILE`` applies it.

``apply FILE`` applies exactly the saved plan and nothing else, without asking (it was reviewed
when it was made), after checking every precondition (``service.open_saved`` and
``service.check_saved``): the fleet file is byte for byte the one the plan was made from, the
tool is the same version, and every object the plan writes is still as it was (absent for a
create). Any difference is reported, object by object, and nothing is written. See
docs/gitops.md. Prints, and writes the plan file; other I/O goes through ``service``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

from lxdgpu_reconcile import fileio as files
from lxdgpu_reconcile import service
from lxdgpu_reconcile.cli.common import err_console, load, perform, show_plan
from lxdgpu_reconcile.cli.locking import held
from lxdgpu_reconcile.errors import ToolError


def write(
    out_file: Path,
    planned: service.Planned,
    *,
    fleet_path: Path,
    digest: str,
    lab: Path | None,
) -> None:
    """Save ``planned`` (made from the fleet file with ``digest``) to ``out_file``, and say so.

    Refuses (``ToolError``) when the fleet file changed while the plan was being made, or when
    ``out_file`` cannot be written.
    """
    text = service.saved_plan(planned, fleet_path=fleet_path, digest=digest, lab=lab)
    try:
        files.write_atomic(out_file, text)
    except OSError as exc:
        raise ToolError(
            f"cannot write {out_file}: {exc.strerror or exc}", "choose another --out path"
        ) from None
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
    opened = service.open_saved(plan_file, fleet=fleet, lab=lab)
    loaded = load(opened.fleet_path, opened.lab)
    with held(lock_file, lock_wait, "apply", required=False):
        service.check_saved(opened, loaded, timeout=min(timeout, 30.0))
        show_plan(opened.saved.plan, if_errors="the plan has errors; fix them and plan again.")
        perform(opened.saved.plan, loaded, timeout=timeout)
