"""The planner case tables are found: ``test_planner_cases`` runs on every case file there is.

``test_planner_cases`` is parametrized over a glob of ``cases/*.yaml``; an empty list (a moved
folder, a renamed suffix) would turn its tests into zero skipped cases rather than a failure.
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.planning.test_planner_cases import CASES

#: Somewhat below the number of case files today (41), so removing a few obsolete cases is fine.
MIN_CASES = 38


def test_case_collection_is_not_empty() -> None:
    assert len(CASES) >= MIN_CASES, f"found {len(CASES)} planner cases, expected {MIN_CASES}+"


def test_every_file_in_the_case_folder_is_a_collected_case() -> None:
    folder = Path(__file__).parent / "cases"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    assert files == CASES, "case files must end in .yaml to be run"
