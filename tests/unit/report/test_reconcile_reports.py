"""A reconcile run as log lines, Prometheus metrics and a terminal summary. Pure: runs are built
in memory."""

from __future__ import annotations

import datetime
import json
from typing import Any

from lxdgpu_reconcile.execute.results import ActionResult, ApplyReport, Outcome
from lxdgpu_reconcile.fleet.models import ReconcilePolicy
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.reconcile import policy
from lxdgpu_reconcile.reconcile.outcome import Result, Run, result_of
from lxdgpu_reconcile.report import metrics, reconcile_log, reconcile_text
from tests.unit.planning import support

START = datetime.datetime(2026, 3, 1, 2, 15, tzinfo=datetime.UTC)
END = START + datetime.timedelta(seconds=4.5)

SCENARIO: dict[str, Any] = {
    "fleet": {
        "hosts": {"h2": {"endpoint": "unix:///var/lib/lxd2/unix.socket"}},
        "users": {
            "tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003},
            "amy": {"host": "h1", "template": "desk", "uid": 1004, "gid": 1004},
            "bob": {"host": "h2", "template": "desk", "uid": 1005, "gid": 1005},
        },
    },
    "observed": {
        "h1": {
            "instances": {
                "tom-container": {
                    "as_desired": True,
                    "status": "Running",
                    "config": {"limits.cpu": "3", "raw.idmap": "uid 1 1000\ngid 1 1000"},
                },
                "amy-container": {"as_desired": True, "status": "Stopped"},
            }
        },
        "h2": {"instances": {"bob-container": {"as_desired": True, "status": "Running"}}},
    },
}


def _run(*, failed: bool = False) -> Run:
    fleet = support.fleet_from(SCENARIO["fleet"])
    site = support.site_from(None)
    snapshot = support.snapshot_from(SCENARIO["observed"], fleet, site)
    decision = policy.decide(ReconcilePolicy(), datetime.time(2, 15))
    made = policy.govern(planner.make_plan(fleet, snapshot, site), decision)
    results = []
    for action in made.actions:
        if action.pending is not None:
            results.append(
                ActionResult(id=action.id, host=action.host, outcome=Outcome.PENDING, message="x")
            )
        elif failed and action.kind is planning.ActionKind.START:
            results.append(
                ActionResult(
                    id=action.id,
                    host=action.host,
                    outcome=Outcome.FAILED,
                    message="cannot start amy-container",
                    hint="look at lxc info --show-log",
                )
            )
        else:
            results.append(
                ActionResult(
                    id=action.id, host=action.host, outcome=Outcome.DONE, message="ok", seconds=0.2
                )
            )
    report = ApplyReport(results=tuple(results))
    return Run(
        id="r1",
        started=START,
        finished=END,
        fleet="fleet.yaml",
        fleet_sha256="ab" * 32,
        lab=None,
        version="1.0",
        result=result_of(made, report),
        decision=decision,
        plan=made,
        report=report,
    )


def test_metrics_text() -> None:
    text = metrics.render(_run(), last_success=None)
    end = f"{END.timestamp():.3f}"
    assert text == "\n".join(
        [
            "# HELP lxdgpu_reconcile_drift Objects changed outside lxdgpu-reconcile, found by "
            "the last run.",
            "# TYPE lxdgpu_reconcile_drift gauge",
            'lxdgpu_reconcile_drift{host="h1"} 2',
            'lxdgpu_reconcile_drift{host="h2"} 0',
            "# HELP lxdgpu_reconcile_pending_actions Changes held back (policy, pause, "
            "protection) after the last run.",
            "# TYPE lxdgpu_reconcile_pending_actions gauge",
            'lxdgpu_reconcile_pending_actions{host="h1"} 1',
            'lxdgpu_reconcile_pending_actions{host="h2"} 0',
            "# HELP lxdgpu_reconcile_errors Plan errors and failed actions in the last run.",
            "# TYPE lxdgpu_reconcile_errors gauge",
            'lxdgpu_reconcile_errors{host="h1"} 0',
            'lxdgpu_reconcile_errors{host="h2"} 0',
            "# HELP lxdgpu_reconcile_applied_actions Actions the last run performed.",
            "# TYPE lxdgpu_reconcile_applied_actions gauge",
            'lxdgpu_reconcile_applied_actions{host="h1"} 2',
            'lxdgpu_reconcile_applied_actions{host="h2"} 0',
            "# HELP lxdgpu_reconcile_last_run_timestamp_seconds When the last run ended.",
            "# TYPE lxdgpu_reconcile_last_run_timestamp_seconds gauge",
            f"lxdgpu_reconcile_last_run_timestamp_seconds {end}",
            "# HELP lxdgpu_reconcile_last_run_exit_code Exit code of the last run.",
            "# TYPE lxdgpu_reconcile_last_run_exit_code gauge",
            "lxdgpu_reconcile_last_run_exit_code 3",
            "# HELP lxdgpu_reconcile_last_success_timestamp_seconds When a run last ended "
            "without errors.",
            "# TYPE lxdgpu_reconcile_last_success_timestamp_seconds gauge",
            f"lxdgpu_reconcile_last_success_timestamp_seconds {end}",
            "",
        ]
    )


def test_a_failed_run_keeps_the_last_success_of_the_previous_file() -> None:
    previous = metrics.render(_run(), last_success=None)
    before = metrics.last_success(previous)
    assert before == round(END.timestamp(), 3)
    failed = _run(failed=True).model_copy(update={"finished": END + datetime.timedelta(hours=1)})
    text = metrics.render(failed, last_success=before)
    assert metrics.last_success(text) == before
    assert "lxdgpu_reconcile_last_run_exit_code 1" in text
    assert 'lxdgpu_reconcile_errors{host="h1"} 1' in text
    locked = Run(
        id="r2",
        started=START,
        finished=END,
        fleet="f",
        version="1",
        result=Result.LOCKED,
        message="held",
    )
    assert metrics.last_success(metrics.render(locked, last_success=None)) is None


def test_log_lines_one_per_action_then_the_run_with_stable_keys() -> None:
    lines = [json.loads(line) for line in reconcile_log.render(_run()).splitlines()]
    *actions, run = lines
    assert [a["event"] for a in actions] == ["action"] * len(actions)
    assert set(actions[0]) == {
        "log_format",
        "event",
        "ts",
        "run",
        "host",
        "id",
        "kind",
        "object",
        "restart",
        "cause",
        "fields",
        "outcome",
        "hold",
        "pending",
        "message",
        "hint",
        "seconds",
    }
    by_id = {a["id"]: a for a in actions}
    tom = by_id["h1/instance/tom-container/update"]
    assert (tom["cause"], tom["outcome"], tom["fields"]) == ("drift", "done", ["config.limits.cpu"])
    held = by_id["h1/instance/tom-container/restart-update"]
    assert (held["outcome"], held["hold"], held["message"]) == ("pending", "restart", "")
    assert held["pending"].startswith("needs a restart: reconcile.allow_restarts is never")
    assert by_id["h1/instance/amy-container/start"]["cause"] == "power"
    assert set(run) == {
        "log_format",
        "event",
        "ts",
        "run",
        "started",
        "seconds",
        "result",
        "exit_code",
        "fleet",
        "fleet_sha256",
        "lab",
        "version",
        "policy",
        "actions",
        "hosts",
        "errors",
        "message",
    }
    assert (run["result"], run["exit_code"], run["seconds"]) == ("pending", 3, 4.5)
    assert run["policy"] == {
        "restarts": "never",
        "allow_restart": False,
        "allow_deletes": False,
        "allow_template_builds": False,
    }
    assert run["actions"] == {"done": 2, "pending": 3}
    assert run["hosts"]["h1"] == {"drift": 2, "pending": 1, "errors": 0, "applied": 2}
    assert "uid 1 1000" not in reconcile_log.render(_run())  # no values, only field names


def test_terminal_summary() -> None:
    text = [line.plain for line in reconcile_text.lines(_run())]
    assert text[0] == (
        "reconcile fleet.yaml at 02:15: restarts never; deletes not allowed; template builds "
        "not allowed"
    )
    assert "h1:" in text
    assert "  ✓ update instance tom-container (drift)" in text
    assert any(
        line.startswith("  … update (restart) instance tom-container (drift): needs")
        for line in text
    )
    assert "h2: matches the fleet file" in text
    assert text[-1] == (
        "Pending: some changes are held back (see above) (2 applied, 1 pending, 0 errors; exit 3)."
    )
    failed = [line.plain for line in reconcile_text.lines(_run(failed=True))]
    assert (
        "  ✗ start instance amy-container (power): failed: cannot start amy-container"
        in "\n".join(failed)
    )
    assert "what to do: look at lxc info --show-log" in "\n".join(failed)
