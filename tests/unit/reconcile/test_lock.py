"""The exclusive lock: a second holder waits a bounded time, then gives up naming the first."""

from __future__ import annotations

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
    assert path.read_text() == ""


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
