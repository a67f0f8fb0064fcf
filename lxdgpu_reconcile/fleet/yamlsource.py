"""YAML to plain data, with the source position of every key and value.

Pure apart from its input text. PyYAML composes the node graph; this module builds the values
itself so that it can

- remember where every key and value came from (``Positions``, keyed by the path of keys),
- report duplicate keys (PyYAML silently keeps the last one) with both lines,
- keep versions as written: a plain ``12.10`` stays the text ``"12.10"``, never the float 12.1,
- refuse YAML 1.1 booleans (``yes``, ``no``, ``on``, ``off``, ``y``, ``n``), which YAML 1.2 and
  most readers take as strings; only ``true`` and ``false`` are booleans,
- keep dates as text,
- refuse YAML bombs: nesting deeper than ``MAX_DEPTH`` (including an alias that contains
  itself) and aliases that expand to more than ``MAX_ALIASED`` values (the "billion laughs"),
  each as a ``LimitError`` with the line where the limit was reached, before any memory or
  stack is spent on them.

Speed: the node graph comes from libyaml (PyYAML's C parser) when PyYAML has it and the text has
no tab; the text is parsed again by the pure-Python parser, whose errors and refusals are the
reference, whenever the C parser refuses it or a bound is reached (and for every text with a
tab, which libyaml accepts in places where PyYAML refuses it). Both parsers give the same nodes
and marks for the texts the C path keeps. The cyclic garbage collector is paused while a text is
parsed: the graph holds no cycles to collect, and its passes over the growing graph made a
parse superlinear in the size of the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml

from lxdgpu_reconcile.gcpause import gc_paused

#: A path into the data: mapping keys and sequence indexes.
Path = tuple[str | int, ...]

_TRUE_FALSE = {"true": True, "false": False}
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"

#: The deepest nesting of mappings and sequences a fleet file may have (it needs about 6).
MAX_DEPTH = 64
#: How many values aliases may expand to in all (each value an alias repeats counts once per
#: repetition): ample for anchors of shared settings, far below what a YAML bomb asks for.
MAX_ALIASED = 100_000


class Mark(NamedTuple):
    """A 1-based line and column (a tuple: a fleet file has one for every key and value)."""

    line: int
    col: int

    @classmethod
    def of(cls, mark: yaml.Mark | None) -> Mark:
        if mark is None:
            return cls(1, 1)
        return cls(mark.line + 1, mark.column + 1)


@dataclass(frozen=True)
class SourceProblem:
    mark: Mark
    path: Path
    message: str


@dataclass
class Positions:
    """Where each path's key and value start in the file."""

    keys: dict[Path, Mark] = field(default_factory=dict)
    values: dict[Path, Mark] = field(default_factory=dict)

    def key(self, path: Path) -> Mark:
        """The mark of the key at ``path``, or of its nearest known ancestor."""
        return self._nearest(path, prefer_key=True)

    def value(self, path: Path) -> Mark:
        """The mark of the value at ``path``, or of its nearest known ancestor."""
        return self._nearest(path, prefer_key=False)

    def _nearest(self, path: Path, *, prefer_key: bool) -> Mark:
        probe = path
        while True:
            first, second = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            if probe in first:
                return first[probe]
            if probe in second:
                return second[probe]
            if not probe:
                return Mark(1, 1)
            probe = probe[:-1]


@dataclass
class Document:
    data: Any
    positions: Positions
    problems: list[SourceProblem]


class LimitError(yaml.MarkedYAMLError):
    """The text nests too deeply or its aliases expand too much; ``problem_mark`` says where,
    ``path`` under which key (empty when that is not known)."""

    def __init__(self, problem: str, mark: yaml.Mark | None, path: Path = ()) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.path = path


class _AliasBomb(LimitError):
    """Aliases expand to more than ``MAX_ALIASED`` values."""


def _too_deep(mark: yaml.Mark | None, path: Path = ()) -> LimitError:
    return LimitError(
        f"nested more than {MAX_DEPTH} levels deep (or an alias contains itself): a fleet file "
        "needs only a few levels; remove the nesting or the self-referring alias",
        mark,
        path,
    )


class _Loader(yaml.SafeLoader):
    """SafeLoader without the timestamp resolver (dates stay text) and with a depth bound."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event: Any = self.peek_event()  # type: ignore[no-untyped-call]
                raise _too_deep(event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

#: libyaml's parser with the same resolvers, when PyYAML was built with it (else None). It has
#: no depth bound of ours while composing; libyaml's own (1,000 levels) stops a deeper text,
#: and the builder's bound (``MAX_DEPTH``) sends any text beyond ours to ``_Loader``.
_CLoader: type[Any] | None = None
if getattr(yaml, "__with_libyaml__", False):  # pragma: no branch

    class _CSafeLoader(yaml.CSafeLoader):
        """CSafeLoader with ``_Loader``'s resolvers (dates stay text), each plain scalar's tag
        resolved once per text (it depends on the text of the scalar alone)."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._plain_tags: dict[str, str] = {}

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            if kind is yaml.ScalarNode and implicit[0]:
                tag = self._plain_tags.get(value)
                if tag is None:
                    tag = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
                    self._plain_tags[value] = tag
                return tag
            return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]

    _CSafeLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
    _CLoader = _CSafeLoader


def parse(text: str) -> Document:
    """Parse ``text``. Raises ``yaml.YAMLError`` on a syntax error and ``LimitError`` on a YAML
    bomb (both carry the mark)."""
    with gc_paused():
        if _CLoader is not None and "\t" not in text:
            try:
                return _parse_c(text)
            except _AliasBomb:
                raise  # the reference parser would build the same nodes to the same error
            except Exception:  # the reference parser below reports it in its own words
                pass
        return _build(_compose(text, _Loader))


def _compose(text: str, loader_class: type[Any]) -> yaml.Node | None:
    loader = loader_class(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
    finally:
        loader.dispose()
    return node


def _build(node: yaml.Node | None) -> Document:
    builder = _Builder()
    data = None if node is None else builder.build(node, ())
    return Document(data=data, positions=builder.positions, problems=builder.problems)


def _parse_c(text: str) -> Document:
    """``text`` through libyaml; raises ``_Deep`` where ``_Loader`` would refuse the nesting.

    The builder enters every value ``_Loader`` composes, as deep or deeper, but not what it
    skips (a key that is not a name, a duplicate key's value, a merge of something else than a
    mapping: each a problem) and not keys, one level below their mapping. Only when it reports
    a problem, or comes within two levels of the bound, is the composed depth measured."""
    node = _compose(text, _CLoader)  # type: ignore[arg-type]
    if node is None:
        return _build(node)
    builder = _Builder()
    try:
        data = builder.build(node, ())
    except _AliasBomb:
        if _composed_depth(node) > MAX_DEPTH:
            raise _Deep from None
        raise
    if (builder.problems or builder.deepest > MAX_DEPTH - 2) and (
        _composed_depth(node) > MAX_DEPTH
    ):
        raise _Deep
    return Document(data=data, positions=builder.positions, problems=builder.problems)


class _Deep(Exception):
    """The text nests deeper than ``_Loader`` composes (it reports where)."""


def _composed_depth(root: yaml.Node) -> int:
    """The deepest level ``_Loader.compose_node`` reaches for the text of ``root`` (at most
    ``MAX_DEPTH + 1``): nodes in document order, keys and values one level below their
    mapping, a node met again (an alias) one level below its parent and not entered again."""
    deepest = 0
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if depth > MAX_DEPTH:
                break
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):
                stack.append((value, depth + 1))
                stack.append((key, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, depth + 1) for item in reversed(node.value))
    return deepest


class _Builder:
    def __init__(self) -> None:
        self.positions = Positions()
        self.problems: list[SourceProblem] = []
        self._int = yaml.SafeLoader("")  # only its int constructor is used
        self._depth = 0
        #: The deepest level entered.
        self.deepest = 0
        self._built: set[int] = set()
        self._aliased = 0
        self._top_keys: dict[Path, yaml.Mark] = {}

    def build(self, node: yaml.Node, path: Path) -> Any:
        self._enter(node, path)
        try:
            values = self.positions.values
            if path not in values:
                start = node.start_mark
                values[path] = Mark(start.line + 1, start.column + 1)
            if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
                return node.value
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.ScalarNode)
            return self._scalar(node, path)
        finally:
            self._depth -= 1

    def _enter(self, node: yaml.Node, path: Path) -> None:
        """Count one more level and, for a node built before (an alias), one more repeated value.

        An alias's node carries the position of its anchor, so an expansion beyond the bound is
        reported at the top-level key being built."""
        self._depth += 1
        if self._depth > self.deepest:
            self.deepest = self._depth
            if self._depth > MAX_DEPTH:
                raise _too_deep(node.start_mark, path[:1])
        if id(node) in self._built:
            self._aliased += 1
            if self._aliased > MAX_ALIASED:
                top = path[:1]
                raise _AliasBomb(
                    f"aliases expand to more than {MAX_ALIASED} values (a YAML bomb?): write "
                    "the values out, or use fewer nested aliases",
                    self._top_keys.get(top, node.start_mark),
                    top,
                )
        else:
            self._built.add(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        tag, text = node.tag, node.value
        if tag == _STR_TAG:
            return text
        if tag.endswith(":null"):
            return None
        if tag.endswith(":bool"):
            lowered = text.lower()
            if lowered in _TRUE_FALSE:
                return _TRUE_FALSE[lowered]
            self.problems.append(
                SourceProblem(
                    Mark.of(node.start_mark),
                    path,
                    f"{text!r} is ambiguous: YAML 1.1 reads it as a boolean, YAML 1.2 as text; "
                    f'write true or false, or quote it ("{text}")',
                )
            )
            return text
        if tag.endswith(":int"):
            if text.isdigit() and text.isascii() and (text[0] != "0" or text == "0"):
                return int(text)  # plain decimal; PyYAML's constructor for the other forms
            return self._int.construct_yaml_int(node)
        # Floats keep the text as written (versions such as 12.10); so does everything else.
        return text

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        seen: dict[Any, Mark] = {}
        merged: dict[Any, Any] = {}
        keys = self.positions.keys
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.update(self._merge_sources(value_node, path))
                continue
            key = self._scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            start = key_node.start_mark
            key_mark = Mark(start.line + 1, start.column + 1)
            if key is None or isinstance(key, list | dict):
                self.problems.append(
                    SourceProblem(key_mark, path, "keys must be plain names, not empty or nested")
                )
                continue
            key = str(key) if not isinstance(key, str) else key
            if key in seen:
                first = seen[key]
                self.problems.append(
                    SourceProblem(
                        key_mark,
                        (*path, key),
                        f"duplicate key {key!r}: also defined at line {first.line}; "
                        "YAML keeps only one of them, so remove or rename one",
                    )
                )
                continue
            seen[key] = key_mark
            if not path:
                self._top_keys[(key,)] = key_node.start_mark
            child = (*path, key)
            keys[child] = key_mark
            result[key] = self.build(value_node, child)
        for key, value in merged.items():
            result.setdefault(key, value)
        return result

    def _merge_sources(self, node: yaml.Node, path: Path) -> dict[Any, Any]:
        """Values of a ``<<`` merge key: a mapping or a list of mappings (earlier ones win)."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[Any, Any] = {}
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                self.problems.append(
                    SourceProblem(Mark.of(source.start_mark), path, "'<<' merges mappings only")
                )
                continue
            self._enter(source, path)
            try:
                merged.update(self._mapping(source, path))
            finally:
                self._depth -= 1
        return merged
