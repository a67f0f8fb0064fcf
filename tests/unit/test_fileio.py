"""Files written whole or not at all: short writes are finished, a full disk is an error naming
the file, and the file being replaced is left as it was. Pure apart from files in tmp_path;
``os.write`` is monkeypatched to write few bytes or to fail as a full disk does."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from lxdgpu_reconcile import fileio, service
from lxdgpu_reconcile.cli import saved as saved_plans
from lxdgpu_reconcile.errors import ToolError
from tests.unit.planning import support
from tests.unit.report.test_sensitive import SECRET, TOKEN_SET_BY_HAND

BIG = "".join(f"line {i:05d} of a long file\n" for i in range(1000))  # ~28 KB


def _short_writes(monkeypatch: pytest.MonkeyPatch, size: int = 4096) -> None:
    real = os.write

    def short(fd: int, data: bytes) -> int:
        return real(fd, bytes(data[:size]))

    monkeypatch.setattr(os, "write", short)


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    real = os.write
    written = [0]

    def full(fd: int, data: bytes) -> int:
        if written[0] >= size:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real(fd, bytes(data[: size - written[0]]))
        written[0] += n
        return n

    monkeypatch.setattr(os, "write", full)


def test_write_atomic_finishes_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _short_writes(monkeypatch)
    path = tmp_path / "plan.json"
    fileio.write_atomic(path, BIG)
    assert path.read_text() == BIG
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_write_atomic_on_a_full_disk_fails_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "metrics.prom"
    path.write_text("old\n")
    _disk_full_after(monkeypatch, 4096)
    with pytest.raises(fileio.FileWriteError) as caught:
        fileio.write_atomic(path, BIG)
    assert caught.value.message.startswith(
        f"cannot write {path}: no space left on the device (the disk is full); 4096 of "
    )
    assert "df -h" in caught.value.hint
    assert isinstance(caught.value, ToolError)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.prom"]  # no temporary file left


def test_a_write_that_takes_nothing_is_an_error_not_a_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(fileio.FileWriteError) as caught:
        fileio.write_atomic(tmp_path / "x", "text")
    assert "the disk is full" in caught.value.message


def test_append_text_finishes_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "log" / "reconcile.jsonl"
    fileio.append_text(log, "first\n")
    _short_writes(monkeypatch, size=100)
    fileio.append_text(log, BIG)
    assert log.read_text() == "first\n" + BIG


def test_append_text_on_a_full_disk_fails_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "reconcile.jsonl"
    _disk_full_after(monkeypatch, 4096)
    with pytest.raises(fileio.FileWriteError) as caught:
        fileio.append_text(log, BIG)
    assert caught.value.message.startswith(f"cannot write {log}: no space left on the device")
    assert f"4096 of {len(BIG)} bytes were written" in caught.value.message


def _planned() -> service.Planned:
    fleet = support.fleet_from(TOKEN_SET_BY_HAND["fleet"])
    site = support.site_from(None)
    snapshot = support.snapshot_from(TOKEN_SET_BY_HAND["observed"], fleet, site)
    return service.Planned(plan=support.plan_scenario(TOKEN_SET_BY_HAND), snapshot=snapshot)


def _fleet(tmp_path: Path) -> tuple[Path, str]:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("version: 1\n")
    return fleet, hashlib.sha256(fleet.read_bytes()).hexdigest()


def test_plan_out_is_written_whole_and_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet, digest = _fleet(tmp_path)
    out = tmp_path / "plan.json"
    _short_writes(monkeypatch, size=512)
    saved_plans.write(out, _planned(), fleet_path=fleet, digest=digest, lab=None)
    text = out.read_text()
    assert text.endswith("}\n") and len(text) > 512
    assert SECRET not in text and "(sensitive value)" in text


def test_plan_out_on_a_full_disk_is_an_error_and_saves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet, digest = _fleet(tmp_path)
    out = tmp_path / "plan.json"
    _disk_full_after(monkeypatch, 512)
    with pytest.raises(ToolError) as caught:
        saved_plans.write(out, _planned(), fleet_path=fleet, digest=digest, lab=None)
    assert caught.value.message.startswith(
        f"cannot write {out}: no space left on the device (the disk is full); 512 of "
    )
    assert caught.value.message.endswith("no plan was saved")
    assert not out.exists()
