"""Start-up: the command line imports only what a command uses. ``--help`` and ``validate``
bring neither LXD's client libraries (pylxd, requests, urllib3, cryptography) nor the service,
the observer or the executor; the defaults ``--help`` shows equal the library's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lxdgpu_reconcile.cli import defaults

REPO = Path(__file__).resolve().parents[2]

#: Modules (and their submodules) that only commands talking to LXD may import.
HEAVY = (
    "pylxd",
    "requests",
    "urllib3",
    "cryptography",
    "lxdgpu_reconcile.service",
    "lxdgpu_reconcile.observe",
    "lxdgpu_reconcile.execute",
    "lxdgpu_reconcile.lab",
    "lxdgpu_reconcile.reconcile.cycle",
)
#: What ``--help`` needs neither: the models, YAML, the planner, the renderers, the web stack.
NOT_FOR_HELP = (
    *HEAVY,
    "pydantic",
    "yaml",
    "uvicorn",
    "starlette",
    "lxdgpu_reconcile.fleet",
    "lxdgpu_reconcile.state",
    "lxdgpu_reconcile.planning",
    "lxdgpu_reconcile.report",
    "lxdgpu_reconcile.web.server",
)


def _imported(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    """The modules of ``heavy`` that ``code`` (run in a fresh interpreter) leaves imported."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"heavy = {heavy!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules "
        "if any(m == h or m.startswith(h + '.') for h in heavy))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_command_line_imports_no_lxd_client() -> None:
    assert _imported("import lxdgpu_reconcile.cli", NOT_FOR_HELP) == []


def test_help_imports_no_lxd_client() -> None:
    code = (
        "import contextlib, io, sys\n"
        "sys.argv = ['lxdgpu-reconcile', '--help']\n"
        "from lxdgpu_reconcile.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main()\n"
    )
    assert _imported(code, NOT_FOR_HELP) == []


def test_validate_imports_no_lxd_client() -> None:
    code = (
        "from typer.testing import CliRunner\n"
        "from lxdgpu_reconcile.cli import app\n"
        "result = CliRunner().invoke(app, ['validate', '-f', 'fleet.example.yaml', "
        "'--skip-certs'])\n"
        "assert result.exit_code == 0, result.output\n"
    )
    assert _imported(code) == []


def test_defaults_shown_in_help_are_the_librarys() -> None:
    from lxdgpu_reconcile import service
    from lxdgpu_reconcile.execute import images
    from lxdgpu_reconcile.lab import lifecycle
    from lxdgpu_reconcile.observe import lxdapi

    assert defaults.NAME_THE_FLEET == service.NAME_THE_FLEET
    assert defaults.LXD_TIMEOUT == lxdapi.DEFAULT_TIMEOUT
    assert defaults.STEP_TIMEOUT == images.DEFAULT_STEP_TIMEOUT
    assert defaults.LAB_DIR == lifecycle.DEFAULT_LAB_DIR
