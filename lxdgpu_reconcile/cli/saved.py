"""Saved plans on the command line: ``plan --out FILE`` writes one, ``apply FILE`` applies it.

``apply FILE`` applies exactly the saved plan and nothing else, without asking (it was reviewed
when it was made), after checking every precondition (``service.open_saved`` and
``service.check_saved``): the fleet file is byte for byte the one the plan was made from, the
tool is the same version, and every object the plan writes is still as it was (absent for a
create). It then plans again from that fleet file with the saved plan's options and applies the
plan made now, only when it equals the saved one action for action and body for body: the
file's own bodies are never sent. Any difference is reported and nothing is written. See
docs/gitops.md. Prints, and writes the plan file; other I/O goes through ``service``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from lxdgpu_reconcile import fileio as files
from lxdgpu_reconcile.cli.common import DEFAULT_PARALLEL, err_console, load, perform, show_plan
from lxdgpu_reconcile.cli.locking import held
from lxdgpu_reconcile.errors import ToolError

if TYPE_CHECKING:
    from lxdgpu_reconcile import service


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
    from lxdgpu_reconcile import service

    text = service.saved_plan(planned, fleet_path=fleet_path, digest=digest, lab=lab)
    try:
        files.write_atomic(out_file, text)
    except files.FileWriteError as exc:
        raise ToolError(
            f"cannot write {out_file}: {exc.reason}; no plan was saved",
            "free space there or choose another --out path",
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
    parallel: int = DEFAULT_PARALLEL,
    local: bool = False,
    credentials: Path | None = None,
) -> NoReturn:
    """``apply PLANFILE``: check, plan again and compare, then apply the plan made now (equal
    to the saved one) with the saved plan's options; exits. ``local``: ``--local``, as the
    plan was made with it (the plan made now differs otherwise)."""
    from lxdgpu_reconcile import service

    opened = service.open_saved(plan_file, fleet=fleet, lab=lab)
    loaded = load(opened.fleet_path, opened.lab, local=local)
    with held(lock_file, lock_wait, "apply", required=False):
        planned = service.check_saved(opened, loaded, timeout=min(timeout, 30.0))
        show_plan(planned.plan, if_errors="the plan has errors; fix them and plan again.")
        request = service.saved_request(opened.saved)
        perform(
            planned.plan,
            loaded,
            timeout=timeout,
            request=request,
            parallel=parallel,
            credentials=credentials,
        )
