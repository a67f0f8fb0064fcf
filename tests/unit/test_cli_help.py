"""What a new admin reads on the command line: ``--help`` of every command (on/off flags are plain
flags, not ``<bool>``), ``--version``, the shipped ``fleet.schema.json``, and the hints: every
``--flag`` a message names exists on the command that can print it."""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from lxdgpu_reconcile import __version__
from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.observe.lxderrors import explain

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "lxdgpu_reconcile"
runner = CliRunner()


def _command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if hasattr(command, "commands"):
            paths.extend(_command_paths(command, (*prefix, name)))
    return paths


PATHS = [(), *_command_paths(typer.main.get_command(app))]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "(top)")
def test_on_off_flags_are_shown_as_plain_flags(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "--help" in result.output
    assert "<bool>" not in result.output


def test_a_flag_given_a_value_is_refused() -> None:
    result = runner.invoke(app, ["plan", "--detailed-exitcode", "true"])
    assert result.exit_code == 2


def test_version_is_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"lxdgpu-reconcile {__version__}\n"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__


def test_the_shipped_schema_is_what_schema_prints() -> None:
    shipped = REPO / "fleet.schema.json"
    assert shipped.is_file(), "run: lxdgpu-reconcile schema > fleet.schema.json"
    printed = runner.invoke(app, ["schema"])
    assert printed.exit_code == 0
    assert shipped.read_text() == printed.stdout, "run: lxdgpu-reconcile schema > fleet.schema.json"
    first = (REPO / "fleet.example.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=fleet.schema.json"
    assert json.loads(shipped.read_text())["additionalProperties"] is False


# --- hints name only flags that exist ------------------------------------------------------------


def _options() -> dict[str, set[str]]:
    """Every command (``plan``, ``lab up``, ...) -> its long options."""
    root: Any = typer.main.get_command(app)
    found = {}
    for path in PATHS[1:]:
        ctx = root.make_context("lxdgpu-reconcile", [], resilient_parsing=True)
        command = root
        for name in path:
            command = command.get_command(ctx, name)
            ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        found[" ".join(path)] = {
            opt for p in command.get_params(ctx) for opt in (*p.opts, *p.secondary_opts)
        }
    return found


OPTIONS = _options()
COMMANDS = set(OPTIONS)
NAMEABLE = COMMANDS - {"lab", "host"}
#: The commands that read hosts and can print any message of the layers below the command line.
HOST_COMMANDS = {"plan", "apply", "reconcile", "build", "status"}
#: The commands a message of a command-line module can come from.
CLI_MODULES = {
    "app.py": COMMANDS,
    "common.py": HOST_COMMANDS,
    "plan.py": {"plan", "apply"},
    "saved.py": {"plan"},
    "locking.py": {"apply", "reconcile", "build"},
    "reconcile.py": {"reconcile"},
    "build.py": {"build"},
    "status.py": {"status"},
    "serve.py": {"serve"},
    "validate.py": {"validate", "schema"},
    "lab.py": {"lab up", "lab down", "lab env"},
    "host.py": {"host bootstrap"},
    "passwords.py": {"credentials", "reset-password"},
}
#: The commands a message of other layers can come from (default: ``HOST_COMMANDS``). Build and
#: status plan no user containers, so they print no planner message about them.
MODULES = {
    "planning": {"plan", "apply", "reconcile"},
    "reconcile": {"apply", "reconcile", "build"},  # the lock, taken by these
    "execute": {"apply", "reconcile", "build"},
    "lab": {"lab up"},
    "web": {"serve"},
    "fleet": HOST_COMMANDS | {"validate"},
}
#: The commands that read (and change) the hosts' own systems: they have --local.
LOCAL_COMMANDS = {"plan", "apply", "reconcile", "status"}
#: Messages with a bare flag that only some of the host commands can print, and why.
ONLY_SOME = {
    # reconcile rewords these pending reasons to name its policy (reconcile.policy.govern, tested
    # in tests/unit/reconcile); build and status make no restarts or deletes.
    "needs a restart: run with --allow-restart": {"plan", "apply"},
    "kept: deletes happen only with --prune": {"plan", "apply"},
    # Only when --target or --adopt was given: they echo it.
    "plan with --target {host} as well, or without --target": {"plan", "apply"},
    "observe it: plan with --target": {"plan", "apply"},
    "--target {target}: no host or user of that name": {"plan", "apply"},
    "--adopt {name}: no untagged container": {"plan", "apply"},
    "adopted (--adopt)": {"plan", "apply"},
    # Only when build --force was given.
    "--force": {"build"},
    # Only apply asks.
    "run with --yes to apply": {"apply"},
    # Said by lab up about the commands that talk to hosts.
    "rehearse with `--lab": HOST_COMMANDS,
    # Statements about what even a flag does not do, and echoes of flags given.
    "not even with --prune": {"plan", "apply"},
    "allowed (--touch-unmanaged": {"plan", "apply"},
    "deletes need --prune given to apply": {"plan", "apply"},
    # --local is on the commands that read hosts' own systems (build plans a template only;
    # validate reads no host): the fleet file's description of hosts.X.ssh, and transport hints.
    "(and without --local)": LOCAL_COMMANDS,
    "run the tool on the server itself with --local": LOCAL_COMMANDS,
    "--local with --lab": LOCAL_COMMANDS,
    "run without --local in the lab": LOCAL_COMMANDS,
    # The credentials store: used by the commands that set or show first passwords.
    "--credentials-dir": {"apply", "reconcile", "credentials", "reset-password"},
    "run with --yes to reset the password": {"reset-password"},
    # plan --state refuses --out; apply refuses --state (a hidden option there).
    "--out with --state": {"plan"},
    "--state: apply changes the live hosts": {"apply"},
}
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
#: Programs other than this tool whose flags messages quote (nvidia-smi: the GPU guard's query;
#: mount: the lab's namespace script).
_OTHERS = re.compile(r"\b(?:lxc|lxd|busybox|nvidia-smi|mount)\b[^`]*$")
#: The last command a message names before a flag: ``lxdgpu-reconcile apply --prune``, ``plan
#: --out``, ``held until apply --touch-unmanaged``.
_NAMED = re.compile(r"(?<![\w.-])(lab up|lab down|lab env|host bootstrap|[a-z]+) ")


def _strings(tree: ast.AST) -> Iterator[str]:
    """The message strings in ``tree`` (docstrings left out; f-string holes as ``{name}``)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    parts = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    for node in ast.walk(tree):
        if id(node) in parts:
            continue
        if isinstance(node, ast.JoinedStr):
            yield "".join(
                part.value
                if isinstance(part, ast.Constant)
                else "{" + ast.unparse(part.value) + "}"  # type: ignore[attr-defined]
                for part in node.values
            )
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.value


def _who_prints(module: Path, text: str) -> set[str]:
    for start, commands in ONLY_SOME.items():
        if start in text:
            return commands
    if module.parent.name == "cli":
        return CLI_MODULES[module.name]
    return MODULES.get(module.parent.name, HOST_COMMANDS)


def _flags_named() -> Iterator[tuple[str, str, str, set[str]]]:
    """(module, message, flag, commands that can print it) for every flag a message names."""
    for module in sorted(PACKAGE.rglob("*.py")):
        for text in set(_strings(ast.parse(module.read_text()))):
            if _FLAG.fullmatch(text):
                continue  # an option's declaration, or an argument of a program this runs
            for match in _FLAG.finditer(text):
                before = text[: match.start()]
                if _OTHERS.search(before):
                    continue  # lxc config ..., lxd init --preseed: not this tool's flags
                named = [m.group(1) for m in _NAMED.finditer(before) if m.group(1) in NAMEABLE]
                commands = {named[-1]} if named else _who_prints(module, text)
                yield str(module.relative_to(REPO)), text, match.group(), commands


FLAGS = list(_flags_named())


def test_messages_name_flags() -> None:
    assert len(FLAGS) > 20
    assert {flag for _, _, flag, _ in FLAGS} >= {"--prune", "--adopt", "--lab", "--timeout"}


@pytest.mark.parametrize(("module", "text", "flag", "commands"), FLAGS, ids=lambda v: str(v)[:50])
def test_every_flag_a_message_names_exists_where_it_is_printed(
    module: str, text: str, flag: str, commands: set[str]
) -> None:
    missing = sorted(command for command in commands if flag not in OPTIONS[command])
    assert not missing, f"{module}: {text!r} names {flag}, which {missing} do not have"


def test_a_missing_lab_home_says_to_bring_the_lab_up_again() -> None:
    message = 'Failed add validation for device "home": Missing source path "/l/root/home/tom"'
    hint = explain(message + ' for disk "home"')
    assert "run `lxdgpu-reconcile lab up` again" in hint
