"""A plan as Markdown for a pull-request or merge-request comment. Pure: returns text.

Layout (GitHub and GitLab render both the Markdown and the ``<details>`` blocks):

1. a hidden marker (``MARKER``) a CI job can find to update its own comment, a heading and the
   summary line (``Plan: N to create, ...``);
2. a table, one row per host: create, update, restart, delete, pending, errors;
3. what a reviewer must not miss, called out before any detail: errors (with what to do),
   restarts of running containers, deletes, and everything pending (held back) with the reason;
   then the plan's notes;
4. per host with changes, a collapsed ``<details>`` section holding a ``diff`` block with each
   change, its reason and its fields (``+`` create or added, ``-`` delete or removed, ``!`` update
   in place, ``-/+`` stop -> update -> start).

Every text that comes from the fleet file or the hosts (names, values, messages) is escaped for
Markdown outside code blocks and for HTML inside ``<summary>``; code blocks use a fence longer than
any run of backticks they hold. Comments have a size limit (65536 characters on GitHub): past
``limit`` characters the last host sections are left out, and a line says so. Values of
secret-looking keys are masked (``planning.sensitive``), as in the plan text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Iterator

from lxdgpu_reconcile.planning import diff, sensitive
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.report import plan_text

#: First line of every rendered plan; CI jobs look for it to edit their earlier comment.
MARKER = "<!-- lxdgpu-reconcile plan -->"
#: Default size limit of the whole comment, below GitHub's 65536 characters.
LIMIT = 60_000

_SYMBOLS = {
    plans.ActionKind.CREATE: "+",
    plans.ActionKind.UPDATE: "!",
    plans.ActionKind.START: "!",
    plans.ActionKind.STOP: "!",
    plans.ActionKind.DELETE: "-",
    plans.ActionKind.ALIAS: "!",
    plans.ActionKind.MOVE: "~>",
    plans.ActionKind.RENAME: "~>",
}
#: Table columns: heading, ``Summary`` field. Template images only when the plan has some.
_COLUMNS = tuple(
    (name, name) for name in ("create", "update", "restart", "delete", "pending", "errors")
)
_IMAGE_COLUMNS = (("build", "builds"), ("copy", "copies"))
_IMAGE_KINDS = frozenset({"build", "copy"})
#: Characters that can start formatting, a link, a table cell, a mention, an issue reference or
#: math inside a line of Markdown; escaped with a backslash. ``<``, ``>`` and ``&`` become entities.
_PUNCTUATION = re.compile(r"([\\`*_\[\]|~#@$])")


def render(p: plans.Plan, *, title: str = "lxdgpu-reconcile plan", limit: int = LIMIT) -> str:
    """``p`` as a Markdown comment, at most about ``limit`` characters; secrets masked."""
    p = sensitive.mask_plan(p)
    head = "\n".join([*_head(p, title), ""])
    sections = [_host_section(host) for host in p.hosts if host.actions]
    kept: list[str] = []
    size = len(head)
    for i, section in enumerate(sections):
        if size + len(section) + 200 > limit:
            left = len(sections) - i
            kept.append(
                f"_The details of {left} more host{'s' if left != 1 else ''} are left out to "
                "keep this comment short: see the plan in the job log._\n"
            )
            break
        kept.append(section)
        size += len(section)
    return head + "\n".join(kept)


def escape(text: str) -> str:
    """``text`` shown literally in Markdown (one line: newlines become spaces)."""
    one_line = " ".join(text.splitlines())
    return html.escape(_PUNCTUATION.sub(r"\\\1", one_line), quote=False)


# --- the top: summary, table, call-outs ----------------------------------------------------------


def _head(p: plans.Plan, title: str) -> Iterator[str]:
    yield MARKER
    yield f"### {escape(title)}"
    yield ""
    if not p.actions and not p.all_errors:
        yield "No changes: the hosts match the fleet file."
        yield ""
    line = f"**{plan_text.summary_line(p.summary)}**"
    if p.all_errors:
        n = p.summary.errors
        line += f" {n} error{'s' if n != 1 else ''}: hosts with errors are not applied."
    yield line
    yield ""
    if p.hosts:
        yield from _table(p)
        yield ""
    yield from _callouts(p)


def _table(p: plans.Plan) -> Iterator[str]:
    images = any(a.kind.value in _IMAGE_KINDS for a in p.actions)
    columns = (*_IMAGE_COLUMNS, *_COLUMNS) if images else _COLUMNS
    yield "| host | " + " | ".join(name for name, _ in columns) + " |"
    yield "| --- |" + " ---: |" * len(columns)
    for host in p.hosts:
        counts = plans.summarise(plans.Plan(hosts=(host,)))
        cells = " | ".join(str(getattr(counts, field)) for _, field in columns)
        name = escape(host.host) + ("" if host.applyable else " (not applied)")
        yield f"| {name} | {cells} |"


def _callouts(p: plans.Plan) -> Iterator[str]:
    if p.all_errors:
        yield "**Errors** (hosts with errors are not applied):"
        yield ""
        for error in p.all_errors:
            where = f"**{escape(error.host)}**: " if error.host else ""
            yield f"- {where}{escape(error.message)} ({escape(error.code.value)})"
            for fix in error.fixes:
                yield f"  - {escape(fix)}"
        yield ""
    main = [a for a in p.actions if a.part_of is None]
    restarts = [a for a in main if a.kind is plans.ActionKind.UPDATE and a.restart]
    if restarts:
        yield "**Restarts** (running containers are stopped, updated and started again):"
        yield ""
        for action in restarts:
            fields = ", ".join(c.dotted for c in action.changes if c.at_start)
            yield f"- {_where(action)}: {escape(fields)}{_pending_mark(action)}"
        yield ""
    moves = [a for a in main if a.kind in (plans.ActionKind.MOVE, plans.ActionKind.RENAME)]
    if moves:
        yield "**Moves** (stopped, copied or renamed, started again; the home does not move):"
        yield ""
        for action in moves:
            where = escape(plan_text.move_from(action).strip())
            yield f"- {_where(action)}: {where}{_pending_mark(action)}"
        yield ""
    deletes = [a for a in main if a.kind is plans.ActionKind.DELETE]
    if deletes:
        yield "**Deletes**:"
        yield ""
        for action in deletes:
            yield f"- {_where(action)}: {escape(action.reason)}{_pending_mark(action)}"
        yield ""
    pending = [a for a in main if a.pending is not None]
    if pending:
        yield "**Pending** (shown, not applied):"
        yield ""
        for action in pending:
            yield f"- {_where(action)} ({_verb(action)}): {escape(action.pending or '')}"
        yield ""
    if p.notes:
        yield "**Notes**:"
        yield ""
        for note in p.notes:
            yield f"- {escape(note)}"
        yield ""


def _where(action: plans.Action) -> str:
    return f"**{escape(action.host)}** {action.object.kind.value} **{escape(action.object.name)}**"


def _pending_mark(action: plans.Action) -> str:
    return " _(pending)_" if action.pending is not None else ""


def _verb(action: plans.Action) -> str:
    if action.kind is plans.ActionKind.UPDATE and action.restart:
        return "restart"
    return action.kind.value


# --- per host -------------------------------------------------------------------------------------


def _host_section(host: plans.HostPlan) -> str:
    counts = plans.summarise(plans.Plan(hosts=(host,)))
    status = "" if host.applyable else " (not applied: it has errors)"
    summary = plan_text.summary_line(counts).removeprefix("Plan: ")
    lines = list(_diff_lines(host))
    fence = _fence(lines)
    return "\n".join(
        [
            f"<details><summary><b>{html.escape(host.host)}</b>{status}: "
            f"{html.escape(summary)}</summary>",
            "",
            f"{fence}diff",
            *lines,
            fence,
            "",
            "</details>",
            "",
        ]
    )


def _diff_lines(host: plans.HostPlan) -> Iterator[str]:
    for action, steps in plan_text.entries(host):
        yield from _entry(action, steps)


def _entry(action: plans.Action, steps: list[plans.Action]) -> Iterator[str]:
    moving = action.kind in (plans.ActionKind.MOVE, plans.ActionKind.RENAME)
    symbol = "-/+" if action.restart and not moving else _SYMBOLS.get(action.kind, "+")
    header = f"{symbol} {plan_text.object_words(action)}"
    words = plan_text.entry_words(action, steps)
    if words:
        header += f" ({words})"
    yield _one_line(header)
    if action.reason:
        yield _one_line(f"#   {action.reason}")
    for change in action.changes:
        yield _change_line(change, timed=action.kind is plans.ActionKind.UPDATE)
    if action.pending is not None:
        yield _one_line(f"#   pending: {action.pending}")


def _change_line(change: diff.FieldChange, *, timed: bool) -> str:
    timing = "  (at start)" if timed and change.at_start else ""
    old, new = plan_text.value_text(change, change.old), plan_text.value_text(change, change.new)
    if change.old is None:
        symbol, text = "+", new
    elif change.new is None:
        symbol, text = "-", old
    else:
        symbol, text = "!", f"{old} -> {new}"
    return _one_line(f"{symbol}     {change.dotted}: {text}{timing}")


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


def _fence(lines: Iterable[str]) -> str:
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    return "`" * max(3, longest + 1)
