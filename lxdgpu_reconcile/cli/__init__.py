"""Command-line interface: thin typer commands over the library.

Each command module registers itself on ``app``; commands parse options, call ``service``,
render with ``report`` and set the exit status of a result. A domain error (``ToolError``) is
reported, and its exit status set, in one place: ``cli.app.ToolErrorGroup``.
"""

from __future__ import annotations

from lxdgpu_reconcile.cli import build as _build  # noqa: F401  (registers commands)
from lxdgpu_reconcile.cli import host as _host  # noqa: F401  (registers commands)
from lxdgpu_reconcile.cli import lab as _lab  # noqa: F401  (registers commands)
from lxdgpu_reconcile.cli import passwords as _passwords  # noqa: F401  (registers commands)
from lxdgpu_reconcile.cli import plan as _plan  # noqa: F401
from lxdgpu_reconcile.cli import reconcile as _reconcile  # noqa: F401  (registers commands)
from lxdgpu_reconcile.cli import serve as _serve  # noqa: F401  (registers commands)
from lxdgpu_reconcile.cli import status as _status  # noqa: F401  (registers commands)
from lxdgpu_reconcile.cli import validate as _validate  # noqa: F401  (registers commands)
from lxdgpu_reconcile.cli.app import app


def main() -> None:
    """Run the command line."""
    app()


__all__ = ["app", "main"]
