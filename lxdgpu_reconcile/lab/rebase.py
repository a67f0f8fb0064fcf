"""Point a fleet at its lab: every host's endpoint and certificates become the lab daemon's, and
its SSH destination the lab's sshd for that host.

``rebase_fleet`` and ``lab_site`` are pure; ``use_lab`` reads the lab's record.
"""

from __future__ import annotations

from pathlib import Path

from lxdgpu_reconcile.fleet.models import Cluster, Fleet, Host
from lxdgpu_reconcile.lab.faults import LabMissingError
from lxdgpu_reconcile.lab.record import HostLab, LabState, load_lab
from lxdgpu_reconcile.site import REAL, Site


def rebase_fleet(fleet: Fleet, state: LabState) -> Fleet:
    """``fleet`` with each host reached through its lab daemon, over pinned https, and its own
    system over SSH through the lab's sshd for it (``hosts.X.ssh``: its name in the lab's
    ``ssh -F`` configuration). A host without a lab sshd (a lab made by an older version) gets
    no ``ssh``: its host layer is left alone rather than reached on the real host. A cluster
    host is reached through its first member (the others are ``cluster.endpoints``), with the
    cluster's certificate pinned, and each member's system through that member's lab sshd
    (``cluster.ssh``)."""
    missing = [n for n in fleet.hosts if n not in state.hosts and n not in state.clusters]
    if missing:
        raise LabMissingError(
            f"the lab in {state.dir} has no host {', '.join(missing)}; "
            f"run `lxdgpu-reconcile lab up -f FLEET --dir {state.dir}` with this fleet"
        )
    hosts = {
        name: host.model_copy(
            update={
                "endpoint": state.host(name).endpoint,
                "client_cert": state.client_cert,
                "client_key": state.client_key,
                "server_cert": state.host(name).server_cert,
                "ssh": _ssh_of(state.host(name), state) if host.cluster is None else None,
                **_cluster_of(host, name, state),
            }
        )
        for name, host in fleet.hosts.items()
    }
    return fleet.model_copy(update={"hosts": hosts})


def _cluster_of(host: Host, name: str, state: LabState) -> dict[str, Cluster]:
    """For a cluster host made as a lab cluster: the other members' endpoints as fallbacks
    (``endpoint`` is the first member's), each member's lab sshd (``cluster.ssh``)."""
    if host.cluster is None or name not in state.clusters:
        return {}
    members = [state.hosts[key] for key in state.clusters[name]]
    ssh = {m.member: _ssh_of(m, state) for m in members if m.member is not None}
    return {
        "cluster": host.cluster.model_copy(
            update={
                "endpoints": tuple(m.endpoint for m in members[1:]),
                "ssh": {member: dest for member, dest in ssh.items() if dest is not None},
            }
        )
    }


def _ssh_of(host: HostLab, state: LabState) -> str | None:
    if state.ssh_config is None or host.ssh_port is None or host.ssh_alias is None:
        return None
    return host.ssh_alias


def lab_site(state: LabState) -> Site:
    """Shared host paths rooted in the lab, homes in each lab host's own /home, the lab's ssh
    configuration, no GPUs."""
    return Site(
        host_root=state.host_root,
        attach_gpus=False,
        lab_dir=state.dir,
        ssh_config=state.ssh_config,
        own_homes=state.ssh_config is not None,
    )


def use_lab(fleet: Fleet, lab_dir: Path) -> tuple[Fleet, Site]:
    """``fleet`` pointed at the lab in ``lab_dir``, and the lab's ``Site``."""
    state = load_lab(lab_dir)
    return rebase_fleet(fleet, state), lab_site(state)


def site_for(fleet: Fleet, lab_dir: Path | None) -> tuple[Fleet, Site]:
    """For commands with ``--lab``: the fleet as is on real hosts, or pointed at the lab."""
    if lab_dir is None:
        return fleet, REAL
    return use_lab(fleet, lab_dir)
