"""The local lab: one real LXD daemon per fleet host on this machine, to rehearse a fleet.

Does I/O (see ``lab.lifecycle``). ``lab_up`` starts the daemons and prepares what the fleet's
profiles and users need; ``use_lab`` points a fleet at them; ``lab_down`` removes it all.
"""

from __future__ import annotations

from lxdgpu_reconcile.lab.faults import LabError, LabMissingError, LabPrerequisiteError
from lxdgpu_reconcile.lab.lifecycle import DEFAULT_LAB_DIR, lab_down, lab_env, lab_up
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
    "lab_site",
    "lab_up",
    "load_lab",
    "needs_of",
    "rebase_fleet",
    "site_for",
    "use_lab",
]
