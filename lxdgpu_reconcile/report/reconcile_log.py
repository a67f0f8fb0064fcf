"""A reconcile run as JSON lines for a log file: one line per action, then one for the run. Pure.

Every line is one JSON object with sorted keys and no newline inside, so ``jq``, Loki, journald
or Elasticsearch read it as it is. Keys are stable (``LOG_FORMAT`` 1: keys are only added; a
change of meaning bumps it). Lines never hold values of fields (config values could be anything
someone set by hand on a host): an action names the fields it changes, not their contents.

``{"event": "action", ...}``: ``log_format``, ``ts``, ``run``, ``host``, ``id``, ``kind``,
``object`` (``{"kind", "name"}``), ``restart``, ``cause``, ``fields`` (dotted paths),
``outcome`` (``done``, ``failed``, ``skipped``, ``pending``, ``not-run``), ``hold``, ``pending``,
``message``, ``hint``, ``seconds``.

``{"event": "run", ...}``: ``log_format``, ``ts``, ``run``, ``started``, ``seconds``, ``result``
(``converged``, ``changed``, ``pending``, ``errors``, ``locked``), ``exit_code``, ``fleet``,
``fleet_sha256``, ``lab``, ``version``, ``policy`` (``restarts``, ``allow_restart``,
``allow_deletes``, ``allow_template_builds``; null before planning), ``actions`` (counts by
outcome), ``hosts`` (per host: ``drift``, ``pending``, ``errors``, ``applied``), ``errors`` (plan
error messages), ``message``.
"""

from __future__ import annotations

import json
from typing import Any

from lxdgpu_reconcile.execute.results import ActionResult, Outcome
from lxdgpu_reconcile.reconcile.outcome import Run

LOG_FORMAT = 1


def records(run: Run) -> list[dict[str, Any]]:
    """The lines of ``run``: its actions in plan order, then the run itself."""
    ts = run.finished.isoformat(timespec="seconds")
    results: dict[str, ActionResult] = {}
    if run.report is not None:
        results = {r.id: r for r in run.report.results}
    lines: list[dict[str, Any]] = []
    outcomes: dict[str, int] = {}
    for action in run.plan.actions if run.plan is not None else ():
        result = results.get(action.id)
        outcome = (
            result.outcome.value
            if result is not None
            else ("pending" if action.pending is not None else "not-run")
        )
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        said = result is not None and result.outcome is not Outcome.PENDING
        lines.append(
            {
                "log_format": LOG_FORMAT,
                "event": "action",
                "ts": ts,
                "run": run.id,
                "host": action.host,
                "id": action.id,
                "kind": action.kind.value,
                "object": {"kind": action.object.kind.value, "name": action.object.name},
                "restart": action.restart,
                "cause": action.cause.value if action.cause else None,
                "fields": [c.dotted for c in action.changes],
                "outcome": outcome,
                "hold": action.hold.value if action.hold else None,
                "pending": action.pending,
                "message": result.message if said and result is not None else "",
                "hint": result.hint if said and result is not None else "",
                "seconds": result.seconds if said and result is not None else 0.0,
            }
        )
    decision = run.decision
    lines.append(
        {
            "log_format": LOG_FORMAT,
            "event": "run",
            "ts": ts,
            "run": run.id,
            "started": run.started.isoformat(timespec="seconds"),
            "seconds": round((run.finished - run.started).total_seconds(), 3),
            "result": run.result.value,
            "exit_code": run.exit_code,
            "fleet": run.fleet,
            "fleet_sha256": run.fleet_sha256,
            "lab": run.lab,
            "version": run.version,
            "policy": None
            if decision is None
            else {
                "restarts": decision.restarts,
                "allow_restart": decision.allow_restart,
                "allow_deletes": decision.prune,
                "allow_template_builds": decision.allow_template_builds,
            },
            "actions": dict(sorted(outcomes.items())),
            "hosts": {name: counts.model_dump() for name, counts in run.hosts.items()},
            "errors": [e.message for e in run.plan.all_errors] if run.plan is not None else [],
            "message": run.message,
        }
    )
    return lines


def render(run: Run) -> str:
    """The lines of ``run`` as text, each ending with a newline."""
    return "".join(
        json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
        for record in records(run)
    )
