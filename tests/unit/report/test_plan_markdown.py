"""The plan as a pull-request comment: golden files of realistic plans, and escaping.

Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/unit/report`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning.common import ErrorCode, ObjectKind, ObjectRef, PlanError
from lxdgpu_reconcile.report import plan_markdown
from tests.unit.planning import support
from tests.unit.planning.test_planning_render import CLEAN, MIXED
from tests.unit.planning.test_planning_templates import BASE, host, plan_of

GOLDEN = Path(__file__).parent / "golden"

#: A pull request on a two-host lab: a new user, a CUDA version added for one, a uid fixed for
#: another (a restart, held back), a cpu change for a paused user, a departed user's container
#: (protected), and a limit someone changed by hand (drift).
PULL_REQUEST: dict[str, Any] = {
    "fleet": {
        "hosts": {"server02": {"endpoint": "unix:///var/lib/lxd2/unix.socket"}},
        "users": {
            "tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003, "cuda": ["10.0"]},
            "jerry": {
                "host": "h1",
                "template": "desk",
                "uid": 1004,
                "gid": 1004,
                "cuda": ["9.0", "10.0"],
            },
            "spike": {"host": "server02", "template": "desk", "uid": 1006, "gid": 1006},
            "tyke": {"host": "server02", "template": "desk", "uid": 1007, "gid": 1007},
            "nibbles": {
                "host": "h1",
                "template": "desk",
                "uid": 1008,
                "gid": 1008,
                "cpu": 4,
                "paused": True,
            },
        },
    },
    "observed": {
        "h1": {
            "profiles": {
                "default": None,
                "cuda-10.0": {"as_desired": True},
                "cuda-9.0": {"as_desired": True},
            },
            "instances": {
                "tom-container": {
                    "as_desired": True,
                    "status": "Running",
                    "config": {"limits.cpu": "2"},
                },
                "jerry-container": {
                    "as_desired": True,
                    "status": "Running",
                    "profiles": ["default", "cuda-10.0"],
                    "config": {"user.lxdgpu.spec-hash": "sha256:0123456789abcdef0123"},
                },
                "nibbles-container": {
                    "as_desired": True,
                    "status": "Running",
                    "config": {"limits.cpu": "8", "user.lxdgpu.spec-hash": "sha256:old"},
                },
                "butch-container": {
                    "status": "Stopped",
                    "config": {
                        "user.lxdgpu.managed": "true",
                        "user.lxdgpu.user": "butch",
                        "security.protection.delete": "true",
                    },
                },
            },
        },
        "server02": {
            "instances": {
                "spike-container": {
                    "as_desired": True,
                    "status": "Running",
                    "config": {
                        "raw.idmap": "uid 1005 1000\ngid 1005 1000",
                        "user.lxdgpu.spec-hash": "sha256:fedcba9876543210fedc",
                    },
                },
            },
        },
    },
}


def _golden(name: str, text: str) -> None:
    support.check_golden(GOLDEN / name, text)


@pytest.mark.parametrize(
    ("name", "scenario"),
    [
        pytest.param("pull-request.md", PULL_REQUEST, id="pull-request"),
        pytest.param("errors.md", MIXED, id="errors"),
        pytest.param("clean.md", CLEAN, id="clean"),
    ],
)
def test_markdown_golden(name: str, scenario: dict[str, Any]) -> None:
    _golden(name, plan_markdown.render(support.plan_scenario(scenario, prune=True)))


def test_restarts_deletes_and_pending_come_before_the_details() -> None:
    text = plan_markdown.render(support.plan_scenario(PULL_REQUEST, prune=True))
    first_details = text.index("<details>")
    for heading in ("**Restarts**", "**Deletes**", "**Pending**"):
        assert text.index(heading) < first_details, heading
    assert text.startswith(plan_markdown.MARKER + "\n")


def test_user_text_is_escaped() -> None:
    ref = ObjectRef(kind=ObjectKind.INSTANCE, name="x")
    error = PlanError(
        code=ErrorCode.MISSING_IMAGE,
        host="h|1",
        object=ref,
        message="image *bold* [link](http://x) <script> `code` @admin #12 $x$",
        fixes=("run `lxc image copy` | done",),
    )
    made = planning.Plan(hosts=(planning.HostPlan(host="h|1", applyable=False, errors=(error,)),))
    text = plan_markdown.render(made)
    assert r"image \*bold\* \[link\](http://x) &lt;script&gt; \`code\` \@admin \#12 \$x\$" in text
    assert r"| h\|1 (not applied) |" in text
    assert r"run \`lxc image copy\` \| done" in text
    assert "<script>" not in text


def test_code_blocks_use_a_longer_fence_than_their_content() -> None:
    action = planning.Action(
        id="h1/instance/x/update",
        kind=planning.ActionKind.UPDATE,
        host="h1",
        object=ObjectRef(kind=ObjectKind.INSTANCE, name="x"),
        reason="a value with ``` inside",
    )
    made = planning.Plan(hosts=(planning.HostPlan(host="h1", applyable=True, actions=(action,)),))
    text = plan_markdown.render(made)
    assert "````diff\n" in text and "\n````\n" in text


def test_a_plan_too_long_for_a_comment_leaves_out_the_last_hosts() -> None:
    made = support.plan_scenario(PULL_REQUEST, prune=True)
    full = plan_markdown.render(made)
    short = plan_markdown.render(made, limit=len(full) - 200)
    assert len(short) < len(full)
    assert "The details of 1 more host are left out" in short
    assert "**Restarts**" in short  # the call-outs are always there


def test_template_builds_and_copies_get_their_columns_and_words() -> None:
    text = plan_markdown.render(plan_of(host("h1", BASE), host("h2")))
    assert "| host | build | copy | create |" in text
    assert "| h1 | 1 | 0 | 0 |" in text and "| h2 | 0 | 1 | 1 |" in text
    assert "+ template tools (build on h1)" in text
    assert "+ template tools (copy from h1)" in text
