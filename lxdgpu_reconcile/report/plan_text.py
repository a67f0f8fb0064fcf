"""A plan as text, in the manner of ``terraform plan``. Pure: builds rich ``Text`` lines.

Layout: notes, then errors with what to do, then per host one entry per change (``+`` create,
``~`` update in place, ``-/+`` stop -> update -> start, ``-`` delete) with a ``# why`` line, one
line per field (``+ added``, ``- removed``, ``~ old -> new``), and a ``pending:`` line for what is
held back; last the summary line
``Plan: N to create, N to update, N to restart, N to delete, N pending.``

``render`` returns a renderable: printed on a terminal it has colour, elsewhere rich drops the
styles. ``plain`` is the same text without styles (golden tests, logs). The CLI prints.

Values of secret-looking keys are masked (``planning.sensitive``): they read ``(sensitive value)``,
and ``(sensitive value) -> (sensitive value, changed)`` when replaced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from rich.console import Group
from rich.text import Text

from lxdgpu_reconcile.planning import common, diff, sensitive
from lxdgpu_reconcile.planning import model as plan

_SYMBOLS = {
    plan.ActionKind.CREATE: ("+", "green"),
    plan.ActionKind.UPDATE: ("~", "yellow"),
    plan.ActionKind.START: ("~", "yellow"),
    plan.ActionKind.STOP: ("~", "yellow"),
    plan.ActionKind.DELETE: ("-", "red"),
    plan.ActionKind.BUILD: ("+", "cyan"),
    plan.ActionKind.COPY: ("+", "cyan"),
    plan.ActionKind.ALIAS: ("~", "cyan"),
    plan.ActionKind.MOVE: ("~>", "magenta"),
    plan.ActionKind.RENAME: ("~>", "magenta"),
}
#: Kinds whose symbol says what they do even when they stop a running container.
_OWN_SYMBOL = (plan.ActionKind.MOVE, plan.ActionKind.RENAME)
_RESTART = ("-/+", "magenta")
_HASH_SHOWN = len("sha256:") + 12


def render(p: plan.Plan) -> Group:
    """``p`` as a rich renderable (colour on a terminal)."""
    return Group(*lines(p))


def plain(p: plan.Plan) -> str:
    """``p`` as text without styles, one line per line, ending with a newline."""
    return "".join(line.plain + "\n" for line in lines(p))


def lines(p: plan.Plan) -> list[Text]:
    """Every line of the rendered plan, secret-looking values masked."""
    p = sensitive.mask_plan(p)
    out: list[Text] = []
    for note in p.notes:
        out.append(Text.assemble(("Note: ", "bold cyan"), note))
    if p.notes:
        out.append(Text())
    for error in p.all_errors:
        out.extend(_error_lines(error))
    for host in p.hosts:
        out.extend(_host_lines(host))
    if not p.actions and not p.all_errors:
        out.append(Text("No changes: the hosts match the fleet file."))
    if p.all_errors:
        out.append(
            Text(
                f"{_count(p.summary.errors, 'error')}: hosts with errors are not applied.",
                style="bold red",
            )
        )
    out.append(Text(summary_line(p.summary), style="bold"))
    return out


def summary_line(s: plan.Summary) -> str:
    images = f"{s.builds} to build, {s.copies} to copy, " if s.builds or s.copies else ""
    if s.moves:
        images += f"{s.moves} to move, "
    return (
        f"Plan: {images}{s.create} to create, {s.update} to update, {s.restart} to restart, "
        f"{s.delete} to delete, {s.pending} pending."
    )


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _error_lines(error: common.PlanError) -> Iterator[Text]:
    yield Text.assemble(("Error: ", "bold red"), f"{error.message} [{error.code.value}]")
    for fix in error.fixes:
        yield Text(f"  - {fix}")
    yield Text()


def _host_lines(host: plan.HostPlan) -> Iterator[Text]:
    if not host.actions:
        return
    heading = host.host if host.applyable else f"{host.host} (not applied: it has errors)"
    yield Text(heading + ":", style="bold")
    for action, steps in entries(host):
        yield from _entry(action, steps)
    yield Text()


def entries(host: plan.HostPlan) -> Iterator[tuple[plan.Action, list[plan.Action]]]:
    """Each change of ``host`` that is not a step of another, with its steps (stop, start)."""
    steps: dict[str, list[plan.Action]] = {}
    for action in host.actions:
        if action.part_of is not None:
            steps.setdefault(action.part_of, []).append(action)
    for action in host.actions:
        if action.part_of is None:
            yield action, steps.get(action.id, [])


def entry_words(action: plan.Action, steps: Iterable[plan.Action]) -> str:
    """What an entry does: ``stop, then update``, ``build on HOST``; empty for a lone step."""
    if isinstance(action.body, plan.BuildTemplateBody):
        return f"build on {action.host}"
    if isinstance(action.body, plan.CopyTemplateBody):
        return f"copy from {action.body.source_host}"
    if isinstance(action.body, plan.AliasTemplateBody):
        return f"point {action.body.alias} back at {action.body.fingerprint[:12]}"
    if isinstance(action.body, plan.MoveInstanceBody):
        return move_steps(action, action.body)
    before = [s.kind.value for s in steps if s.id in action.depends_on]
    after = [s.kind.value for s in steps if s.id not in action.depends_on]
    names = [*before, action.kind.value, *after]
    if len(names) == 1:
        return ""
    if len(names) == 2:
        return f"{names[0]}, then {names[1]}"
    return " -> ".join(names)


def object_words(action: plan.Action) -> str:
    """What an action acts on, as its entry names it: ``instance tom-container``, ``h1 -> h2``
    after a moved container; for the host layer ``host account tom (uid 1003, gid 1003, shell
    nologin, home /home/tom 0750)``, ``home /home/tom owner 1003:1003``, ``subuid root:1003:1``;
    on a cluster member ``host account tom on node2 (...)``, ``subuid root:1003:1 on node2``."""
    body = action.body
    on = ""
    if isinstance(body, plan.AccountBody | plan.HomeBody | plan.DelegationBody) and body.member:
        on = f" on {body.member}"  # a cluster member's own system
    if isinstance(body, plan.AccountBody):
        shell = body.shell.rsplit("/", 1)[-1]
        return (
            f"host account {body.name}{on} (uid {body.uid}, gid {body.gid}, shell {shell}, home "
            f"{body.home} {body.home_mode})"
        )
    if isinstance(body, plan.HomeBody):
        if action.kind is plan.ActionKind.CREATE:
            return f"home {body.path}{on} (owner {body.uid}:{body.gid}, mode {body.mode})"
        changed = {change.path for change in action.changes}
        words = [f"home {body.path}{on}"]
        if ("owner",) in changed:
            words.append(f"owner {body.uid}:{body.gid}")
        if ("mode",) in changed:
            words.append(f"mode {body.mode}")
        return " ".join(words)
    if isinstance(body, plan.DelegationBody):
        return f"{body.file} root:{body.id}:1{on}"
    return f"{action.object.kind.value} {action.object.name}{move_from(action)}"


def move_from(action: plan.Action) -> str:
    """``  h1 -> h2`` (a move), ``  old -> new`` (a rename), ``  h1:old -> h2:new`` (both),
    ``  to member node2`` (a move inside a cluster), `` (on node2)`` (a create on a cluster);
    empty for other actions."""
    body = action.body
    if isinstance(body, plan.CreateInstanceBody) and body.target is not None:
        return f" (on {body.target})"
    if not isinstance(body, plan.MoveInstanceBody):
        return ""
    if body.source_host == action.host and body.member is not None:
        renamed = f"{body.source_name} -> {body.name}, " if body.source_name != body.name else ""
        return f"  {renamed}to member {body.member}"
    on = f" (on {body.member})" if body.member is not None else ""
    if body.source_host == action.host:
        return f"  {body.source_name} -> {body.name}"
    if body.source_name == body.name:
        return f"  {body.source_host} -> {action.host}{on}"
    return f"  {body.source_host}:{body.source_name} -> {action.host}:{body.name}{on}"


def move_steps(action: plan.Action, body: plan.MoveInstanceBody) -> str:
    """The steps of a move or rename, in order."""
    renaming = body.source_host == action.host
    if renaming and body.member is not None:
        steps = ["check the GPUs are idle", "stop"]
        if body.source_name != body.name:
            steps.append("rename")
        steps += [f"move to member {body.member}", f"rewrite for {body.member}"]
        return ", ".join([*steps, *(["start", "check it runs"] if body.start else [])])
    steps = ["check the GPUs are idle", f"stop on {body.source_host}"]
    steps.append("rename" if renaming else f"copy to {action.host}")
    steps.append("rewrite for the new name" if renaming else f"rewrite for {action.host}")
    if body.start:
        steps += ["start", "check it runs"]
    return ", ".join(steps)


def symbol_of(action: plan.Action) -> tuple[str, str]:
    if action.restart and action.kind not in _OWN_SYMBOL:
        return _RESTART
    return _SYMBOLS[action.kind]


def _entry(action: plan.Action, steps: list[plan.Action]) -> Iterator[Text]:
    symbol, style = symbol_of(action)
    header = Text.assemble(
        "  ",
        (symbol, f"bold {style}"),
        " ",
        object_words(action),
    )
    words = entry_words(action, steps)
    if words:
        header.append(f" ({words})")
    yield header
    if action.reason:
        yield Text(f"      # {action.reason}", style="dim")
    for change in action.changes:
        yield _change_line(change, timed=action.kind is plan.ActionKind.UPDATE)
    if action.pending is not None:
        yield Text.assemble(("      pending: ", "bold yellow"), action.pending)


def _change_line(change: diff.FieldChange, *, timed: bool) -> Text:
    key = change.dotted
    timing = "  (at start)" if timed and change.at_start else ""
    if change.old is None:
        symbol, style, text = "+", "green", value_text(change, change.new)
    elif change.new is None:
        symbol, style, text = "-", "red", value_text(change, change.old)
    else:
        symbol, style = "~", "yellow"
        text = f"{value_text(change, change.old)} -> {value_text(change, change.new)}"
    return Text.assemble("      ", (symbol, style), f" {key}: {text}{timing}")


def value_text(change: diff.FieldChange, value: diff.Value | None) -> str:
    """A field's value as shown in a plan: JSON strings, lists, maps; hashes shortened."""
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in sorted(value.items())) + "}"
    if value in sensitive.MARKERS:
        return value
    text = value or ""
    if text.startswith("sha256:") and len(text) > _HASH_SHOWN:
        text = text[:_HASH_SHOWN] + "..."
    return json.dumps(text) if change.path != ("state",) else text


def _shown(value: str) -> str:
    return value if value in sensitive.MARKERS else json.dumps(value)
