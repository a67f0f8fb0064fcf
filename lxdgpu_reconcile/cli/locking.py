"""The lock options of the commands that write (``apply``, ``build``, ``reconcile``), and taking
the lock.

Does I/O: takes the lock file (``reconcile.lock``); prints a note when going on without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from lxdgpu_reconcile.cli.common import err_console
from lxdgpu_reconcile.reconcile import lock as locks

#: Exit status when the lock was not acquired within ``--lock-wait``.
EXIT_LOCKED = locks.LockTimeout.exit_status

LockFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--lock-file",
        envvar="LXDGPU_LOCK_FILE",
        help="Lock file shared by every apply and reconcile run of this fleet. Default: "
        f"{locks.DEFAULT_LOCK_FILE}.",
        show_default=False,
    ),
]
LockWaitOpt = Annotated[
    float,
    typer.Option(
        "--lock-wait",
        help="Seconds to wait for another run to release the lock before giving up (exit 4).",
        min=0,
    ),
]


@contextmanager
def held(lock_file: Path | None, wait: float, command: str, *, required: bool) -> Iterator[None]:
    """Hold the lock for the body; raises ``LockTimeout`` (exit 4) when another run holds it.

    ``lock_file`` None means the default file. When it cannot be used at all (not root, no
    ``/run``), a ``required`` lock (or one given with ``--lock-file``) raises ``LockError``
    (exit 1); otherwise the command goes on without it, saying so: every write still checks that
    its object is as planned. A path that is not the tool's own lock file (a link, another
    file) always raises ``LockFileRefused`` (exit 1).
    """
    path = lock_file or locks.DEFAULT_LOCK_FILE
    try:
        with locks.exclusive(path, wait=wait, command=command):
            yield
    except locks.LockError as exc:
        if isinstance(exc, locks.LockTimeout | locks.LockFileRefused):
            raise
        if required or lock_file is not None:
            raise
        err_console.print(
            f"note: {command} runs without the lock ({exc.message}); pass --lock-file PATH to "
            "keep it from interleaving with reconcile",
            markup=False,
            soft_wrap=True,
        )
        yield
