"""``lab`` commands without a daemon: help, and one-line errors with what to do next."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [["lab"], ["lab", "up"], ["lab", "down"], ["lab", "env"]])
def test_every_help_has_an_example(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output


def test_env_without_a_lab_says_to_bring_it_up(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lab", "env", "server01", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "lab up -f FLEET --dir" in result.output
    assert "Traceback" not in result.output


def test_down_without_a_lab_is_harmless(tmp_path: Path) -> None:
    result = runner.invoke(app, ["lab", "down"], env={"LXDGPU_LAB": str(tmp_path / "none")})
    assert result.exit_code == 0
    assert "nothing to do" in result.output


def test_up_with_a_missing_fleet_file_says_which(tmp_path: Path) -> None:
    missing = tmp_path / "fleet.yaml"
    result = runner.invoke(app, ["lab", "up", "-f", str(missing), "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{missing}:1:1: (top level): cannot read the fleet file" in result.output
    assert "what to do: name the fleet file with -f FLEET" in result.output


def test_up_with_a_broken_fleet_prints_its_problems(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("version: 1\nhosts:\n  a: {endpoint: ftp://x}\n")
    result = runner.invoke(app, ["lab", "up", "-f", str(fleet), "--dir", str(tmp_path / "lab")])
    assert result.exit_code == 1
    assert "hosts.a.endpoint" in result.output
    assert "validate -f" in result.output
    assert not (tmp_path / "lab").exists()


def test_env_with_a_file_for_the_lab_dir_says_what_to_give(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "fleet.yaml"
    not_a_dir.write_text("version: 1\n")
    result = runner.invoke(app, ["lab", "env", "server01", "--dir", str(not_a_dir)])
    assert result.exit_code == 1
    assert f"cannot read the lab in {not_a_dir}: Not a directory" in result.output
    assert "what to do:" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
