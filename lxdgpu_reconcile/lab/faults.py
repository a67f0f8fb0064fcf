"""Errors of the local lab: each message says what went wrong and what to do next.

Pure: exception classes only.
"""

from __future__ import annotations

from lxdgpu_reconcile.errors import ToolError


class LabError(ToolError):
    """A lab operation failed; the message ends with what the admin can do about it."""


class LabMissingError(LabError):
    """The lab directory has no lab, or its lab lacks a host of the fleet."""


class LabPrerequisiteError(LabError):
    """The machine cannot run a lab: not root, or LXD cannot be installed."""
