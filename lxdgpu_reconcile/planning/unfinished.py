"""Containers whose create never finished (LXD stopped mid-create). Pure: no I/O.

LXD writes an instance into its database before it unpacks the image into the instance's root
filesystem. When LXD dies in between, the instance stays in the database, managed and tagged as
the tool created it, but without a root filesystem: every start then fails ("Failed to handle
idmapped storage: ... no such file or directory"). LXD 5.0 shows such an instance as:

- ``Stopped``, with ``volatile.base_image`` (it was created from an image), and
- without ``volatile.apply_template``: LXD sets it (to ``create``, or ``copy``) only once the root
  filesystem is in place, and removes it at the first start, and
- without ``volatile.last_state.power``: LXD sets it at every start and stop, so the instance has
  never run.

A container the tool made (``user.lxdgpu.managed`` and the role ``container``) in that state has
never run and held no user data: the plan deletes it and creates it again, without ``--prune``
(the executor checks the same state on the live object before it deletes anything).
"""

from __future__ import annotations

from collections.abc import Mapping

from lxdgpu_reconcile import state

#: The role tag the tool gives the user containers it creates.
CONTAINER_ROLE = "container"


def is_unfinished(status: str, config: Mapping[str, str]) -> bool:
    """Whether a container with ``status`` and local ``config`` is one the tool created whose
    create never finished: no root filesystem, never started."""
    return (
        status == "Stopped"
        and config.get(state.TAG_MANAGED) == "true"
        and config.get(state.TAG_ROLE) == CONTAINER_ROLE
        and "volatile.base_image" in config
        and "volatile.apply_template" not in config
        and "volatile.last_state.power" not in config
    )


def unfinished(obs: state.InstanceObs) -> bool:
    """``is_unfinished`` of an observed container."""
    return obs.type == "container" and is_unfinished(obs.status, obs.config)
