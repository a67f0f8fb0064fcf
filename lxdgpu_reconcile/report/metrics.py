"""A reconcile run as a Prometheus text file for node_exporter's textfile collector. Pure.

The file is rewritten after every run that got the lock (the command writes it atomically:
temporary file, then rename). ``last_success`` carries over from the previous file when this run
did not succeed, so that an alert on its age fires when runs keep failing.

=================================================  =====  ==========================================
metric                                             type   meaning
=================================================  =====  ==========================================
``lxdgpu_reconcile_drift{host}``                   gauge  objects changed outside the tool, found by
                                                          the last run (edited by hand, stopped or
                                                          started by hand)
``lxdgpu_reconcile_pending_actions{host}``         gauge  changes held back after the last run
``lxdgpu_reconcile_errors{host}``                  gauge  plan errors and failed actions in the last
                                                          run
``lxdgpu_reconcile_applied_actions{host}``         gauge  actions the last run performed
``lxdgpu_reconcile_last_run_timestamp_seconds``    gauge  when the last run ended (Unix time)
``lxdgpu_reconcile_last_run_exit_code``            gauge  its exit code (0, 1, 2, 3)
``lxdgpu_reconcile_last_success_timestamp_seconds`` gauge when a run last ended without errors
=================================================  =====  ==========================================
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from lxdgpu_reconcile.reconcile.outcome import Run

PREFIX = "lxdgpu_reconcile_"
_LAST_SUCCESS = PREFIX + "last_success_timestamp_seconds"

_PER_HOST = (
    ("drift", "drift", "Objects changed outside lxdgpu-reconcile, found by the last run."),
    (
        "pending_actions",
        "pending",
        "Changes held back (policy, pause, protection) after the last run.",
    ),
    ("errors", "errors", "Plan errors and failed actions in the last run."),
    ("applied_actions", "applied", "Actions the last run performed."),
)


def render(run: Run, *, last_success: float | None) -> str:
    """The text file after ``run``; ``last_success`` is the previous file's value, if any."""
    return "".join(line + "\n" for line in _lines(run, last_success))


def _lines(run: Run, last_success: float | None) -> Iterator[str]:
    hosts = run.hosts
    for name, field, text in _PER_HOST:
        yield f"# HELP {PREFIX}{name} {text}"
        yield f"# TYPE {PREFIX}{name} gauge"
        for host, counts in hosts.items():
            yield f'{PREFIX}{name}{{host="{_label(host)}"}} {getattr(counts, field)}'
    finished = run.finished.timestamp()
    yield from _gauge("last_run_timestamp_seconds", "When the last run ended.", _number(finished))
    yield from _gauge("last_run_exit_code", "Exit code of the last run.", str(run.exit_code))
    success = finished if run.succeeded else last_success
    if success is not None:
        yield from _gauge(
            "last_success_timestamp_seconds",
            "When a run last ended without errors.",
            _number(success),
        )


def _gauge(name: str, text: str, value: str) -> Iterator[str]:
    yield f"# HELP {PREFIX}{name} {text}"
    yield f"# TYPE {PREFIX}{name} gauge"
    yield f"{PREFIX}{name} {value}"


def _number(value: float) -> str:
    return f"{value:.3f}"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def last_success(text: str) -> float | None:
    """The ``last_success_timestamp_seconds`` value in a previous file's ``text``, if any."""
    match = re.search(rf"^{_LAST_SUCCESS} (\S+)$", text, re.MULTILINE)
    if match is None:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None
