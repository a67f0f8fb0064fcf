"""What an apply did: the outcome of every action. Pure data, shared by the executor and the
reports."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from lxdgpu_reconcile.execute.images import BuildEvent
from lxdgpu_reconcile.planning import model as plans


class Outcome(StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # not run: something it depends on failed or was skipped
    PENDING = "pending"  # held back by the plan (restart, prune, host errors)


class ActionResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    host: str
    outcome: Outcome
    message: str = ""
    hint: str = ""
    seconds: float = 0.0


class ApplyReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    results: tuple[ActionResult, ...] = ()

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def ok(self) -> bool:
        return not any(r.outcome in (Outcome.FAILED, Outcome.SKIPPED) for r in self.results)


@dataclass(frozen=True)
class Event:
    """Progress of an apply: an action starts, prints a line of output (a template build), or
    ends (``result`` set)."""

    action: plans.Action
    result: ActionResult | None = None
    line: str | None = None
    #: The build event behind ``line`` (a template build's stage, step or output line).
    build: BuildEvent | None = None
