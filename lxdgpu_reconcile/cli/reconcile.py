"""``reconcile``: what a cron line or a systemd timer runs to keep the hosts as the fleet file says.

One run: take the lock (wait at most ``--lock-wait``), load the fleet file, read the clock and
evaluate the fleet's ``reconcile:`` policy (``reconcile.policy``), observe every host, plan,
apply the part the policy allows, and report: a summary on the terminal, JSON lines in
``--log-file``, a Prometheus text file in ``--metrics-file``, the observation it planned from in
``--snapshot-out`` (for ``plan --state``). The exit status says how it went
(``reconcile.outcome``): 0 converged, 2 changed, 3 pending changes remain, 1 errors, 4 lock not
acquired. See docs/reconcile.md.
"""

from __future__ import annotations

import datetime
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated

import typer

from lxdgpu_reconcile import __version__
from lxdgpu_reconcile import fileio as files
from lxdgpu_reconcile.cli.app import app, report_error
from lxdgpu_reconcile.cli.common import FleetOpt, LabOpt, LocalOpt, err_console, load, out
from lxdgpu_reconcile.cli.locking import LockFileOpt, LockWaitOpt
from lxdgpu_reconcile.cli.passwords import CredentialsDirOpt
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.reconcile import lock as locks

if TYPE_CHECKING:
    from lxdgpu_reconcile.reconcile.outcome import Run
    from lxdgpu_reconcile.state import FleetSnapshot


def __getattr__(name: str) -> ModuleType:
    """``cycles`` (``reconcile.cycle``), imported on first use: it brings the executor and LXD's
    client, which the other commands and ``--help`` do not need."""
    if name == "cycles":
        from lxdgpu_reconcile.reconcile import cycle

        return cycle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: ``--snapshot-out``: where the run writes the observation it planned from.
SnapshotOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--snapshot-out",
        help="Also write the observation this run planned from as a snapshot file, for "
        "`plan --state FILE` (docs/performance.md).",
        show_default=False,
    ),
]


@app.command()
def reconcile(
    fleet: FleetOpt = "fleet.yaml",  # type: ignore[assignment]
    lab: LabOpt = None,
    lock_file: LockFileOpt = None,
    lock_wait: LockWaitOpt = 60.0,
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log-file",
            envvar="LXDGPU_LOG_FILE",
            help="Append one JSON line per action and one per run to this file.",
            show_default=False,
        ),
    ] = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            "--metrics-file",
            help="Write Prometheus metrics here (node_exporter textfile collector, *.prom).",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Print nothing unless something went wrong (for cron mail)."
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds each host gets to answer, and each LXD operation to end.", min=1
        ),
    ] = 120.0,
    snapshot_out: SnapshotOutOpt = None,
    local: LocalOpt = False,
    credentials_dir: CredentialsDirOpt = None,
) -> None:
    """Observe, plan and apply what the fleet's reconcile policy allows; for cron and timers.

    Creates, in-place updates and starts are applied; paused users and hosts are left alone.

    Restarts, deletes and template builds stay pending unless the reconcile: policy allows them.

    Exit status: 0 converged, 2 changed, 3 changes pending, 1 errors, 4 lock held by another run.

    Example: [bold]lxdgpu-reconcile reconcile -f /srv/fleet/fleet.yaml --quiet[/bold]
    """
    from lxdgpu_reconcile.reconcile.outcome import Result, Run

    started = datetime.datetime.now(datetime.UTC)
    run_id = uuid.uuid4().hex[:12]
    base = {"id": run_id, "started": started, "fleet": str(fleet), "version": __version__}
    base["lab"] = str(lab.resolve()) if lab is not None else None
    path = lock_file or locks.DEFAULT_LOCK_FILE
    observed: list[str] = []  # the snapshot file's text, once the hosts were observed
    keep = observed.append if snapshot_out is not None else None
    try:
        with locks.exclusive(path, wait=lock_wait, command="reconcile"):
            try:
                run = _run(
                    base,
                    fleet,
                    lab,
                    timeout=timeout,
                    show_progress=not quiet,
                    keep=keep,
                    local=local,
                    credentials=credentials_dir,
                )
            except Exception as exc:  # any failure still leaves its log line and metrics
                run = _failed_run(base, exc)
            snapshot = (
                (snapshot_out, observed[0]) if snapshot_out is not None and observed else None
            )
            _finish(
                run, log_file=log_file, metrics_file=metrics_file, quiet=quiet, snapshot=snapshot
            )
    except locks.LockError as exc:
        locked = isinstance(exc, locks.LockTimeout)
        run = Run.model_validate(
            {
                **base,
                "finished": datetime.datetime.now(datetime.UTC),
                "result": Result.LOCKED if locked else Result.ERRORS,
                "message": f"{exc.message}\n  what to do: {exc.hint}",
            }
        )
        _finish(run, log_file=log_file, metrics_file=None, quiet=quiet)
    raise typer.Exit(run.exit_code)


def _run(
    base: dict[str, object],
    fleet_path: Path,
    lab: Path | None,
    *,
    timeout: float,
    show_progress: bool,
    keep: Callable[[str], None] | None = None,
    local: bool = False,
    credentials: Path | None = None,
) -> Run:
    """One run while the lock is held. Never raises for a domain problem: the run records it.

    ``keep`` is given the text of a snapshot file of the observation the run planned from, made
    as soon as the plan is (before anything is applied)."""
    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.reconcile import cycle as cycles
    from lxdgpu_reconcile.reconcile import policy as policies
    from lxdgpu_reconcile.reconcile.outcome import Result, Run, result_of
    from lxdgpu_reconcile.report import apply_text

    def stopped(message: str, **more: object) -> Run:
        return Run.model_validate(
            {
                **base,
                **more,
                "finished": datetime.datetime.now(datetime.UTC),
                "result": Result.ERRORS,
                "message": message,
            }
        )

    try:
        digest = service.fleet_digest(fleet_path)
    except ToolError as exc:
        return stopped(f"{exc.message}\n  what to do: {exc.hint}")
    try:
        loaded = load(fleet_path, lab, local=local)
        loaded.template_files  # noqa: B018  (read now: a missing file stops the run here)
    except ToolError as exc:
        report_error(exc)
        return stopped(
            "the fleet file cannot be used (the problems are above); nothing was done",
            fleet_sha256=digest,
        )
    decision = policies.decide(loaded.fleet.reconcile, datetime.datetime.now().astimezone().time())
    progress = apply_text.progress_printer(err_console)

    def observed(snapshot: FleetSnapshot) -> None:
        if keep is not None:
            keep(service.snapshot_text(snapshot))

    cycle = cycles.run_cycle(
        loaded,
        decision,
        timeout=timeout,
        progress=progress if show_progress and sys.stderr.isatty() else None,
        observed=observed if keep is not None else None,
        credentials=credentials,
    )
    return Run.model_validate(
        {
            **base,
            "finished": datetime.datetime.now(datetime.UTC),
            "fleet_sha256": digest,
            "result": result_of(cycle.plan, cycle.report),
            "decision": decision,
            "plan": cycle.plan,
            "report": cycle.report,
        }
    )


def _failed_run(base: dict[str, object], exc: Exception) -> Run:
    """The record of a run that stopped on an error that is not the admin's to fix."""
    from lxdgpu_reconcile.reconcile.outcome import Result, Run

    return Run.model_validate(
        {
            **base,
            "finished": datetime.datetime.now(datetime.UTC),
            "result": Result.ERRORS,
            "message": f"the run stopped on an unexpected error ({type(exc).__name__}: {exc}); "
            "what it had applied stays applied, the rest was not done\n  what to do: run "
            "`lxdgpu-reconcile plan` to see where things stand, and report this error as a bug",
        }
    )


def _previous_metrics(metrics_file: Path) -> str:
    """The text of the metrics file before this run (empty when there is none). One that is
    not UTF-8 text counts as none, with a note: it is rewritten now."""
    if not metrics_file.exists():
        return ""
    try:
        return metrics_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        err_console.print(
            f"note: the old metrics file {metrics_file} is not UTF-8 text: its last success time "
            "was not carried over; the file is written anew",
            markup=False,
            soft_wrap=True,
        )
        return ""


def _finish(
    run: Run,
    *,
    log_file: Path | None,
    metrics_file: Path | None,
    quiet: bool,
    snapshot: tuple[Path, str] | None = None,
) -> None:
    """Report ``run``: log lines, metrics, the snapshot file (``snapshot``: its path and text),
    then the summary (on standard error when quiet and something went wrong, on standard output
    otherwise)."""
    from lxdgpu_reconcile.report import metrics, reconcile_log, reconcile_text

    problems = []
    if log_file is not None:
        try:
            files.append_text(log_file, reconcile_log.render(run))
        except files.FileWriteError as exc:
            problems.append(f"cannot append to the log file {log_file}: {exc.reason}")
    if metrics_file is not None:
        try:
            previous = _previous_metrics(metrics_file)
            text = metrics.render(run, last_success=metrics.last_success(previous))
            files.write_atomic(metrics_file, text)
        except files.FileWriteError as exc:
            problems.append(f"cannot write the metrics file {metrics_file}: {exc.reason}")
        except OSError as exc:
            problems.append(f"cannot write the metrics file {metrics_file}: {exc.strerror or exc}")
    if snapshot is not None:
        try:
            files.write_atomic(*snapshot)
        except files.FileWriteError as exc:
            problems.append(f"cannot write the snapshot file {snapshot[0]}: {exc.reason}")
    if not quiet:
        for line in reconcile_text.lines(run):
            out.print(line)
    elif not run.succeeded:
        for line in reconcile_text.lines(run):
            err_console.print(line)
    for problem in problems:
        err_console.print(
            f"{problem}\n  what to do: free space on its file system (`df -h`), or check the "
            "path and its permissions",
            markup=False,
            soft_wrap=True,
        )
    if problems and run.succeeded:
        raise typer.Exit(1)
