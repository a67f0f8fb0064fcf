"""Rendering: golden text (no colour) and the JSON shape. Regenerate the golden files with
``UPDATE_GOLDEN=1 pytest tests/unit/planning/test_planning_render.py`` and review the diff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.report import plan_json, plan_text
from tests.unit.planning import support

GOLDEN = Path(__file__).parent / "golden"
MANAGED = {"user.lxdgpu.managed": "true"}

MIXED: dict[str, Any] = {
    "fleet": {
        "hosts": {"h2": {"endpoint": "unix:///var/lib/lxd2/unix.socket"}},
        "profiles": {
            "default": {
                "hosts": ["h1", "h2"],
                "config": {"boot.autostart": "true"},
                "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}},
            }
        },
        "users": {
            "amy": {"host": "h1", "template": "desk", "uid": 1001, "gid": 1001, "cuda": ["9.0"]},
            "bea": {"host": "h1", "template": "desk", "uid": 1002, "gid": 1002},
            "cat": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003},
        },
    },
    "observed": {
        "h1": {
            "profiles": {"default": {"as_desired": True}},
            "instances": {
                "bea-container": {
                    "as_desired": True,
                    "status": "Running",
                    "config": {"limits.cpu": "4"},
                },
                "cat-container": {
                    "as_desired": True,
                    "status": "Running",
                    "config": {"raw.idmap": "uid 1009 1000\ngid 1009 1000"},
                },
                "old-container": {
                    "status": "Stopped",
                    "config": {
                        **MANAGED,
                        "user.lxdgpu.user": "old",
                        "security.protection.delete": "true",
                    },
                },
            },
        },
        "h2": {"unreachable": "connection refused"},
    },
}

CONFLICT: dict[str, Any] = {
    "fleet": {"users": {"amy": {"host": "h1", "template": "desk", "uid": 1001, "gid": 1001}}},
    "observed": {"h1": {"images": [], "instances": {"amy-container": {"status": "Running"}}}},
}

CLEAN: dict[str, Any] = {
    "fleet": {"users": {"amy": {"host": "h1", "template": "desk", "uid": 1001, "gid": 1001}}},
    "observed": {"h1": {"instances": {"amy-container": {"as_desired": True}}}},
}

LAB: dict[str, Any] = {
    "site": {"attach_gpus": False, "host_root": "/lab"},
    "fleet": {
        "users": {"amy": {"host": "h1", "template": "desk", "uid": 1001, "gid": 1001, "gpus": [0]}}
    },
    "observed": {"h1": {}},
}

SCENARIOS = {"mixed": MIXED, "conflict": CONFLICT, "clean": CLEAN, "lab": LAB}


def _golden(name: str, text: str) -> None:
    support.check_golden(GOLDEN / name, text)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_text_golden(name: str) -> None:
    _golden(f"{name}.txt", plan_text.plain(support.plan_scenario(SCENARIOS[name], prune=True)))


def test_summary_line() -> None:
    made = support.plan_scenario(MIXED, prune=True)
    assert plan_text.plain(made).splitlines()[-1] == (
        "Plan: 1 to create, 1 to update, 0 to restart, 0 to delete, 3 pending."
    )


def test_colour_only_on_a_terminal() -> None:
    made = support.plan_scenario(MIXED, prune=True)
    terminal = Console(force_terminal=True, width=200, record=False)
    with terminal.capture() as captured:
        terminal.print(plan_text.render(made))
    assert "\x1b[" in captured.get()
    pipe = Console(force_terminal=False, width=200)
    with pipe.capture() as captured:
        pipe.print(plan_text.render(made))
    assert "\x1b[" not in captured.get()
    assert "-/+ instance cat-container" in captured.get()


def _keys_everywhere(data: Any) -> list[list[str]]:
    """The key lists of every mapping in ``data``, in document order."""
    if isinstance(data, dict):
        return [list(data), *(k for v in data.values() for k in _keys_everywhere(v))]
    if isinstance(data, list):
        return [k for v in data for k in _keys_everywhere(v)]
    return []


def test_json_keys_are_sorted_at_every_level() -> None:
    made = support.plan_scenario(MIXED, prune=True)
    text = plan_json.render(made)
    assert all(keys == sorted(keys) for keys in _keys_everywhere(json.loads(text)))
    assert text.index('"errors"') < text.index('"format_version"') < text.index('"hosts"')


def test_json_shape_is_stable() -> None:
    made = support.plan_scenario(MIXED, prune=True)
    data = json.loads(plan_json.render(made))
    assert set(data) == {"format_version", "options", "summary", "notes", "errors", "hosts"}
    assert data["format_version"] == 1
    assert set(data["options"]) == {
        "targets",
        "prune",
        "adopt",
        "allow_restart",
        "attach_gpus",
        "touch_unmanaged",
    }
    assert set(data["summary"]) == {
        "create",
        "update",
        "restart",
        "delete",
        "pending",
        "errors",
        "builds",
        "copies",
        "moves",
    }
    host = data["hosts"][0]
    assert set(host) == {"host", "applyable", "errors", "notes", "actions"}
    action = host["actions"][0]
    assert set(action) == {
        "id",
        "kind",
        "host",
        "object",
        "changes",
        "restart",
        "reason",
        "pending",
        "depends_on",
        "part_of",
        "body",
        "observed",
        "adopt",
        "cause",
        "hold",
    }
    assert set(action["changes"][0]) == {"path", "old", "new", "timing"}
    error = data["hosts"][1]["errors"][0]
    assert set(error) == {"code", "message", "host", "object", "fixes"}
    _golden("mixed.json", plan_json.render(made))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_json_round_trip(name: str) -> None:
    made = support.plan_scenario(SCENARIOS[name], prune=True)
    assert plan_json.parse(plan_json.render(made)) == made


@pytest.mark.parametrize(
    ("name", "detailed", "code"),
    [
        ("clean", False, 0),
        ("clean", True, 0),
        ("lab", False, 0),
        ("lab", True, 2),
        ("conflict", True, 1),
        ("mixed", False, 1),
    ],
)
def test_exit_code(name: str, detailed: bool, code: int) -> None:
    assert planning.exit_code(support.plan_scenario(SCENARIOS[name]), detailed=detailed) == code
