"""The fixed ledger scripts of ``execute.host_actions``, run for real by this machine's ``sh``
in a temporary directory (the ledger directory is their first argument): the actions of one
host run at once, so the scripts must not lose or keep a line by a race."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lxdgpu_reconcile.execute import host_actions
from lxdgpu_reconcile.observe.hostshell import CommandResult
from lxdgpu_reconcile.observe.transport import LocalShell

LINES = [f"{file}:{ident}" for ident in range(1000, 1040) for file in ("subuid", "subgid")]


def _run(script: str, ledger: Path, line: str) -> CommandResult:
    return LocalShell().run(["sh", "-c", script, host_actions.LEDGER_NAME, str(ledger), line])


def _ledger(ledger: Path) -> list[str]:
    return (ledger / "delegations").read_text().splitlines()


def test_ledger_lines_added_and_dropped_at_once_are_neither_lost_nor_kept(tmp_path: Path) -> None:
    ledger = tmp_path / "etc" / "lxdgpu-reconcile"
    with ThreadPoolExecutor(16) as pool:
        added = list(pool.map(lambda line: _run(host_actions.LEDGER_ADD, ledger, line), LINES))
    assert [r.returncode for r in added] == [0] * len(LINES)
    assert sorted(_ledger(ledger)) == sorted(LINES)
    (ledger / "delegations").chmod(0o640)

    with ThreadPoolExecutor(16) as pool:
        dropped = list(
            pool.map(lambda line: _run(host_actions.LEDGER_DROP, ledger, line), LINES[::2])
        )

    assert [r.returncode for r in dropped] == [0] * len(LINES[::2])
    assert sorted(_ledger(ledger)) == sorted(LINES[1::2])
    assert stat.S_IMODE(os.stat(ledger / "delegations").st_mode) == 0o640
    assert sorted(os.listdir(ledger)) == ["delegations", "lock"]  # no temporary file left


def test_a_ledger_line_is_added_once_and_checked_exactly(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    for _ in range(2):
        assert _run(host_actions.LEDGER_ADD, ledger, "subuid:1003").returncode == 0
    assert _ledger(ledger) == ["subuid:1003"]
    assert _run(host_actions.LEDGER_HAS, ledger, "subuid:1003").returncode == 0
    assert _run(host_actions.LEDGER_HAS, ledger, "subuid:100").returncode == 1
    assert _run(host_actions.LEDGER_DROP, ledger, "subuid:100").returncode == 0
    assert _ledger(ledger) == ["subuid:1003"]
