"""The exclusive lock: a second holder waits a bounded time, then gives up naming the first."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

import pytest

from lxdgpu_reconcile.reconcile import lock


def test_lock_is_taken_and_released(tmp_path: Path) -> None:
    path = tmp_path / "run" / "reconcile.lock"
    with lock.exclusive(path, wait=0, command="reconcile"):
        assert "(reconcile) since" in path.read_text()
        other = os.open(path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    with lock.exclusive(path, wait=0, command="apply"):
        pass
    assert path.read_text().split() == [*lock.HEADER.split(), "free"]  # never truncated


def test_a_held_lock_times_out_after_the_wait_and_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.lock"
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    second = lock.exclusive(path, wait=1.0, command="apply", clock=lambda: clock[0], sleep=sleep)
    with (
        lock.exclusive(path, wait=0, command="reconcile"),
        pytest.raises(lock.LockTimeout) as caught,
        second,
    ):
        pytest.fail("the lock was taken twice")
    assert "(reconcile) since" in caught.value.message
    assert "waited 1 s and did nothing" in caught.value.message
    assert "--lock-wait" in caught.value.hint
    assert 4 <= len(slept) <= 6 and clock[0] >= 1.0


def test_an_unusable_lock_file_says_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    unusable = lock.exclusive(blocker / "reconcile.lock", wait=0, command="reconcile")
    with pytest.raises(lock.LockError) as caught, unusable:
        pass
    assert "cannot open the lock file" in caught.value.message
    assert "--lock-file" in caught.value.hint


# --- only the tool's own lock file is ever used, and nothing is ever truncated --------------------


FLEET_TEXT = "version: 1\nhosts:\n  gpu1: {endpoint: 'https://gpu1:8443'}\n"


def _refused(path: Path) -> lock.LockFileRefused:
    with pytest.raises(lock.LockFileRefused) as caught, lock.exclusive(path, wait=0, command="x"):
        pytest.fail("the lock was taken")
    assert f"refusing to use {path} as the lock file" in caught.value.message
    assert "--lock-file" in caught.value.hint
    return caught.value


def test_a_fleet_file_given_as_the_lock_is_refused_and_left_intact(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET_TEXT)
    refused = _refused(fleet)
    assert "something other than a lxdgpu-reconcile lock" in refused.message
    assert fleet.read_text() == FLEET_TEXT


def test_a_link_to_a_file_is_refused_and_its_target_left_intact(tmp_path: Path) -> None:
    target = tmp_path / "shadow"
    target.write_text("root:$6$secret:19000:0:99999:7:::\n")
    link = tmp_path / "reconcile.lock"
    link.symlink_to(target)
    assert "symbolic link" in _refused(link).message
    assert target.read_text() == "root:$6$secret:19000:0:99999:7:::\n"
    # a link to an empty file too: nothing is written through a link
    empty = tmp_path / "empty"
    empty.write_text("")
    link.unlink()
    link.symlink_to(empty)
    _refused(link)
    assert empty.read_text() == ""


def test_a_second_name_of_another_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("")
    os.link(target, tmp_path / "reconcile.lock")
    assert "hard links" in _refused(tmp_path / "reconcile.lock").message
    assert target.read_text() == ""


def test_a_directory_or_a_fifo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    assert "not a regular file" in _refused(tmp_path / "dir").message
    os.mkfifo(tmp_path / "fifo")
    assert "not a regular file" in _refused(tmp_path / "fifo").message


def test_binary_content_is_refused_and_left_intact(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.lock"
    path.write_bytes(b"\x00\x01\x02" * 10)
    _refused(path)
    assert path.read_bytes() == b"\x00\x01\x02" * 10


def test_a_lock_file_of_an_earlier_version_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.lock"
    path.write_text("pid 42 (reconcile) since 2026-01-01T02:00:00+00:00\n")
    with lock.exclusive(path, wait=0, command="apply"):
        assert path.read_text().startswith(lock.HEADER + "\npid ")
    assert len(path.read_bytes()) == lock.RECORD_SIZE


def test_a_full_disk_at_lock_time_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    path = tmp_path / "reconcile.lock"
    with (
        pytest.raises(lock.LockError) as caught,
        lock.exclusive(path, wait=0, command="reconcile"),
    ):
        pytest.fail("ran without its lock record")
    assert caught.value.message == (
        f"cannot write the lock record to {path}: no space left on the device (the disk is "
        "full); nothing was done"
    )
    assert "df -h" in caught.value.hint


def test_a_short_write_of_the_record_is_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite

    def short(fd: int, data: bytes, offset: int) -> int:
        return real(fd, bytes(data[:7]), offset)

    monkeypatch.setattr(os, "pwrite", short)
    path = tmp_path / "reconcile.lock"
    with lock.exclusive(path, wait=0, command="reconcile"):
        assert "(reconcile) since" in path.read_text()
    assert len(path.read_bytes()) == lock.RECORD_SIZE
