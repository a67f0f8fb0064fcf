"""Secret-looking values from live state never appear in a rendering of a plan, while the plan
still shows that their key changes (``planning.sensitive``). Pure: plans are made in memory."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from lxdgpu_reconcile.execute.results import ActionResult, ApplyReport, Outcome
from lxdgpu_reconcile.planning import diff, rules, saving, sensitive
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning.common import ObjectKind, ObjectRef
from lxdgpu_reconcile.reconcile.outcome import Result, Run
from lxdgpu_reconcile.report import plan_json, plan_markdown, plan_text, reconcile_log, saved_text
from tests.unit.planning import support

SECRET = "hf_aVeryPrivateHuggingFaceToken123"

#: amy's container as the fleet file wants it, plus a token someone set on the host by hand.
TOKEN_SET_BY_HAND: dict[str, Any] = {
    "fleet": {"users": {"amy": {"host": "h1", "template": "desk", "uid": 1001, "gid": 1001}}},
    "observed": {
        "h1": {
            "instances": {
                "amy-container": {
                    "as_desired": True,
                    "status": "Running",
                    "config": {"environment.HF_TOKEN": SECRET, "limits.cpu": "3"},
                }
            }
        }
    },
}


def _plan() -> planning.Plan:
    made = support.plan_scenario(TOKEN_SET_BY_HAND)
    (change,) = [c for c in made.actions[0].changes if c.dotted == "config.environment.HF_TOKEN"]
    assert change.old == SECRET  # the plan itself holds the value: the renderings must not
    return made


def test_plan_text_masks_the_token_and_shows_its_removal() -> None:
    text = plan_text.plain(_plan())
    assert SECRET not in text
    assert "- config.environment.HF_TOKEN: (sensitive value)" in text
    assert '~ config.limits.cpu: "3" -> "24"' in text  # other values are shown as before


def test_plan_json_masks_the_token_and_keeps_the_change() -> None:
    text = plan_json.render(_plan())
    assert SECRET not in text
    (action,) = json.loads(text)["hosts"][0]["actions"]
    changes = {".".join(c["path"]): (c["old"], c["new"]) for c in action["changes"]}
    assert changes["config.environment.HF_TOKEN"] == ("(sensitive value)", None)
    assert changes["config.limits.cpu"] == ("3", "24")


def test_plan_markdown_masks_the_token() -> None:
    text = plan_markdown.render(_plan())
    assert SECRET not in text
    assert "config.environment.HF_TOKEN: (sensitive value)" in text


def test_saved_plan_file_holds_the_masked_plan(tmp_path: Path) -> None:
    made = _plan()
    snapshot = support.snapshot_from(
        TOKEN_SET_BY_HAND["observed"],
        support.fleet_from(TOKEN_SET_BY_HAND["fleet"]),
        support.site_from(None),
    )
    saved = saving.save(
        made,
        snapshot,
        fleet=saving.FleetFile(path="fleet.yaml", sha256="0" * 64),
        lab=None,
        tool_version="0",
        created_at="2026-01-01T00:00:00+00:00",
    )
    text = saving.render(saved)
    assert SECRET not in text
    back = saving.parse(text, name="plan.json")
    assert back.plan == sensitive.mask_plan(made)  # what a re-derived plan is compared with
    assert back.preconditions == saved.preconditions


def test_reconcile_log_line_holds_no_token() -> None:
    made = _plan()
    at = datetime.datetime(2026, 3, 1, 2, 15, tzinfo=datetime.UTC)
    report = ApplyReport(
        results=tuple(
            ActionResult(id=a.id, host=a.host, outcome=Outcome.DONE, message="updated")
            for a in made.actions
        )
    )
    run = Run(
        id="r1",
        started=at,
        finished=at,
        fleet="fleet.yaml",
        version="0",
        result=Result.CHANGED,
        plan=made,
        report=report,
    )
    text = reconcile_log.render(run)
    assert SECRET not in text
    assert "config.environment.HF_TOKEN" in text  # the field is named, its value is not


def test_a_replaced_secret_shows_that_it_changed_and_nothing_else() -> None:
    change = diff.FieldChange(path=("config", "environment.DB_PASSWORD"), old="a1", new="b2")
    masked = sensitive.mask_change(change)
    assert (masked.old, masked.new) == ("(sensitive value)", "(sensitive value, changed)")
    added = sensitive.mask_change(change.model_copy(update={"old": None}))
    assert (added.old, added.new) == (None, "(sensitive value)")
    # a value that is not secret-looking is left alone
    plain = diff.FieldChange(path=("config", "limits.cpu"), old="1", new="2")
    assert sensitive.mask_change(plain) == plain


def test_a_whole_device_has_its_secret_keys_masked() -> None:
    change = diff.FieldChange(
        path=("devices", "share"),
        old={"type": "disk", "source": "/srv/a", "password": "p1", "token": "same"},
        new={"type": "disk", "source": "/srv/b", "password": "p2", "token": "same"},
    )
    masked = sensitive.mask_change(change)
    assert masked.old == {
        "type": "disk",
        "source": "/srv/a",
        "password": "(sensitive value)",
        "token": "(sensitive value)",
    }
    assert masked.new == {
        "type": "disk",
        "source": "/srv/b",
        "password": "(sensitive value, changed)",
        "token": "(sensitive value)",
    }


def test_bodies_are_masked_and_masking_is_deterministic_and_idempotent() -> None:
    body = planning.InstanceBody(
        profiles=("default",),
        config={"environment.HF_TOKEN": SECRET, "limits.cpu": "2"},
        devices={"d": {"type": "disk", "api_key": SECRET}},
        preserve=rules.Preserve(),
    )
    action = planning.Action(
        id="h1/instance/amy-container/update",
        kind=planning.ActionKind.UPDATE,
        host="h1",
        object=ObjectRef(kind=ObjectKind.INSTANCE, name="amy-container"),
        body=body,
    )
    made = planning.Plan(hosts=(planning.HostPlan(host="h1", applyable=True, actions=(action,)),))
    masked = sensitive.mask_plan(made)
    assert SECRET not in masked.model_dump_json()
    assert SECRET not in plan_json.render(made)
    assert isinstance(masked.actions[0].body, planning.InstanceBody)
    assert masked.actions[0].body.config["limits.cpu"] == "2"
    assert sensitive.mask_plan(made) == masked
    assert sensitive.mask_plan(masked) == masked


def test_stale_plan_reasons_mask_the_token() -> None:
    stale = saving.Stale(
        message="h1: instance amy-container changed on the host since the plan was made",
        changes=(diff.FieldChange(path=("config", "environment.HF_TOKEN"), old=None, new=SECRET),),
    )
    text = "\n".join(saved_text.lines([stale], plan_file="plan.json", replan="plan"))
    assert SECRET not in text
    assert "config.environment.HF_TOKEN" in text
