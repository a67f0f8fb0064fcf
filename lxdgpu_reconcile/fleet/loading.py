"""Read a fleet file: YAML with source positions -> ``Fleet``, or every problem with its line.

The only I/O here is reading the fleet file, checking that certificate files exist, and that the
files templates push exist inside the fleet file's folder (``source_problem``). Every
problem found (YAML, structure, types, cross-references, safety rules) is collected and returned
at once, sorted by position, each as ``FILE:LINE:COL: dotted.key.path: message``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic_core import ErrorDetails

from lxdgpu_reconcile.fleet import checks as rules
from lxdgpu_reconcile.fleet.models import FORMAT_VERSION, Fleet
from lxdgpu_reconcile.fleet.yamlsource import Document, LimitError, Mark, parse
from lxdgpu_reconcile.fleet.yamlsource import Path as KeyPath
from lxdgpu_reconcile.gcpause import gc_paused


@dataclass(frozen=True, order=True)
class Problem:
    """One problem in a fleet file, pointing at the offending key or value."""

    file: str
    line: int
    col: int
    path: str
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {self.path or '(top level)'}: {prefix}{self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "path": self.path,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass(frozen=True)
class LoadResult:
    path: Path
    fleet: Fleet | None
    problems: tuple[Problem, ...] = field(default_factory=tuple)
    #: Certificate files of https hosts that do not exist, as errors, kept apart from
    #: ``problems``: ``validate`` and the commands that connect to real hosts report them as
    #: errors; with ``--lab`` (the lab's own certificates) they do not matter.
    missing_certs: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def ok(self) -> bool:
        return self.fleet is not None and not self.errors

    def reported(self, *, certs: bool) -> tuple[Problem, ...]:
        """Every problem, sorted: ``problems``, and the missing certificate files when
        ``certs`` (they are needed unless the hosts are pointed at the lab)."""
        return tuple(sorted({*self.problems, *(self.missing_certs if certs else ())}))


def dotted(path: KeyPath) -> str:
    """``("users", "tom", "cuda", 0)`` -> ``users.tom.cuda[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def load_fleet(path: Path) -> LoadResult:
    """Load and validate the fleet file at ``path``.

    The returned ``Fleet`` (present when the file's structure is valid, even if cross-reference
    problems were found) has relative certificate paths made absolute against the file's folder.
    """
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return _failed(path, Problem(name, 1, 1, "", f"cannot read the fleet file: {reason}"))
    except UnicodeDecodeError as exc:
        return _failed(path, Problem(name, 1, 1, "", f"the fleet file is not UTF-8 text: {exc}"))
    return load_text(text, name=name, base_dir=path.parent)


@gc_paused()  # a large fleet's objects are made in bulk (lxdgpu_reconcile.gcpause)
def load_text(text: str, *, name: str = "fleet.yaml", base_dir: Path | None = None) -> LoadResult:
    """Validate fleet text; ``base_dir`` anchors relative certificate paths (none: left as is)."""
    path = Path(name)
    try:
        doc = parse(text)
    except LimitError as exc:
        mark = Mark.of(exc.problem_mark)
        return _failed(path, Problem(name, mark.line, mark.col, dotted(exc.path), str(exc.problem)))
    except yaml.MarkedYAMLError as exc:
        mark = Mark.of(exc.problem_mark or exc.context_mark)
        message = f"YAML syntax error: {exc.problem or exc}"
        if exc.context:
            message += f" ({exc.context})"
        return _failed(path, Problem(name, mark.line, mark.col, "", message))
    except yaml.YAMLError as exc:
        return _failed(path, Problem(name, 1, 1, "", f"YAML error: {exc}"))

    problems = [
        Problem(name, p.mark.line, p.mark.col, dotted(p.path), p.message) for p in doc.problems
    ]
    top = _top_level_problem(doc, name)
    if top is not None:
        return _failed(path, top, *problems)

    for finding in rules.secret_keys(doc.data):
        problems.append(_at(doc, name, finding.path, finding.message, key=True))

    fleet, structure = _validate(doc, name)
    missing_certs: tuple[Problem, ...] = ()
    flagged = {p.path for p in problems}
    problems += [p for p in structure if p.path not in flagged]
    if fleet is not None:
        if base_dir is not None:
            fleet = _absolute_certs(fleet, base_dir)
        for finding in rules.check(fleet):
            problems.append(
                _at(doc, name, finding.path, finding.message, key=finding.at_key)
                if finding.severity == "error"
                else _warning(_at(doc, name, finding.path, finding.message, key=finding.at_key))
            )
        if base_dir is not None:
            problems += [
                _at(doc, name, finding.path, finding.message, key=False)
                for finding in _template_sources(fleet, base_dir)
            ]
        missing_certs = tuple(
            _at(doc, name, finding.path, finding.message, key=False)
            for finding in _missing_cert_files(fleet)
        )
    return LoadResult(
        path=path,
        fleet=fleet,
        problems=tuple(sorted(set(problems))),
        missing_certs=missing_certs,
    )


def _failed(path: Path, *problems: Problem) -> LoadResult:
    return LoadResult(path=path, fleet=None, problems=tuple(sorted(set(problems))))


def _warning(problem: Problem) -> Problem:
    return Problem(
        problem.file, problem.line, problem.col, problem.path, problem.message, "warning"
    )


def _at(doc: Document, name: str, path: KeyPath, message: str, *, key: bool) -> Problem:
    mark = doc.positions.key(path) if key else doc.positions.value(path)
    return Problem(name, mark.line, mark.col, dotted(path), message)


def _top_level_problem(doc: Document, name: str) -> Problem | None:
    if doc.data is None:
        return Problem(
            name, 1, 1, "", f"the fleet file is empty: start with 'version: {FORMAT_VERSION}'"
        )
    if not isinstance(doc.data, dict):
        mark = doc.positions.value(())
        kind = type(doc.data).__name__
        return Problem(
            name, mark.line, mark.col, "", f"the top level must be a mapping of keys, not a {kind}"
        )
    if "version" not in doc.data:
        return Problem(
            name, 1, 1, "version", f"missing 'version': add 'version: {FORMAT_VERSION}' at the top"
        )
    if doc.data["version"] != FORMAT_VERSION:
        mark = doc.positions.value(("version",))
        return Problem(
            name,
            mark.line,
            mark.col,
            "version",
            f"unsupported version {doc.data['version']!r}: this tool reads version "
            f"{FORMAT_VERSION}",
        )
    return None


# --- structure and types -------------------------------------------------------------------------


def _validate(doc: Document, name: str) -> tuple[Fleet | None, list[Problem]]:
    """Validate against ``Fleet``, reporting every error pydantic finds.

    Then drop what is broken (the bad field of an entry; the entry, if that field was required)
    and validate again, so that the cross-reference rules still run on everything well-formed.
    Only the first round's errors are reported: later rounds only see what the pruning did.
    """
    try:
        return Fleet.model_validate(doc.data), []
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False)
    problems = _pydantic_problems(doc, name, errors)
    data = doc.data
    for _ in range(3):
        data = _without(data, [tuple(err["loc"]) for err in errors])
        try:
            return Fleet.model_validate(data), problems
        except pydantic.ValidationError as exc:
            errors = exc.errors(include_url=False)
    return None, problems


def _without(data: dict[str, Any], locs: Iterable[KeyPath]) -> dict[str, Any]:
    """``data`` minus what the errors point at: a field of an entry, an entry, or a section."""
    data = dict(data)
    for loc in locs:
        loc = tuple(p for p in loc if p != "[key]")
        if not loc or loc[0] not in data or loc[0] == "version":
            continue
        section, rest = loc[0], loc[1:]
        if not rest or not isinstance(data[section], dict) or rest[0] not in data[section]:
            del data[section]
            continue
        entry = data[section][rest[0]]
        pruned: Any = None
        if len(rest) >= 2 and isinstance(entry, dict) and rest[1] in entry:
            pruned = {k: v for k, v in entry.items() if k != rest[1]}
        data[section] = {k: v for k, v in data[section].items() if k != rest[0]}
        if pruned is not None:
            data[section][rest[0]] = pruned
    return data


def _pydantic_problems(doc: Document, name: str, errors: list[ErrorDetails]) -> list[Problem]:
    """One problem per offending key; the alternatives of a union error become one message."""
    merged: dict[tuple[int, int, str], Problem] = {}
    for err in errors:
        problem = _pydantic_problem(doc, name, err)
        where = (problem.line, problem.col, problem.path)
        if where in merged:
            first = merged[where]
            problem = dataclasses.replace(first, message=f"{first.message}; or {problem.message}")
        merged[where] = problem
    return list(merged.values())


def _data_path(data: Any, loc: tuple[str | int, ...]) -> KeyPath:
    """``loc`` cut where it stops naming real keys (pydantic adds union member names)."""
    path: list[str | int] = []
    for part in loc:
        if part == "[key]":
            continue
        if (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        ):
            data = data[part]  # type: ignore[index]
            path.append(part)
        else:
            break
    return tuple(path)


def _pydantic_problem(doc: Document, name: str, err: ErrorDetails) -> Problem:
    loc: KeyPath = _data_path(doc.data, tuple(err["loc"]))
    if err["type"] == "missing":
        loc = (*loc, err["loc"][-1])
    kind = err["type"]
    message = _message(err)
    on_key = kind in {"extra_forbidden", "missing"} or "[key]" in err["loc"]
    if kind == "extra_forbidden":
        message = _unknown_key_message(loc)
    elif kind == "missing":
        parent = loc[:-1]
        mark = doc.positions.key(parent) if parent else Mark(1, 1)
        return Problem(name, mark.line, mark.col, dotted(loc), message)
    mark = doc.positions.key(loc) if on_key else doc.positions.value(loc)
    return Problem(name, mark.line, mark.col, dotted(loc), message)


def _message(err: ErrorDetails) -> str:
    kind, given = err["type"], err.get("input")
    if kind == "missing":
        return f"required key {err['loc'][-1]!r} is missing"
    if kind == "string_type" and isinstance(given, bool):
        return "expected text, found a boolean: quote it"
    if kind in {"literal_error", "enum"}:
        expected = err.get("ctx", {}).get("expected", "")
        return f"{given!r} is not allowed: expected {expected}"
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    if kind == "greater_than_equal" and err["loc"][-1] in {"uid", "gid"}:
        return (
            f"{given} is a system account id: map a real user's id (1000 or more), never root or "
            "a system account"
        )
    msg = err["msg"]
    return msg[0].lower() + msg[1:] if msg else kind


def _unknown_key_message(loc: KeyPath) -> str:
    key = str(loc[-1])
    allowed = _allowed_keys(loc[:-1])
    message = f"unknown key {key!r}"
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        message += f": did you mean {close[0]!r}?"
    elif allowed:
        message += f" (allowed here: {', '.join(sorted(allowed))})"
    return message


def _allowed_keys(path: KeyPath) -> list[str]:
    """The keys the model allows at ``path``: walks the model annotations along the path."""
    annotation: Any = Fleet
    for part in path:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else []


def _step(annotation: Any, part: str | int) -> Any:
    model = _model_in(annotation)
    if model is not None:
        field_info = model.model_fields.get(str(part))
        return None if field_info is None else field_info.annotation
    for arg in _args(annotation):
        origin = typing.get_origin(arg)
        if origin is dict:
            return typing.get_args(arg)[1]
        if origin is tuple or origin is list:
            return typing.get_args(arg)[0]
    return None


def _args(annotation: Any) -> Iterator[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        for arg in typing.get_args(annotation):
            yield from _args(arg)
    elif origin is typing.Annotated:
        yield from _args(typing.get_args(annotation)[0])
    else:
        yield annotation


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    for arg in _args(annotation):
        if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
            return arg
    return None


# --- certificate files ---------------------------------------------------------------------------


def _absolute_certs(fleet: Fleet, base_dir: Path) -> Fleet:
    hosts = {}
    for name, host in fleet.hosts.items():
        update = {
            key: str((base_dir / value).absolute())
            for key in ("client_cert", "client_key", "server_cert")
            if (value := getattr(host, key)) is not None and not Path(value).is_absolute()
        }
        hosts[name] = host.model_copy(update=update) if update else host
    return fleet.model_copy(update={"hosts": hosts})


def _missing_cert_files(fleet: Fleet) -> Iterator[rules.Finding]:
    for name, host in fleet.hosts.items():
        if not host.endpoint.startswith("https://"):
            continue
        for key in ("client_cert", "client_key", "server_cert"):
            value = getattr(host, key)
            if value is not None and not Path(value).exists():
                yield rules.Finding(
                    ("hosts", name, key),
                    f"{value} does not exist: copy it to this machine (see docs/fleet-file.md, "
                    "'Connecting to hosts'), or rehearse in the local lab with --lab DIR",
                )


# --- template sources ----------------------------------------------------------------------------


def source_problem(base_dir: Path, source: str) -> str | None:
    """Why the template file ``source`` (relative to ``base_dir``, the fleet file's folder) cannot
    be pushed, or None: it leaves the folder as written or after following symbolic links, does
    not exist, or is not a regular file."""
    written = rules.source_path_problem(source)
    if written is not None:
        return written
    try:
        folder = base_dir.resolve()
        target = (base_dir / source).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of symbolic links
        return f"{source!r} cannot be followed to a file: {exc}"
    if not target.is_relative_to(folder):
        return (
            f"{source!r} resolves to {target}, outside the fleet file's folder {folder} (through a "
            "symbolic link): copy the file into the folder instead of linking to it"
        )
    if not target.exists():
        return f"{source!r} does not exist in {folder}: add the file, or fix the path"
    if not target.is_file():
        return f"{source!r} is not a regular file: name a file"
    return None


def _template_sources(fleet: Fleet, base_dir: Path) -> Iterator[rules.Finding]:
    for name, template in fleet.templates.items():
        for i, file in enumerate(template.files):
            if file.source is None or file.content is not None:
                continue
            if rules.source_path_problem(file.source) is not None:
                continue  # reported by the rules already
            problem = source_problem(base_dir, file.source)
            if problem is not None:
                yield rules.Finding(("templates", name, "files", i, "source"), problem)
