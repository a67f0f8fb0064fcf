"""The fast path of ``fleet.yamlsource``: libyaml composes, and every text gives exactly what the
pure-Python parser gives (data, positions, problems, or the same error), including the texts
libyaml would accept and PyYAML refuses (tabs), nesting at the bound, and YAML bombs. The
cyclic garbage collector is paused during a parse and restored after it."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import yaml

from lxdgpu_reconcile.fleet import yamlsource
from lxdgpu_reconcile.gcpause import gc_paused

REPO = Path(__file__).resolve().parents[3]
BAD = sorted((Path(__file__).parent / "bad").glob("*.yaml"))

pytestmark = pytest.mark.skipif(yamlsource._CLoader is None, reason="PyYAML without libyaml")


def _deep(opening: str, closing: str, levels: int) -> str:
    return "version: 1\nx: " + opening * levels + "1" + closing * levels + "\n"


TRICKY = {
    "tab-after-colon": "a:\t1\n",
    "tab-in-block-scalar": "a: |\n  x\ty\nb: 2\n",
    "tab-indent": "a:\n\tb: 1\n",
    "crlf": "a: 1\r\nb: [x, y]\r\n",
    "bom": "\ufeffa: 1\n",
    "non-ascii": "ké: 1\nkö: [1, 2, é]\nz: 'ü'\n",
    "nel-and-line-separators": "a: 1\x85b: 2\u2028c: 3\n",
    "yaml-1.2-directive": "%YAML 1.2\n---\na: 1\n",
    "yaml-1.1-directive": "%YAML 1.1\n---\na: 1\n",
    "duplicate-anchor": "a: &x 1\nb: &x 2\nc: *x\n",
    "undefined-alias": "a: *nope\n",
    "two-documents": "a: 1\n---\nb: 2\n",
    "empty": "",
    "comment-only": "# nothing\n",
    "scalars": (
        "a: yes\nb: No\nc: on\nd: true\ne: 0755\nf: 1_000\ng: 0x1F\nh: 12.10\ni: 2024-01-01\n"
        "j: ~\nk: null\nl: -3\nm: +4\nn: 0\no: 007\np: 1:30\nq: .inf\nr: '12'\n"
    ),
    "tags": "a: !!binary aGk=\nb: !custom x\nc: !!str 1\nd: !!int '7'\ne: !!bool maybe\n",
    "block-scalars": "a: |\n  one\n  two\nb: >\n  folded\n  text\nc: |-\n  x\n",
    "plain-multiline": "a: one\n  two\n  three\nb: 2\n",
    "quoted-escapes": "a: \"\\x41\\u00e9\\/\\t\"\nb: 'it''s'\n",
    "flow-colons": "a: [a:b, {c: d}]\nb: {x: 1, x: 2}\n",
    "complex-key": "? [a, b]\n: 1\n? {c: d}\n: 2\n",
    "merges": "base: &b {x: 1, y: 2}\nother: &o {z: 3}\nu:\n  <<: [*b, *o]\n  x: 9\nv:\n  <<: 5\n",
    "nul": "a: \x00\n",
    "lone-surrogate": "a: \ud800\n",
    "bad-indent": "a:\n  b: 1\n c: 2\n",
    "colon-in-plain": "a: b: c\n",
    "long-key": "k" * 1100 + ": 1\n",
    "deep-64-sequences": _deep("[", "]", 62),
    "deep-65-sequences": _deep("[", "]", 63),
    "deep-mappings": _deep("{a: ", "}", 70),
    "deep-1001": _deep("[", "]", 1001),
    "deep-complex-key": "? " + "[" * 70 + "]" * 70 + "\n: 1\n",
    "deep-duplicate-value": "a: 1\na: " + "[" * 70 + "]" * 70 + "\n",
    "deep-merge-list": "a:\n  <<: " + "[" * 70 + "]" * 70 + "\n",
    "recursive-alias": "version: 1\nx: &a [*a]\n",
    "recursive-merge": "version: 1\nx: &a {<<: *a}\n",
    "bomb": "version: 1\n"
    + "".join(
        f"{n}: &{n} [{','.join([f'*{p}'] * 9) if p else ','.join(['lol'] * 9)}]\n"
        for p, n in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
    ),
    "bomb-then-deep": "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in ("ab", "bc", "cd", "de"))
    + "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\nz: "
    + "[" * 70
    + "]" * 70
    + "\n",
}


def _where(mark: yaml.Mark | None) -> tuple[int, int] | None:
    return None if mark is None else (mark.line, mark.column)


def _outcome(parse: Any, text: str) -> tuple[Any, ...]:
    """What parsing ``text`` gives: the document's parts, or what the loader reports of the
    error (its type, words, marks and key path; libyaml's marks carry no copy of the line)."""
    try:
        doc = parse(text)
    except yaml.MarkedYAMLError as exc:
        return (
            "error",
            type(exc).__name__,
            exc.problem,
            _where(exc.problem_mark),
            exc.context,
            _where(exc.context_mark),
            getattr(exc, "path", None),
        )
    except Exception as exc:  # compared, not hidden
        return ("error", type(exc).__name__, str(exc))
    return ("ok", doc.data, doc.positions.keys, doc.positions.values, doc.problems)


def _reference(text: str) -> yamlsource.Document:
    """The pure-Python parser alone (what ``parse`` did before libyaml was used)."""
    with gc_paused():
        return yamlsource._build(yamlsource._compose(text, yamlsource._Loader))


CASES = {
    **{f"bad/{path.name}": path.read_text() for path in BAD},
    "fleet.example.yaml": (REPO / "fleet.example.yaml").read_text(),
    **TRICKY,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_parse_gives_what_the_pure_python_parser_gives(name: str) -> None:
    text = CASES[name]
    assert _outcome(yamlsource.parse, text) == _outcome(_reference, text)


def test_a_fleet_without_tabs_is_composed_by_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the pure-Python parser was used")

    monkeypatch.setattr(yamlsource._Loader, "get_single_node", refuse)
    text = (REPO / "fleet.example.yaml").read_text()
    assert yamlsource.parse(text).data["users"]["tom"]["uid"] == 1003


def test_a_text_with_a_tab_is_parsed_by_pure_python(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("libyaml was used")

    monkeypatch.setattr(yamlsource._CLoader, "get_single_node", refuse)
    with pytest.raises(yaml.YAMLError, match="found character '\\\\t' that cannot start"):
        yamlsource.parse("a:\t1\n")


@pytest.mark.parametrize("enabled", [True, False])
def test_the_cyclic_gc_is_paused_during_a_parse_and_restored(enabled: bool) -> None:
    states: list[bool] = []
    original = yamlsource._Builder.build

    def build(self: Any, node: Any, path: Any) -> Any:
        states.append(gc.isenabled())
        return original(self, node, path)

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        yamlsource._Builder.build = build  # type: ignore[method-assign]
        yamlsource.parse("a: [1, 2]\n")
        assert gc.isenabled() is enabled
    finally:
        yamlsource._Builder.build = original  # type: ignore[method-assign]
        (gc.enable if was else gc.disable)()
    assert states and not any(states)
