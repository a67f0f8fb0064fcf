"""An apply as a live view on a terminal: one line per host with a bar, its counts and the
actions in flight (several at once with ``apply --parallel``), and each outcome printed above the
view as the action ends.

Pure, apart from ``LiveProgress``, which draws on the console it is given (the CLI hands it
standard error when that is a terminal; otherwise it prints ``apply_text.progress_printer``'s
plain lines).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from lxdgpu_reconcile.execute.results import Event, Outcome
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.report.apply_text import MARKS, describe, result_line

#: Actions in flight named on a host's line; more are counted.
SHOWN_RUNNING = 3


def host_line(
    host: str,
    total: int,
    counts: Mapping[Outcome, int],
    running: Sequence[tuple[plans.Action, float]],
    now: float,
) -> Table:
    """One host's line: name, bar, ``done/total``, a count per outcome, what runs and for how
    long (``running``: the actions in flight with the monotonic time each started)."""
    done = sum(counts.values())
    line = Table.grid(padding=(0, 1))
    line.add_column(no_wrap=True)
    line.add_column(no_wrap=True)
    line.add_column(no_wrap=True)
    line.add_column(overflow="ellipsis", no_wrap=True)
    tally = Text(f"{done}/{total}")
    for outcome in Outcome:
        if counts.get(outcome):
            mark, style = MARKS[outcome]
            tally.append(f" {mark}{counts[outcome]}", style=style)
    flight = Text()
    for action, started in running[:SHOWN_RUNNING]:
        if flight:
            flight.append(", ")
        flight.append(describe(action))
        flight.append(f" {now - started:.0f}s", style="dim")
    if len(running) > SHOWN_RUNNING:
        flight.append(f" +{len(running) - SHOWN_RUNNING} more", style="dim")
    line.add_row(
        Text(host, style="bold"),
        ProgressBar(total=max(total, 1), completed=done, width=24),
        tally,
        flight,
    )
    return line


class LiveProgress:
    """A progress callback (``__call__``) drawing a live view of ``plan``'s hosts while used as a
    context manager; safe to call from several threads."""

    def __init__(self, console: Console, plan: plans.Plan) -> None:
        self.console = console
        self.totals = {host.host: len(host.actions) for host in plan.hosts if host.actions}
        self.counts: dict[str, Counter[Outcome]] = {host: Counter() for host in self.totals}
        self.running: dict[str, dict[str, tuple[plans.Action, float]]] = {
            host: {} for host in self.totals
        }
        self._lock = threading.Lock()
        self._live = Live(
            console=console, get_renderable=self.render, refresh_per_second=4, transient=True
        )

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._live.stop()
        self.console.print(self.render(), soft_wrap=True)

    def __call__(self, event: Event) -> None:
        host = event.action.host
        if event.line is not None:
            self.console.print(
                Text.assemble((f"{host}: ", "bold"), (event.line, "dim")), soft_wrap=True
            )
            return
        # The view is drawn under the live display's lock, which printing takes too: print
        # outside this lock.
        with self._lock:
            running = self.running.setdefault(host, {})
            if event.result is None:
                running[event.action.id] = (event.action, time.monotonic())
                return
            running.pop(event.action.id, None)
            self.counts.setdefault(host, Counter())[event.result.outcome] += 1
        if event.result.outcome is not Outcome.PENDING:
            self.console.print(result_line(event.action, event.result), soft_wrap=True)

    def render(self) -> RenderableType:
        """The view as it is now: one line per host."""
        now = time.monotonic()
        with self._lock:
            lines = [
                host_line(host, total, self.counts[host], list(self.running[host].values()), now)
                for host, total in self.totals.items()
            ]
        return Group(*lines)
