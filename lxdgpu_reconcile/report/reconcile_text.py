"""A reconcile run as a short human summary for a terminal (or a cron mail). Pure: rich ``Text``.

One line on what the policy allowed, then per host one line per change that is not a step of
another (applied, failed, skipped or held back, with the reason), then the result and the exit
code. Hosts that match the fleet file get one line saying so.
"""

from __future__ import annotations

from rich.text import Text

from lxdgpu_reconcile.execute.results import ActionResult, Outcome
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.reconcile.outcome import Result, Run
from lxdgpu_reconcile.report import apply_text

_VERDICTS = {
    Result.CONVERGED: "Converged: every host matches the fleet file",
    Result.CHANGED: "Changed: every change was applied",
    Result.PENDING: "Pending: some changes are held back (see above)",
    Result.ERRORS: "Errors: see above; the next run picks up from here",
    Result.LOCKED: "Not run: another run holds the lock",
}


def lines(run: Run) -> list[Text]:
    out: list[Text] = []
    decision = run.decision
    if decision is not None:
        out.append(
            Text(
                f"reconcile {run.fleet} at {decision.at}: restarts {decision.restarts}; deletes "
                f"{'allowed' if decision.prune else 'not allowed'}; template builds "
                f"{'allowed' if decision.allow_template_builds else 'not allowed'}",
                style="dim",
            )
        )
    if run.message:
        out.append(Text(run.message))
    if run.plan is not None:
        results = {r.id: r for r in (run.report.results if run.report else ())}
        for error in run.plan.errors:
            out.append(Text.assemble(("Error: ", "bold red"), error.message))
        for host in run.plan.hosts:
            out.extend(_host(host, results))
    counts = f"{_counts(run)}; " if run.plan is not None else ""
    verdict = _VERDICTS[run.result]
    if run.plan is None and run.result is Result.ERRORS:
        verdict = "Errors: nothing was done (see above)"
    out.append(
        Text(
            f"{verdict} ({counts}exit {run.exit_code}).",
            style="bold" if run.succeeded else "bold red",
        )
    )
    return out


def _host(host: plans.HostPlan, results: dict[str, ActionResult]) -> list[Text]:
    out = []
    for error in host.errors:
        out.append(Text.assemble(("Error: ", "bold red"), f"{error.message} [{error.code.value}]"))
        out.extend(Text(f"  - {fix}") for fix in error.fixes)
    main = [a for a in host.actions if a.part_of is None]
    if not main and not host.errors:
        return [Text.assemble((f"{host.host}: ", "bold"), "matches the fleet file")]
    out.insert(0, Text(f"{host.host}:", style="bold"))
    for action in host.actions:
        result = results.get(action.id)
        if action.part_of is not None and (
            result is None or result.outcome in (Outcome.DONE, Outcome.PENDING)
        ):
            continue  # the steps of a change show only when they went wrong
        out.append(_entry(action, result))
    return out


def _entry(action: plans.Action, result: ActionResult | None) -> Text:
    outcome = result.outcome if result is not None else Outcome.PENDING
    mark, style = apply_text.MARKS[outcome]
    line = Text.assemble("  ", (f"{mark} ", style), apply_text.describe(action))
    if action.cause is not None:
        line.append(f" ({action.cause.value})", style="dim")
    if outcome is Outcome.PENDING:
        line.append(f": {action.pending or 'not run'}")
    elif result is not None and outcome is not Outcome.DONE:
        line.append(f": {outcome.value}: {result.message}")
        if result.hint:
            line.append(f"\n      what to do: {result.hint}")
    return line


def _counts(run: Run) -> str:
    hosts = run.hosts.values()
    applied = sum(h.applied for h in hosts)
    pending = sum(h.pending for h in hosts)
    errors = sum(h.errors for h in hosts) + (len(run.plan.errors) if run.plan else 0)
    return f"{applied} applied, {pending} pending, {errors} errors"
