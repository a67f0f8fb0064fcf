"""What an unattended run may apply: the fleet file's ``reconcile:`` policy at a given time. Pure.

The command line reads the clock and passes the local time in, so the evaluation is a function
of the policy and that time, and is tested as such.

Creates, in-place updates and starts are always applied. The rest:

- restarts of running containers (changes LXD applies only at start): ``allow_restarts``
  ``never``, ``always``, or ``window`` (only while the local time is inside ``restart_window``,
  ``HH:MM-HH:MM``, end exclusive, possibly crossing midnight);
- deletes of tagged objects no longer in the fleet file: ``allow_deletes`` (as ``--prune``;
  protected containers stay pending either way);
- template image builds and copies: ``allow_template_builds``.

``decide`` gives the ``Decision``; restarts and deletes become the planner's own options
(``allow_restart``, ``prune``), so what is held back is exactly what ``plan`` would hold back
without those flags. ``govern`` then holds back what the options cannot express (template
actions: ``policy_hold`` is the hook) and rewords the pending reasons of held restarts and deletes
so that they name the policy and the way to release them.
"""

from __future__ import annotations

import datetime

from lxdgpu_reconcile.fleet import models
from lxdgpu_reconcile.planning import holds
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import Frozen

#: The action kinds that build or copy template images. ``policy_hold`` holds them back unless
#: ``reconcile.allow_template_builds`` is true.
TEMPLATE_KINDS = frozenset({plans.ActionKind.BUILD, plans.ActionKind.COPY, plans.ActionKind.ALIAS})


class Decision(Frozen):
    """What one run may do, and the words that explain it."""

    allow_restart: bool
    prune: bool
    allow_template_builds: bool
    #: ``never``, ``always``, ``inside 02:00-06:00`` or ``outside 02:00-06:00``.
    restarts: str
    #: Local time the decision was made for, ``HH:MM``.
    at: str


def in_window(window: str, minute: int) -> bool:
    """Whether ``minute`` (minutes after midnight) is inside ``window`` (``HH:MM-HH:MM``, end
    exclusive; ``22:00-06:00`` crosses midnight)."""
    start, end = models.window_minutes(window)
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def decide(policy: models.ReconcilePolicy, now: datetime.time) -> Decision:
    """The decision of ``policy`` at local time ``now``."""
    minute = now.hour * 60 + now.minute
    if policy.allow_restarts == "window" and policy.restart_window is not None:
        inside = in_window(policy.restart_window, minute)
        allow_restart = inside
        restarts = f"{'inside' if inside else 'outside'} {policy.restart_window}"
    else:
        allow_restart = policy.allow_restarts == "always"
        restarts = "always" if allow_restart else "never"
    return Decision(
        allow_restart=allow_restart,
        prune=policy.allow_deletes,
        allow_template_builds=policy.allow_template_builds,
        restarts=restarts,
        at=f"{now.hour:02d}:{now.minute:02d}",
    )


def policy_hold(action: plans.Action, decision: Decision) -> str | None:
    """Why the policy holds ``action`` back beyond the planner's options, or None.

    The hook for actions the planner's options do not cover: template builds and copies are
    held back unless ``allow_template_builds``.
    """
    if action.kind in TEMPLATE_KINDS and not decision.allow_template_builds:
        return (
            "template builds are held back: reconcile.allow_template_builds is false in the "
            "fleet file (build now with `lxdgpu-reconcile apply`, or allow them there)"
        )
    return None


def govern(plan: plans.Plan, decision: Decision) -> plans.Plan:
    """``plan`` (made with ``decision``'s options) as a run under the policy may apply it."""
    held: dict[str, tuple[str, plans.Hold]] = {}
    for action in plan.actions:
        if action.pending is None:
            why = policy_hold(action, decision)
            if why is not None:
                held[action.id] = (why, plans.Hold.POLICY)
        elif action.hold is plans.Hold.RESTART:
            held[action.id] = (_restart_words(decision), plans.Hold.RESTART)
        elif action.hold is plans.Hold.PRUNE:
            held[action.id] = (_DELETES_HELD, plans.Hold.PRUNE)
    if not held:
        return plan
    return holds.hold_back(plan, held)


_DELETES_HELD = (
    "kept: reconcile.allow_deletes is false in the fleet file (delete now with "
    "`lxdgpu-reconcile apply --prune`, or allow deletes there)"
)


def _restart_words(decision: Decision) -> str:
    if decision.restarts.startswith("outside"):
        window = decision.restarts.removeprefix("outside ")
        return (
            f"needs a restart: only inside reconcile.restart_window {window} (now "
            f"{decision.at}); a run inside the window applies it, or restart now with "
            "`lxdgpu-reconcile apply --allow-restart`"
        )
    return (
        "needs a restart: reconcile.allow_restarts is never in the fleet file (restart now "
        "with `lxdgpu-reconcile apply --allow-restart`, or allow restarts there)"
    )
