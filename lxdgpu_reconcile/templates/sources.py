"""The bytes of the files a template pushes into its build container.

Does I/O: reads local files. A file is written inline (``content:``) or named by ``source:``,
relative to the fleet file's folder. A source must stay inside that folder after following
symbolic links (``validate`` checks it too; it is checked again here, right before reading, so
that no file of the admin's machine is ever pushed into an image). The result feeds both the
recipe hash and the build, so the hash is always taken of exactly what is pushed.
"""

from __future__ import annotations

from pathlib import Path

from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.fleet.checks import source_path_problem
from lxdgpu_reconcile.fleet.models import Template


class TemplateFileError(ToolError):
    """A file a template pushes cannot be read; ``hint`` says what to do."""


def template_files(template: Template, base_dir: Path) -> dict[str, bytes]:
    """The content of every file of ``template``, by its path in the container.

    ``source:`` paths are relative to ``base_dir`` (the fleet file's folder). When two entries
    push to the same path, the later one wins, as it does in the container.
    """
    contents: dict[str, bytes] = {}
    for file in template.files:
        if file.content is not None:
            contents[file.path] = file.content.encode()
        elif file.source is not None:
            contents[file.path] = _read(_inside(base_dir, file.source, file.path), file.path)
    return contents


def _inside(base_dir: Path, source: str, target: str) -> Path:
    """``source`` resolved, when it stays inside ``base_dir``; raises ``TemplateFileError``."""
    problem = source_path_problem(source)
    resolved = base_dir / source
    if problem is None:
        try:
            resolved = resolved.resolve()
            if not resolved.is_relative_to(base_dir.resolve()):
                problem = f"{source!r} resolves to {resolved} (through a symbolic link)"
        except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of symbolic links
            problem = f"{source!r} cannot be followed to a file: {exc}"
    if problem is not None:
        raise TemplateFileError(
            f"the template file for {target} is outside the fleet file's folder: {problem}",
            "keep template files in the fleet file's folder (or below it), named relative to "
            "it; copy a file in rather than linking to it",
        )
    return resolved


def _read(source: Path, target: str) -> bytes:
    try:
        return source.read_bytes()
    except FileNotFoundError:
        raise TemplateFileError(
            f"the template file for {target} does not exist: {source}",
            "put the file there, or fix its source: (relative to the fleet file)",
        ) from None
    except OSError as exc:
        raise TemplateFileError(
            f"cannot read the template file {source} for {target}: {exc.strerror}",
            "check that the file is readable by the user running the tool",
        ) from None
