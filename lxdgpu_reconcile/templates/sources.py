"""The bytes of the files a template pushes into its build container.

Does I/O: reads local files. A file is written inline (``content:``) or named by ``source:``,
relative to the fleet file's folder. The result feeds both the recipe hash and the build, so the
hash is always taken of exactly what is pushed.
"""

from __future__ import annotations

from pathlib import Path

from lxdgpu_reconcile.errors import ToolError
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
            contents[file.path] = _read(base_dir / file.source, file.path)
    return contents


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
