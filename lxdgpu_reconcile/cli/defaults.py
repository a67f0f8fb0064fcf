"""The default values the commands show in ``--help``, as plain constants.

They equal the library's own constants (``tests/unit/test_startup.py`` checks that each one
does); they live here so that registering the commands, and ``--help``, import neither the
service nor LXD's client libraries. Pure, no I/O.
"""

from __future__ import annotations

from pathlib import Path

#: ``service.NAME_THE_FLEET``: what to do when the fleet file cannot be read at all.
NAME_THE_FLEET = "name the fleet file with -f FLEET (default: fleet.yaml in this directory)"
#: ``observe.lxdapi.DEFAULT_TIMEOUT``: seconds each LXD operation may take.
LXD_TIMEOUT = 120.0
#: ``execute.images.DEFAULT_STEP_TIMEOUT``: seconds each build step may run.
STEP_TIMEOUT = 3600.0
#: ``lab.lifecycle.DEFAULT_LAB_DIR``: the lab directory.
LAB_DIR = Path("/var/lib/lxdgpu-reconcile/lab")
