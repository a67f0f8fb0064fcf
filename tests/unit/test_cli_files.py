"""Files the tool owns, through the command line, where no LXD is needed: the lock file is only
ever the tool's own, and files are written whole or the command fails saying where and why."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text((REPO / "fleet.example.yaml").read_text())
    return path


@pytest.mark.parametrize("command", ["apply", "reconcile"])
def test_the_fleet_file_as_the_lock_file_is_refused_and_left_intact(
    fleet: Path, command: str
) -> None:
    before = fleet.read_bytes()
    result = runner.invoke(app, [command, "-f", str(fleet), "--lock-file", str(fleet)])
    assert result.exit_code == 1
    assert f"refusing to use {fleet} as the lock file" in result.output
    assert "--lock-file PATH naming a lock file of its own" in result.output
    assert "Traceback" not in result.output
    assert fleet.read_bytes() == before


def test_a_link_as_the_lock_file_is_refused_and_its_target_left_intact(
    tmp_path: Path, fleet: Path
) -> None:
    target = tmp_path / "shadow"
    target.write_text("root:$6$x:19000:0:99999:7:::\n")
    link = tmp_path / "reconcile.lock"
    link.symlink_to(target)
    result = runner.invoke(app, ["apply", "-f", str(fleet), "--lock-file", str(link)])
    assert result.exit_code == 1
    assert f"refusing to use {link} as the lock file: it is a symbolic link" in result.output
    assert target.read_text() == "root:$6$x:19000:0:99999:7:::\n"


def test_a_full_disk_at_lock_time_is_an_error_not_a_traceback(
    tmp_path: Path, fleet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    lock = tmp_path / "reconcile.lock"
    result = runner.invoke(app, ["apply", "-f", str(fleet), "--lock-file", str(lock)])
    assert result.exit_code == 1
    assert f"cannot write the lock record to {lock}: no space left" in result.output
    assert "Traceback" not in result.output


def test_reconcile_log_cut_short_by_a_full_disk_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log line the disk cannot take whole is an error (exit 1), never a silent success."""
    broken = tmp_path / "fleet.yaml"
    broken.write_text("version: 1\nusers:\n  tom: {host: nowhere}\n")
    log = tmp_path / "r.jsonl"
    real = os.write

    def short(fd: int, data: bytes) -> int:
        if fd_path(fd) == log:
            return real(fd, bytes(data[:10])) if len(data) > 10 else 0
        return real(fd, data)

    monkeypatch.setattr(os, "write", short)
    argv = ["reconcile", "-f", str(broken), "--lock-file", str(tmp_path / "lock")]
    result = runner.invoke(app, [*argv, "--log-file", str(log), "--quiet"])
    assert result.exit_code == 1
    assert f"cannot append to the log file {log}: no space left on the device" in result.output
    assert "bytes were written" in result.output


def fd_path(fd: int) -> Path:
    return Path(os.readlink(f"/proc/self/fd/{fd}"))


def test_a_log_line_after_a_cut_one_starts_on_its_own_line(tmp_path: Path) -> None:
    broken = tmp_path / "fleet.yaml"
    broken.write_text("version: 1\nusers:\n  tom: {host: nowhere}\n")
    log = tmp_path / "r.jsonl"
    log.write_text('{"event": "run", "cut')  # what a full disk left of an earlier line
    argv = ["reconcile", "-f", str(broken), "--lock-file", str(tmp_path / "lock"), "--quiet"]
    runner.invoke(app, [*argv, "--log-file", str(log)])
    first, second = log.read_text().splitlines()
    assert first == '{"event": "run", "cut'
    assert json.loads(second)["event"] == "run"
