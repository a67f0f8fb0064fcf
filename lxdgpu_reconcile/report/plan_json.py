"""A plan as JSON with a stable, documented shape (docs/planning.md). Pure.

The document is ``Plan.model_dump(mode="json")``: ``format_version`` (1), ``options``,
``summary``, ``notes``, ``errors`` (not tied to a host) and ``hosts``, each with ``host``,
``applyable``, ``errors``, ``notes`` and ordered ``actions``. Fields are only ever added within a
format version; a change of meaning or a removal bumps ``format_version``. Values of
secret-looking keys are masked (``planning.sensitive``): ``"(sensitive value)"``, and
``"(sensitive value, changed)"`` as the new side of a replaced one.
"""

from __future__ import annotations

import json
from typing import Any

from lxdgpu_reconcile.planning import model as plan
from lxdgpu_reconcile.planning import sensitive


def to_data(p: plan.Plan) -> dict[str, Any]:
    """``p`` as plain JSON data (dicts, lists, strings, numbers, booleans, null), with the
    values of secret-looking keys masked."""
    return sensitive.mask_plan(p).model_dump(mode="json")


def render(p: plan.Plan) -> str:
    """``p`` as indented JSON text, ending with a newline."""
    return json.dumps(to_data(p), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def parse(text: str) -> plan.Plan:
    """A plan from ``render``'s output (for saved plans and tools that read plans back)."""
    return plan.Plan.model_validate_json(text)
