"""The fleet file read and located: on its real hosts or in the lab. Does I/O (reads files).

``read_fleet`` reads the fleet file (its warnings as data), ``locate`` decides where its hosts
are (the real ones, or the lab's daemons with ``--lab``; the host layer over ssh, or this machine
with ``--local``) and checks that each can be connected to as configured; ``load`` does both.
The service layer (``service``) plans and applies what this returns; every problem is a
``ToolError`` subclass.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile import lab as labs
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.fleet.loading import Problem, load_fleet
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.site import Site
from lxdgpu_reconcile.templates.sources import template_files

#: What to do when the fleet file cannot be read at all.
NAME_THE_FLEET = "name the fleet file with -f FLEET (default: fleet.yaml in this directory)"


class FleetProblems(ToolError):
    """The fleet file cannot be used: ``problems`` (sorted, each ``FILE:LINE:COL: path: msg``)."""

    def __init__(self, problems: tuple[Problem, ...], hint: str) -> None:
        super().__init__("\n".join(str(p) for p in problems), hint)
        self.problems = problems


class UnusableLab(ToolError):
    """The lab given with ``--lab`` cannot be used (the message starts with ``lab: ``)."""


class UnusableHosts(ToolError):
    """Hosts that cannot be connected to as the fleet file configures them, one error each."""

    def __init__(self, errors: tuple[connecting.HostConnectError, ...]) -> None:
        super().__init__("\n".join(e.message for e in errors), errors[-1].hint if errors else "")
        self.errors = errors


# --- the fleet ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetRead:
    """A usable fleet file: the fleet as written, and the warnings worth showing."""

    fleet: Fleet
    path: Path
    warnings: tuple[Problem, ...] = ()


def read_fleet(fleet_path: Path, *, certs: bool) -> FleetRead:
    """The fleet in ``fleet_path``; raises ``FleetProblems`` with every error.

    ``certs``: missing certificate files of https hosts are errors too (for commands that
    connect to the real hosts, and ``validate``); without it they are not reported at all.
    """
    result = load_fleet(fleet_path)
    errors = tuple(p for p in result.reported(certs=certs) if p.severity == "error")
    if errors or result.fleet is None:
        raise FleetProblems(errors, fix_fleet_hint(fleet_path))
    return FleetRead(fleet=result.fleet, path=fleet_path, warnings=result.warnings)


def fix_fleet_hint(fleet_path: Path) -> str:
    """What to do about a fleet file that could not be used."""
    if not fleet_path.is_file():
        return NAME_THE_FLEET
    return f"fix the fleet file (`lxdgpu-reconcile validate -f {fleet_path}`) and run again"


def fleet_digest(path: Path) -> str:
    """The SHA-256 of the fleet file at ``path``; raises ``ToolError`` when it cannot be read."""
    try:
        return fileio.sha256_of(path)
    except OSError as exc:
        raise ToolError(
            f"cannot read the fleet file {path}: {exc.strerror or exc}",
            "give its path with -f FLEET",
        ) from None


@dataclass(frozen=True)
class Loaded:
    """A fleet ready for its hosts: pointed at the lab when one is given, every host usable.

    ``template_files`` (the contents of every template's files, read relative to the fleet file)
    is read on first use and kept; reading raises ``TemplateFileError``.
    """

    fleet: Fleet
    site: Site
    path: Path
    warnings: tuple[Problem, ...] = ()

    @functools.cached_property
    def template_files(self) -> Mapping[str, Mapping[str, bytes]]:
        return {
            name: template_files(template, self.path.parent)
            for name, template in self.fleet.templates.items()
        }


def locate(read: FleetRead, lab: Path | None, *, local: bool = False) -> Loaded:
    """``read`` on the real hosts, or pointed at the lab in ``lab``; checks that every host can
    be connected to as configured (certificate files present and readable). ``local``
    (``--local``): the host layer of the hosts is this machine's own system, not reached by ssh.

    Raises ``UnusableLab`` or ``UnusableHosts``.
    """
    fleet, site = _site_for(read, lab, local=local)
    unusable = tuple(
        found
        for name, host in fleet.hosts.items()
        if (found := connecting.check_config(name, host))
    )
    if unusable:
        raise UnusableHosts(unusable)
    return Loaded(fleet=fleet, site=site, path=read.path, warnings=read.warnings)


def load(fleet_path: Path, lab: Path | None, *, local: bool = False) -> Loaded:
    """``read_fleet`` then ``locate``: certificates are required unless ``lab`` is given."""
    return locate(read_fleet(fleet_path, certs=lab is None), lab, local=local)


def locate_offline(read: FleetRead, lab: Path | None, *, local: bool = False) -> Loaded:
    """``locate`` for planning against a snapshot file (``plan --state``): no host is connected
    to, so certificate files are not checked (read ``read`` with ``certs=False``)."""
    fleet, site = _site_for(read, lab, local=local)
    return Loaded(fleet=fleet, site=site, path=read.path, warnings=read.warnings)


def _site_for(read: FleetRead, lab: Path | None, *, local: bool) -> tuple[Fleet, Site]:
    """The fleet and its site: the real hosts or the lab in ``lab``, with the host layer on
    this machine when ``local``. Raises ``UnusableLab``."""
    if local and lab is not None:
        raise UnusableLab(
            "lab: --local with --lab: each lab host has a system of its own, reached over ssh; "
            "--local would change this machine's accounts instead",
            "run without --local in the lab (or without --lab on the server itself)",
        )
    try:
        fleet, site = labs.site_for(read.fleet, lab)
    except labs.LabError as exc:
        raise UnusableLab(f"lab: {exc.message}", exc.hint) from None
    except OSError as exc:
        raise unreadable_lab(lab, exc) from None
    return fleet, site.model_copy(update={"local": True}) if local else site


# --- the lab --------------------------------------------------------------------------------------


def lab_env(lab_dir: Path, host: str) -> str:
    """The shell lines that point ``lxc`` at ``host``'s lab daemon; raises ``LabError``, or
    ``UnusableLab`` when the lab directory cannot be read at all."""
    try:
        return labs.lab_env(lab_dir, host)
    except OSError as exc:
        raise unreadable_lab(lab_dir, exc) from None


def unreadable_lab(lab_dir: Path | None, exc: OSError) -> UnusableLab:
    """The error for a lab directory that cannot be read at all (not a directory, no access)."""
    return UnusableLab(
        f"lab: cannot read the lab in {lab_dir}: {exc.strerror or exc}",
        "give --lab (or LXDGPU_LAB) the directory `lxdgpu-reconcile lab up` made",
    )
