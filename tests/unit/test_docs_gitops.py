"""The CI jobs, cron line and systemd units in docs/gitops.md and docs/reconcile.md work as
written: every lxdgpu-reconcile command in them parses with this version's options, every YAML
block is YAML, and the systemd units pass ``systemd-analyze verify`` where it is installed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from lxdgpu_reconcile.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCS = (REPO / "docs/gitops.md", REPO / "docs/reconcile.md")
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PROGRAM = re.compile(r"(?:^|(?<=[\s/]))lxdgpu-reconcile (?=\S)")
_OPERATORS = {";", "|", "||", "&&", ">", ">>", "<", "&", "(", ")"}


def blocks(kind: str) -> list[str]:
    return [text for doc in DOCS for lang, text in _BLOCK.findall(doc.read_text()) if lang == kind]


def commands() -> list[list[str]]:
    """Every ``lxdgpu-reconcile ...`` command line in the code blocks, as arguments."""
    found = []
    for lang in ("console", "yaml", "ini", "cron"):
        for text in blocks(lang):
            for line in text.replace("\\\n", " ").splitlines():
                if lang == "console" and not line.startswith(("$ ", "# ")):
                    continue
                for match in _PROGRAM.finditer(line):
                    lexer = shlex.shlex(line[match.end() :], posix=True, punctuation_chars=True)
                    lexer.whitespace_split = True
                    args = []
                    for token in lexer:
                        if token in _OPERATORS:
                            break
                        args.append(token)
                    found.append(args)
    return found


def _rest(ctx: Any) -> list[str]:
    protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
    return [*protected, *ctx.args]


def _parse(args: list[str]) -> None:
    """Parse ``args`` as the command line does (raises on an unknown command or option)."""
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("lxdgpu-reconcile", list(args))
    rest = _rest(ctx)
    while hasattr(command, "resolve_command") and rest:
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name or "", rest, parent=ctx)
        rest = _rest(ctx)
    assert not rest, f"left over: {rest}"


def test_the_docs_use_the_commands_this_page_is_about() -> None:
    used = {args[0] for args in commands()}
    assert {"plan", "apply", "validate", "reconcile"} <= used


@pytest.mark.parametrize("args", commands(), ids=lambda a: " ".join(a)[:60])
def test_every_command_in_the_docs_parses(args: list[str]) -> None:
    _parse(args)


def test_every_yaml_block_is_yaml() -> None:
    for text in blocks("yaml"):
        assert yaml.safe_load(text) is not None


def test_the_cron_line_has_five_times_a_user_and_a_command() -> None:
    (text,) = blocks("cron")
    (line,) = [line for line in text.splitlines() if line and not line.startswith("#")]
    fields = line.split(None, 6)
    assert fields[:6] == ["*/15", "*", "*", "*", "*", "root"]
    assert "%" not in fields[6]  # cron would turn it into a newline


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_the_systemd_units_verify(tmp_path: Path) -> None:
    service, timer = blocks("ini")
    tool = Path(sys.executable).parent / "lxdgpu-reconcile"
    if not tool.exists() or shutil.which("git") is None:
        pytest.skip("the units name lxdgpu-reconcile and git, which are not both here")
    service = service.replace("/opt/lxdgpu-reconcile/.venv/bin/lxdgpu-reconcile", str(tool))
    service = service.replace("/usr/bin/git", shutil.which("git") or "git")
    (tmp_path / "lxdgpu-reconcile.service").write_text(service)
    (tmp_path / "lxdgpu-reconcile.timer").write_text(timer)
    done = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "lxdgpu-reconcile.service"),
            str(tmp_path / "lxdgpu-reconcile.timer"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert str(tmp_path) not in done.stderr, done.stderr  # no warning about the units
