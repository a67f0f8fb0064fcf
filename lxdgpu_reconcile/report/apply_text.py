"""An apply as text: a progress line per action while it runs, then the outcome of every action.

Pure, apart from ``progress_printer``, which returns a callback that prints on the console it is
given (the CLI hands it standard error).
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.text import Text

from lxdgpu_reconcile.execute.results import ActionResult, ApplyReport, Event, Outcome
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import ObjectKind
from lxdgpu_reconcile.report import plan_text

#: Object kinds of the host layer: described as the plan describes them.
_HOST_LAYER = (ObjectKind.ACCOUNT, ObjectKind.HOME, ObjectKind.DELEGATION)

#: The mark and style of each outcome, in progress lines and summaries.
MARKS = {
    Outcome.DONE: ("✓", "green"),
    Outcome.FAILED: ("✗", "bold red"),
    Outcome.SKIPPED: ("-", "yellow"),
    Outcome.PENDING: ("…", "yellow"),
}


def describe(action: plans.Action) -> str:
    """``update instance tom-container``; ``update (restart) ...`` for restarts."""
    verb = action.kind.value
    if action.restart and action.kind is plans.ActionKind.UPDATE:
        verb = "update (restart)"
    if action.object.kind in _HOST_LAYER:
        return f"{verb} {plan_text.object_words(action)}"
    return f"{verb} {action.object.kind.value} {action.object.name}"


def progress_printer(console: Console) -> Callable[[Event], None]:
    """A progress callback: one line when an action starts and one when it ends."""

    def show(event: Event) -> None:
        if event.line is not None:
            console.print(
                Text.assemble((f"{event.action.host}: ", "bold"), (event.line, "dim")),
                soft_wrap=True,
            )
        elif event.result is None:
            console.print(
                Text.assemble((f"{event.action.host}: ", "bold"), describe(event.action), " ..."),
                soft_wrap=True,
            )
        elif event.result.outcome is not Outcome.PENDING:
            console.print(result_line(event.action, event.result), soft_wrap=True)

    return show


def result_line(action: plans.Action, result: ActionResult) -> Text:
    mark, style = MARKS[result.outcome]
    line = Text.assemble(
        (f"{mark} ", style), (f"{action.host}: ", "bold"), describe(action), f" {result.outcome}"
    )
    if result.outcome is Outcome.DONE:
        line.append(f" ({result.message}, {result.seconds:.1f}s)", style="dim")
    elif result.message:
        line.append(f": {result.message}")
    if result.hint:
        line.append(f"\n    what to do: {result.hint}")
    return line


def lines(plan: plans.Plan, report: ApplyReport) -> list[Text]:
    """The closing report: failures and skips with their reasons, then the counts."""
    actions = {action.id: action for action in plan.actions}
    out: list[Text] = []
    for result in report.results:
        if result.outcome in (Outcome.FAILED, Outcome.SKIPPED):
            out.append(result_line(actions[result.id], result))
    counts = ", ".join(f"{report.count(o)} {o.value}" for o in Outcome)
    verdict = "Apply complete" if report.ok else "Apply finished with errors"
    out.append(Text(f"{verdict}: {counts}.", style="bold" if report.ok else "bold red"))
    if not report.ok:
        out.append(Text("Fix what is reported above and run apply again: it picks up from here."))
    elif report.count(Outcome.PENDING):
        out.append(Text("Pending changes are held back; the plan says what releases them."))
    return out
