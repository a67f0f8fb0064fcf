"""Progress of an apply: plain lines when standard error is not a terminal (unchanged), a live
view per host when it is (``report.apply_live``), and which one ``apply`` picks."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
import typer
from rich.console import Console

from lxdgpu_reconcile.cli import common
from lxdgpu_reconcile.execute.results import ActionResult, Event, Outcome
from lxdgpu_reconcile.report import apply_live, apply_text
from tests.unit.execute.test_executor_checks import TWO, plan_for

PLAN, _ = plan_for({"h1": {}, "h2": {}}, TWO)
CREATE, START, ANN_CREATE, _ANN_START = PLAN.actions


def _done(action: Any, message: str = "created") -> Event:
    result = ActionResult(
        id=action.id, host=action.host, outcome=Outcome.DONE, message=message, seconds=1.25
    )
    return Event(action, result)


def _console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    stream = io.StringIO()
    console = Console(
        file=stream,
        force_terminal=terminal,
        color_system=None,
        width=120,
        highlight=False,
        soft_wrap=True,
    )
    return console, stream


def test_plain_progress_lines_are_as_before() -> None:
    console, stream = _console(terminal=False)
    show = apply_text.progress_printer(console)
    show(Event(CREATE))
    show(_done(CREATE))
    assert stream.getvalue() == (
        "h1: create instance tom-container ...\n"
        "✓ h1: create instance tom-container done (created, 1.2s)\n"
    )


def test_the_live_view_has_a_line_per_host_with_counts_and_what_runs() -> None:
    console, stream = _console(terminal=True)
    live = apply_live.LiveProgress(console, PLAN)
    live(Event(CREATE))
    live(_done(CREATE))
    live(Event(START))
    live(Event(ANN_CREATE))
    view = Console(file=io.StringIO(), width=120, record=True)
    view.print(live.render())
    text = view.export_text()
    h1, h2 = text.splitlines()
    assert h1.startswith("h1") and "1/2 ✓1" in h1 and "start instance tom-container" in h1
    assert h2.startswith("h2") and "0/2" in h2 and "create instance ann-container" in h2
    assert "✓ h1: create instance tom-container done (created, 1.2s)" in stream.getvalue()


def test_the_live_view_is_left_on_the_terminal_when_done() -> None:
    console, stream = _console(terminal=True)
    with apply_live.LiveProgress(console, PLAN) as live:
        for action in PLAN.actions:
            live(Event(action))
            live(_done(action))
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    last = plain.rstrip().splitlines()[-2:]
    assert "2/2 ✓2" in last[0] and "2/2 ✓2" in last[1]


class _Report:
    ok = True


@pytest.mark.parametrize("terminal", [False, True])
def test_apply_shows_the_live_view_only_on_a_terminal(
    terminal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lxdgpu_reconcile import service

    console, _ = _console(terminal=terminal)
    given: dict[str, Any] = {}

    def fake_apply(loaded: Any, p: Any, **options: Any) -> Any:
        given.update(options)
        return _Report()

    monkeypatch.setattr(common, "err_console", console)
    monkeypatch.setattr(common, "out", Console(file=io.StringIO()))
    monkeypatch.setattr(service, "apply", fake_apply)
    monkeypatch.setattr(apply_text, "lines", lambda p, report: [])
    with pytest.raises(typer.Exit):
        common.perform(PLAN, None, timeout=5.0, parallel=3)  # type: ignore[arg-type]
    assert isinstance(given["progress"], apply_live.LiveProgress) is terminal
    assert given["parallel"] == 3
