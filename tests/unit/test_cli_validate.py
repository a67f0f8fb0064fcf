"""``validate``, ``schema`` and ``--help`` through the command line (no LXD involved)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from lxdgpu_reconcile.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()

BAD = """\
version: 1
hosts:
  server01: {endpoint: "unix:///var/lib/lxd/unix.socket"}
users:
  tom: {host: server02, template: desk, uid: 1003, gid: 1003}
  tom: {host: server01, template: desk, uid: 1004, gid: 1004}
"""


def test_validate_example_for_the_lab_prints_a_summary(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["validate", "-f", str(REPO / "fleet.example.yaml"), "--lab", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "valid (2 hosts, 1 profile, 2 templates, 3 users)" in result.output


def test_missing_certificate_files_are_errors_with_their_line(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text((REPO / "fleet.example.yaml").read_text())
    result = runner.invoke(app, ["validate", "-f", str(fleet)], env={"LXDGPU_LAB": None})
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"{fleet}:25:18: hosts.server01.client_cert: {tmp_path}/certs/admin.crt does not exist: "
        "copy it to this machine (see docs/fleet-file.md, 'Connecting to hosts'), or rehearse in "
        "the local lab with --lab DIR"
    )
    assert len(lines) == 6 and "6 errors" in result.stderr

    as_json = runner.invoke(
        app, ["validate", "-f", str(fleet), "--format", "json"], env={"LXDGPU_LAB": None}
    )
    assert as_json.exit_code == 1
    assert {p["severity"] for p in json.loads(as_json.stdout)} == {"error"}

    (tmp_path / "certs").mkdir()
    for name in ("admin.crt", "admin.key", "server01.crt", "server02.crt"):
        (tmp_path / "certs" / name).write_text("x")
    done = runner.invoke(app, ["validate", "-f", str(fleet)], env={"LXDGPU_LAB": None})
    assert done.exit_code == 0, done.output


def test_the_lab_environment_variable_validates_for_the_lab(tmp_path: Path) -> None:
    example = str(REPO / "fleet.example.yaml")
    result = runner.invoke(app, ["validate", "-f", example], env={"LXDGPU_LAB": str(tmp_path)})
    assert result.exit_code == 0, result.output


def test_validate_bad_fleet_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(BAD)
    result = runner.invoke(app, ["validate", "-f", str(fleet)])
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines == [
        f"{fleet}:5:15: users.tom.host: unknown host 'server02': declared ones are server01",
        f"{fleet}:5:35: users.tom.template: unknown template 'desk': none is declared",
        f"{fleet}:6:3: users.tom: duplicate key 'tom': also defined at line 5; YAML keeps "
        "only one of them, so remove or rename one",
    ]
    assert "Traceback" not in result.output


def test_validate_json_is_a_list_for_bots(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(BAD)
    result = runner.invoke(app, ["validate", "-f", str(fleet), "--format", "json"])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    assert [(p["line"], p["col"], p["path"], p["severity"]) for p in problems] == [
        (5, 15, "users.tom.host", "error"),
        (5, 35, "users.tom.template", "error"),
        (6, 3, "users.tom", "error"),
    ]
    assert set(problems[0]) == {"file", "line", "col", "path", "severity", "message"}


def test_validate_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "-f", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 1
    assert "cannot read the fleet file" in result.stdout
    assert "name the fleet file with -f FLEET" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["plan", "status", "apply"])
def test_a_missing_fleet_file_says_to_name_it(tmp_path: Path, command: str) -> None:
    absent = tmp_path / "absent.yaml"
    result = runner.invoke(app, [command, "-f", str(absent)])
    assert result.exit_code == 1
    assert f"{absent}:1:1: (top level): cannot read the fleet file" in result.stderr
    assert "what to do: name the fleet file with -f FLEET" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["plan", "status", "apply"])
def test_a_fleet_with_errors_stops_before_any_host_is_read(tmp_path: Path, command: str) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(BAD)
    result = runner.invoke(app, [command, "-f", str(fleet)])
    assert result.exit_code == 1
    assert f"{fleet}:5:15: users.tom.host: unknown host 'server02'" in result.stderr
    assert f"what to do: fix the fleet file (`lxdgpu-reconcile validate -f {fleet}`)" in (
        result.stderr
    )
    assert result.stdout == ""


def test_schema_is_json_schema_of_the_fleet() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"].startswith("lxdgpu-reconcile fleet file")
    assert {"version", "hosts", "users", "cuda", "templates"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def _command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command of a typer/click group, as argument paths."""
    paths = []
    for name, command in group.commands.items():
        paths.append((*prefix, name))
        if hasattr(command, "commands"):
            paths.extend(_command_paths(command, (*prefix, name)))
    return paths


def test_every_command_help_has_a_purpose_and_an_example() -> None:
    paths = _command_paths(typer.main.get_command(app))
    assert {("validate",), ("plan",), ("apply",), ("status",), ("lab", "up")} <= set(paths)
    root = typer.main.get_command(app)
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example:" in result.output, path
        command: Any = root
        for name in path:
            command = command.commands[name]
        purpose = (command.help or "").strip().split("\n\n")[0]
        assert purpose and "\n" not in purpose and len(purpose) <= 100, (path, purpose)


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lxdgpu_reconcile",
            "validate",
            "-f",
            "fleet.example.yaml",
            "--lab",
            "/var/tmp/lab",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "valid (" in result.stdout


def test_commands_that_use_a_fleet_show_its_warnings_on_stderr(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "version: 1\n"
        "hosts:\n"
        "  server01:\n"
        "    endpoint: https://192.0.2.1:8443\n"
        "    client_cert: a.crt\n"
        "    client_key: a.key\n"
        "    server_cert: s.crt\n"
        "profiles:\n"
        "  root:\n"
        "    allow_unsafe: true\n"
        "    config: {security.privileged: 'true'}\n"
    )
    lab = tmp_path / "lab"
    result = runner.invoke(app, ["plan", "-f", str(fleet), "--lab", str(lab)])
    assert result.exit_code == 1  # no lab there: stops after loading
    privileged = f"{fleet}:11:35: profiles.root.config.security.privileged: warning:"
    assert privileged in result.stderr
    assert "does not exist" not in result.stderr  # the lab brings its own certificates
    assert result.stdout == ""
