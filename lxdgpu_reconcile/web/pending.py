"""What a plan would do to each container, for the page's Notes column and the ``pending`` field.

``summaries`` is pure: from a plan, masked first (``planning.sensitive.mask_plan``), it makes one
short line per container action ("update config.limits.cpu, pending: needs a restart", "create",
"move to server02") that names the action and the fields it changes, never a value.

``Planner`` plans the fleet against one observation with the default options of ``plan`` (no
targets, no prune, no adopt, no restart) and summarises it; ``serve`` gives it to the board, which
calls it once per observation. I/O: reads this machine's ``/proc`` for the template builders the
snapshot names (``execute.builders.live_builders``, as ``plan`` does) and the template files
(through the function it is given). It sends no request to LXD: what ``apply`` would hold back
because a container's GPUs are busy is not shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute import builders
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.planning.common import ObjectKind
from lxdgpu_reconcile.planning.model import Action, ActionKind, Hold, MoveInstanceBody, Plan
from lxdgpu_reconcile.planning.sensitive import mask_plan
from lxdgpu_reconcile.site import Site
from lxdgpu_reconcile.state import TAG_PREFIX, FleetSnapshot

#: Field paths named per action before the rest is counted ("+2 more").
MAX_FIELDS = 3
#: The field paths of the tool's own tags, named only when nothing else changes.
TAG_FIELD = "config." + TAG_PREFIX

#: Why an action is held back, in a few words (``Hold``).
HOLDS: dict[Hold, str] = {
    Hold.RESTART: "needs a restart",
    Hold.PRUNE: "needs pruning (apply --prune)",
    Hold.PROTECTED: "protected from deletion",
    Hold.IN_USE: "still in use",
    Hold.PAUSED: "paused in the fleet file",
    Hold.HOST_ERRORS: "its host has plan errors",
    Hold.DEPENDENCY: "waits for another pending change",
    Hold.POLICY: "held back by policy",
    Hold.UNMANAGED_USERS: "reaches unmanaged containers",
    Hold.GPU_BUSY: "its GPUs are busy",
}


@dataclass(frozen=True)
class Changes:
    """The summary lines of a plan by (host, container), or why no plan could be made."""

    by_container: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    error: str | None = None


def summaries(plan: Plan) -> dict[tuple[str, str], tuple[str, ...]]:
    """One line per container action of ``plan`` (helper steps left out), by (host, name).

    A move or rename is shown on both containers: "move from HOST/NAME" on the new one and
    "move to HOST/NAME" on the one it leaves. A plan error about a container is "plan error:
    CODE". The tool's own tags (``config.user.lxdgpu.*``) are named only when nothing else
    changes."""
    found: dict[tuple[str, str], list[str]] = {}
    masked = mask_plan(plan)
    for error in masked.all_errors:
        if error.host and error.object and error.object.kind is ObjectKind.INSTANCE:
            found.setdefault((error.host, error.object.name), []).append(
                f"plan error: {error.code.value}"
            )
    for action in masked.actions:
        if action.object.kind is not ObjectKind.INSTANCE or action.part_of is not None:
            continue
        suffix = _held(action)
        found.setdefault((action.host, action.object.name), []).append(_line(action) + suffix)
        body = action.body
        if isinstance(body, MoveInstanceBody):
            word = "rename" if action.kind is ActionKind.RENAME else "move"
            to = _place(action.host, action.object.name, body.source_host)
            found.setdefault((body.source_host, body.source_name), []).append(
                f"{word} to {to}{suffix}"
            )
    return {key: tuple(lines) for key, lines in found.items()}


def _line(action: Action) -> str:
    body = action.body
    if isinstance(body, MoveInstanceBody):
        word = "rename" if action.kind is ActionKind.RENAME else "move"
        return f"{word} from {_place(body.source_host, body.source_name, action.host)}"
    if action.kind is ActionKind.UPDATE:
        paths = sorted({change.dotted for change in action.changes})
        paths = [path for path in paths if not path.startswith(TAG_FIELD)] or paths
        shown = ", ".join(paths[:MAX_FIELDS])
        if len(paths) > MAX_FIELDS:
            shown += f" +{len(paths) - MAX_FIELDS} more"
        line = f"update {shown}" if shown else "update"
        return line + (" (restart)" if action.restart and not action.pending else "")
    return action.kind.value


def _place(host: str, name: str, other_host: str) -> str:
    """``name`` on the same host, else ``host/name``."""
    return name if host == other_host else f"{host}/{name}"


def _held(action: Action) -> str:
    if action.pending is None:
        return ""
    return ", pending: " + (HOLDS.get(action.hold, "held back") if action.hold else "held back")


class Planner:
    """Plans ``fleet`` on ``site`` against a snapshot and summarises the plan (see the module).

    ``template_files`` returns the contents of every template's files (``service.Loaded``); it
    may raise ``ToolError``. Never raises: a failure is the ``Changes``' ``error``."""

    def __init__(
        self,
        fleet: Fleet,
        site: Site,
        template_files: Callable[[], Mapping[str, Mapping[str, bytes]]],
    ) -> None:
        self.fleet = fleet
        self.site = site
        self.template_files = template_files

    def __call__(self, snapshot: FleetSnapshot) -> Changes:
        try:
            made = planner.make_plan(
                self.fleet,
                snapshot,
                self.site,
                template_files=self.template_files(),
                builders=builders.live_builders(snapshot),
            )
            return Changes(by_container=summaries(made))
        except ToolError as exc:
            return Changes(error=f"{exc.message} ({exc.hint})" if exc.hint else exc.message)
        except Exception as exc:
            return Changes(error=f"the changes could not be planned ({type(exc).__name__})")
