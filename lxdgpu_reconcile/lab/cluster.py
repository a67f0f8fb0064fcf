"""A real LXD cluster in the lab: one daemon per member, clustered on loopback.

A fleet host with ``cluster:`` is made in the lab as N daemons (its ``cluster.members``, or
``node1`` and ``node2``), each a lab host of its own (its own system, namespace and sshd, made by
``lab.lifecycle`` like any lab host) recorded as ``hosts["CLUSTER/MEMBER"]``. Member N listens
on 127.0.0.N (every 127.0.0.x is on the loopback interface) and a port of its own; its LXD
``server_name`` is the member's name. The first member bootstraps the cluster; each other one
joins it with a token (``lxc cluster add MEMBER --quiet`` on the first) and a preseed whose
``member_config`` gives the ``default`` dir pool its (empty, per-member) source. The cluster
shares its trust store, images and profiles: the tool's client certificate and the stand-in
images are added once. Every member serves the cluster's certificate
(``LXD_DIR/cluster.crt``), which is what the fleet pins.

A member whose daemon is started again with its ``LXD_DIR`` rejoins the cluster by itself.
``cluster.offline_threshold`` is set to its minimum (``OFFLINE_THRESHOLD``) so that a stopped
member shows as offline within seconds, not the default 20.

Preseed texts are pure; the rest does I/O (``lxc cluster add``, the members' unix sockets).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lxdgpu_reconcile.lab import daemon
from lxdgpu_reconcile.lab.faults import LabError
from lxdgpu_reconcile.lab.needs import member_key
from lxdgpu_reconcile.lab.record import HostLab, LabState, save_lab
from lxdgpu_reconcile.lab.sock import LxdSocket
from lxdgpu_reconcile.lab.system import run

#: Seconds without a heartbeat after which LXD calls a member offline (LXD wants more than 10).
OFFLINE_THRESHOLD = 11
#: How long ``lab up`` waits for every member to be listed online.
ONLINE_TIMEOUT = 90.0
#: The status LXD lists a member that answers with (``lxc cluster list``: ONLINE).
ONLINE = "Online"


def address_of(index: int) -> str:
    """The loopback address of the member at ``index`` (0: the first)."""
    if not 0 <= index < 254:
        raise LabError("a lab cluster has at most 254 members")
    return f"127.0.0.{index + 1}"


def add_members(state: LabState, name: str, members: Sequence[str], *, taken: set[int]) -> LabState:
    """``state`` with a record for each member of cluster ``name`` it does not have yet (a new
    port each, the next loopback address), saved."""
    keys = list(state.clusters.get(name, ()))
    hosts = dict(state.hosts)
    for member in members:
        key = member_key(name, member)
        if key in keys:
            continue
        port = daemon.free_port(taken)
        taken.add(port)
        address = address_of(len(keys))
        lxd_dir = Path(state.dir) / "hosts" / name / member
        hosts[key] = HostLab(
            name=key,
            lxd_dir=str(lxd_dir),
            port=port,
            endpoint=f"https://{address}:{port}",
            server_cert=str(lxd_dir / "cluster.crt"),
            address=address,
            cluster=name,
            member=member,
        )
        keys.append(key)
    state = state.model_copy(
        update={"hosts": hosts, "clusters": {**state.clusters, name: tuple(keys)}}
    )
    save_lab(state)
    return state


def bootstrap_preseed(host: HostLab) -> str:
    """``lxd init --preseed`` text that makes ``host`` the first member of a new cluster."""
    doc: dict[str, Any] = yaml.safe_load(daemon.preseed(host.port, host.address))
    doc["config"]["cluster.https_address"] = f"{host.address}:{host.port}"
    doc["cluster"] = {"server_name": host.member, "enabled": True}
    return yaml.safe_dump(doc, sort_keys=False)


def join_preseed(host: HostLab, first: HostLab, token: str) -> str:
    """``lxd init --preseed`` text that joins ``host`` to ``first``'s cluster with ``token``."""
    doc = {
        "config": {"core.https_address": f"{host.address}:{host.port}"},
        "cluster": {
            "enabled": True,
            "server_name": host.member,
            "server_address": f"{host.address}:{host.port}",
            "cluster_address": f"{first.address}:{first.port}",
            "cluster_token": token,
            "member_config": [
                {"entity": "storage-pool", "name": "default", "key": "source", "value": ""}
            ],
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def initialiser(state: LabState, name: str, key: str) -> Callable[[HostLab], None]:
    """What configures member ``key``'s fresh ``LXD_DIR``: the bootstrap for the first member,
    a join with a new token from the first for the others."""
    first_key = state.clusters[name][0]
    if key == first_key:
        return _bootstrap

    def join(host: HostLab) -> None:
        first = state.hosts[first_key]
        token = _token(first, str(host.member), state.lxc_conf)
        daemon.initialise(host, join_preseed(host, first, token))

    return join


def _bootstrap(host: HostLab) -> None:
    """Make ``host`` the first member, then shorten ``cluster.offline_threshold`` (a key that
    LXD 5.0.2 breaks the connection on when it is set before the server is clustered, in a
    preseed too)."""
    daemon.initialise(host, bootstrap_preseed(host))
    body = {"config": {"cluster.offline_threshold": str(OFFLINE_THRESHOLD)}}
    LxdSocket(host.socket).call("PATCH", "/1.0", json_body=body)


def _token(first: HostLab, member: str, lxc_conf: str) -> str:
    """A join token for ``member`` from the first member (a token left by an interrupted
    ``lab up`` is revoked first). It goes to the joining member's preseed on standard input,
    never on a command line."""
    env = {"LXD_DIR": first.lxd_dir, "LXD_CONF": lxc_conf}
    with contextlib.suppress(LabError):  # there was none
        run(["lxc", "cluster", "revoke-token", member], env=env, what="lxc cluster revoke-token")
    out = run(
        ["lxc", "cluster", "add", member, "--quiet"],
        env=env,
        what=f"{first.name}: lxc cluster add {member}",
    )
    return out.strip()


def members_status(first: HostLab) -> dict[str, str]:
    """Each member's status as the first member lists it (``GET /1.0/cluster/members``)."""
    listed = LxdSocket(first.socket).call("GET", "/1.0/cluster/members?recursion=1") or []
    return {str(m.get("server_name")): str(m.get("status")) for m in listed}


def wait_online(
    state: LabState, name: str, *, say: Callable[[str], None], timeout: float = ONLINE_TIMEOUT
) -> None:
    """Wait until the first member lists every member of cluster ``name`` online."""
    keys = state.clusters[name]
    first = state.hosts[keys[0]]
    wanted = [str(state.hosts[k].member) for k in keys]
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = members_status(first)
        if all(status.get(m) == ONLINE for m in wanted):
            say(f"{name}: cluster members {', '.join(wanted)} online")
            return
        time.sleep(0.5)
    late = ", ".join(f"{m} {status.get(m, 'missing').lower()}" for m in wanted)
    raise LabError(
        f"{name}: not every cluster member came online within {timeout:.0f}s ({late}); see "
        "each member's lxd.log, then run `lxdgpu-reconcile lab up` again"
    )
