"""The lock options of the commands that write (``apply``, ``reconcile``), and taking the lock."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from lxdgpu_reconcile.cli.common import err_console
from lxdgpu_reconcile.reconcile import lock as locks

#: Exit status when the lock was not acquired within ``--lock-wait``.
EXIT_LOCKED = 4

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
    """Hold the lock for the body; on timeout print who holds it and exit 4.

    ``lock_file`` None means the default file. When it cannot be used at all (not root, no
    ``/run``), a ``required`` lock is an error (exit 1); otherwise the command goes on without it,
    saying so: every write still checks that its object is as planned.
    """
    path = lock_file or locks.DEFAULT_LOCK_FILE
    try:
        with locks.exclusive(path, wait=wait, command=command):
            yield
    except locks.LockTimeout as exc:
        err_console.print(f"{exc.message}\n  what to do: {exc.hint}", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_LOCKED) from None
    except locks.LockError as exc:
        if required or lock_file is not None:
            err_console.print(
                f"{exc.message}\n  what to do: {exc.hint}", markup=False, soft_wrap=True
            )
            raise typer.Exit(1) from None
        err_console.print(
            f"note: {command} runs without the lock ({exc.message}); pass --lock-file PATH to "
            "keep it from interleaving with reconcile",
            markup=False,
            soft_wrap=True,
        )
        yield
