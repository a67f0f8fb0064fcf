"""The planner as data tables: one YAML file per case in ``cases/``.

A case holds a fleet snippet (merged onto ``support.BASE_FLEET``), the observed hosts, plan
options and what is expected. The cases cover the factor matrix

- power state:   running / stopped (and wanted running / stopped)
- ownership:     managed (tagged) / unmanaged (untagged; with and without --adopt)
- drift:         clean / drifted
- kind of key:   applied live (limits.cpu, a disk device) / only at start (raw.idmap, a profile's
                 nvidia.runtime)

plus prune and protection, the default profile, missing images, unreachable hosts, GPU ids, the
lab and targets. Expected fields:

``actions``: the whole ordered list, each ``[kind, host, kind/name]`` with an optional fourth
element of space-separated flags: ``restart``, ``pending``, ``helper`` (a step of another
action). ``changes``: for an action id (``host/kind/name/step``), ``path: [old, new]`` of some of
its field changes. ``pending`` / ``reasons``: action id -> a text that its pending reason / its
reason contains.
``causes`` / ``holds``: action id -> its ``cause`` / ``hold`` (``null`` for none).
``absent``: action id -> paths that must not be among its changes. ``members``: action id ->
the cluster member a create or a move puts the container on. ``errors``:
error codes, in order. ``notes``: texts that some note contains. ``summary``: some counts.

Every case is then applied (``support.simulate_apply``) and planned again: on every applyable
host the second plan must hold exactly what the first one held back (pending), and nothing else;
a host with errors is left as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner
from tests.unit.planning import support

CASES = sorted((Path(__file__).parent / "cases").glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def _plan(case: dict[str, Any]) -> tuple[planning.Plan, Any, Any, Any]:
    fleet = support.fleet_from(case.get("fleet"))
    site = support.site_from(case.get("site"))
    snapshot = support.snapshot_from(case.get("observed") or {"h1": {}}, fleet, site)
    options = case.get("options") or {}
    adopt = options.get("adopt", False)
    made = planner.make_plan(
        fleet,
        snapshot,
        site,
        targets=tuple(options.get("targets", ())),
        prune=options.get("prune", False),
        adopt=adopt if isinstance(adopt, bool) else tuple(adopt),
        allow_restart=options.get("allow_restart", False),
        touch_unmanaged=options.get("touch_unmanaged", False),
    )
    return made, fleet, site, snapshot


def _row(action: planning.Action) -> list[str]:
    flags = [
        flag
        for flag, on in (
            ("restart", action.restart),
            ("pending", action.pending is not None),
            ("helper", action.part_of is not None),
        )
        if on
    ]
    row = [action.kind.value, action.host, f"{action.object.kind.value}/{action.object.name}"]
    return [*row, " ".join(flags)] if flags else row


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: Path) -> None:
    case = _load(path)
    expect = case["expect"]
    made, *_ = _plan(case)

    assert [_row(a) for a in made.actions] == expect.get("actions", [])
    by_id = {a.id: a for a in made.actions}
    for action_id, fields in (expect.get("changes") or {}).items():
        changes = {c.dotted: [c.old, c.new] for c in by_id[action_id].changes}
        for path_text, old_new in fields.items():
            old, new = old_new
            got = changes.get(path_text)
            assert got is not None, f"{action_id}: no change of {path_text}: {sorted(changes)}"
            assert [_plain(got[0]), _plain(got[1])] == [old, new], path_text
    for action_id, text in (expect.get("pending") or {}).items():
        assert text in (by_id[action_id].pending or ""), by_id[action_id].pending
    for action_id, text in (expect.get("reasons") or {}).items():
        assert text in by_id[action_id].reason, by_id[action_id].reason
    for action_id, cause in (expect.get("causes") or {}).items():
        assert by_id[action_id].cause == cause, action_id
    for action_id, hold in (expect.get("holds") or {}).items():
        assert by_id[action_id].hold == hold, action_id
    for action_id, member in (expect.get("members") or {}).items():
        body = by_id[action_id].body
        got = getattr(body, "target", None) or getattr(body, "member", None)
        assert got == member, f"{action_id}: on {got}, not {member}"
    for action_id, paths in (expect.get("absent") or {}).items():
        present = {c.dotted for c in by_id[action_id].changes}
        assert not present & set(paths), present & set(paths)
    assert [e.code.value for e in made.all_errors] == expect.get("errors", [])
    for text in expect.get("notes", []):
        assert any(text in note for note in made.notes), made.notes
    if "notes" in expect and not expect["notes"]:
        assert made.notes == ()
    for key, count in (expect.get("summary") or {}).items():
        assert getattr(made.summary, key) == count, key


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_second_plan_holds_only_what_the_first_held_back(path: Path) -> None:
    case = _load(path)
    made, fleet, site, snapshot = _plan(case)
    after = support.simulate_apply(made, snapshot, fleet, site)
    again = planner.build_plan(
        desiring.expand(fleet, after, site, targets=made.options.targets),
        after,
        prune=made.options.prune,
        adopt=made.options.adopt,
        allow_restart=made.options.allow_restart,
        touch_unmanaged=made.options.touch_unmanaged,
        targets=made.options.targets,
    )
    for first, second in zip(made.hosts, again.hosts, strict=True):
        if not first.applyable:
            assert [a.id for a in second.actions] == [a.id for a in first.actions]
            continue
        held = [(a.id, a.changes, a.pending) for a in first.actions if a.pending is not None]
        assert [(a.id, a.changes, a.pending) for a in second.actions] == held
