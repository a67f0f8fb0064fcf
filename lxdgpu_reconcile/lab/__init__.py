"""The local lab: one real LXD daemon per fleet host on this machine, to rehearse a fleet.

Does I/O (see ``lab.lifecycle``). ``lab_up`` starts the daemons, each with a system of its own
(its own /etc and /home in a mount namespace) and an sshd, and prepares what the fleet's profiles
need; ``use_lab`` points a fleet at them; ``lab_exec`` runs a command on a lab host;
``lab_down`` removes it all.
"""

from __future__ import annotations

from lxdgpu_reconcile.lab.faults import LabError, LabMissingError, LabPrerequisiteError
from lxdgpu_reconcile.lab.lifecycle import DEFAULT_LAB_DIR, lab_down, lab_env, lab_exec, lab_up
from lxdgpu_reconcile.lab.needs import LabNeeds, needs_of
from lxdgpu_reconcile.lab.rebase import lab_site, rebase_fleet, site_for, use_lab
from lxdgpu_reconcile.lab.record import HostLab, LabState, Veth, load_lab

__all__ = [
    "DEFAULT_LAB_DIR",
    "HostLab",
    "LabError",
    "LabMissingError",
    "LabNeeds",
    "LabPrerequisiteError",
    "LabState",
    "Veth",
    "lab_down",
    "lab_env",
    "lab_exec",
    "lab_site",
    "lab_up",
    "load_lab",
    "needs_of",
    "rebase_fleet",
    "site_for",
    "use_lab",
]
