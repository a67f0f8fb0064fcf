"""The one base of the tool's own errors: what went wrong, and what to do next. Pure.

Every problem the admin can act on (a fleet file that cannot be used, a host that does not
answer, a stale saved plan, a lock held by another run, a lab that cannot start) is raised as a
``ToolError`` subclass by the library, carrying ``message`` and ``hint``. The command line
turns one into output and an exit status in one place (``cli.app.ToolErrorGroup``); nothing
below the command line exits the process or prints.
"""

from __future__ import annotations


class ToolError(Exception):
    """A problem the admin can act on: ``message`` says what went wrong, ``hint`` what to do.

    ``exit_status`` is the status the command line exits with when nothing catches it.
    """

    exit_status: int = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message
