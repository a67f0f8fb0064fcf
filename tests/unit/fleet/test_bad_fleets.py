"""The corpus of bad fleet files: each file names the problems ``validate`` must report.

A case file is a fleet file ending in comment lines ``# expect: LINE PATH: MESSAGE``; the loader
must report a problem on that line, at that dotted key path, whose message contains MESSAGE.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lxdgpu_reconcile.fleet.loading import load_fleet

CASES = sorted((Path(__file__).parent / "bad").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\d+) (\S*)\s*: (.+)$")


def expectations(path: Path) -> list[tuple[int, str, str]]:
    found = []
    for line in path.read_text().splitlines():
        match = EXPECT.match(line)
        if match:
            found.append((int(match.group(1)), match.group(2), match.group(3)))
    return found


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_fleet_is_rejected_at_its_line(case: Path) -> None:
    expected = expectations(case)
    assert expected, f"{case.name} has no '# expect:' line"
    result = load_fleet(case)
    assert not result.ok
    got = [(p.line, p.path, p.message) for p in result.errors]
    for line, path, message in expected:
        assert any(
            g_line == line and g_path == path and message in g_message
            for g_line, g_path, g_message in got
        ), f"expected {line} {path}: {message!r}\n got: {got}"
    assert all(p.file == str(case) for p in result.problems)
