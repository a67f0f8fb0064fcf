"""The lab's record of what it made: one JSON file in the lab directory.

Does I/O (reads and writes ``<lab>/lab.json``). The record is what makes ``lab up`` idempotent
and lets ``lab down`` remove exactly what the lab made and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile.lab.faults import LabError, LabMissingError

STATE_FILE = "lab.json"
#: Record format; bump when the shape changes incompatibly.
STATE_VERSION = 1


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HostLab(Frozen):
    """One lab daemon standing in for one fleet host."""

    name: str
    lxd_dir: str
    port: int
    #: ``https://127.0.0.1:PORT``: what the fleet's host is pointed at.
    endpoint: str
    pid: int | None = None
    #: Whether ``lxd init --preseed`` has configured this ``LXD_DIR``.
    initialised: bool = False
    #: The daemon's own certificate, pinned by the tool (``<LXD_DIR>/server.crt``).
    server_cert: str
    #: Image aliases the lab created on this daemon.
    images: tuple[str, ...] = ()
    #: The host's own system (``etc``: a copy of this machine's /etc; ``home``), bound over
    #: /etc and /home in the daemon's mount namespace; None in a lab made before hosts had one.
    system: str | None = None
    #: The host's sshd (in the daemon's namespace) on 127.0.0.1:``ssh_port``.
    ssh_port: int | None = None
    sshd_pid: int | None = None
    #: The host's name in the lab's OpenSSH client configuration (``ssh -F``).
    ssh_alias: str | None = None
    #: The loopback address the daemon listens on (a lab cluster's members: 127.0.0.N).
    address: str = "127.0.0.1"
    #: A member of a lab cluster (``lab.cluster``): the fleet host it is a member of, and its
    #: LXD ``server_name``. Its record is ``hosts["CLUSTER/MEMBER"]``.
    cluster: str | None = None
    member: str | None = None

    @property
    def socket(self) -> Path:
        return Path(self.lxd_dir) / "unix.socket"


class Veth(Frozen):
    """A veth pair the lab created so that a macvlan NIC has its parent."""

    name: str
    peer: str


class LabState(Frozen):
    """Everything the lab made, with absolute paths."""

    version: int = STATE_VERSION
    dir: str
    #: The tool's client certificate and key, trusted by every lab daemon.
    client_cert: str
    client_key: str
    #: An ``lxc`` configuration directory (``LXD_CONF``) with every lab host as a remote.
    lxc_conf: str
    #: The directory that stands in for ``/`` for host paths (disk sources, CUDA trees, homes).
    host_root: str
    hosts: dict[str, HostLab] = Field(default_factory=dict)
    #: Veths and subuid/subgid lines made by this lab or another one, that this lab uses; each
    #: is counted in the machine's registry (``lab.shared``) and removed by the last lab down.
    veths: tuple[Veth, ...] = ()
    #: Lines a lab made before hosts had systems of their own added to this machine's
    #: /etc/subuid and /etc/subgid; ``lab down`` still releases them. Labs no longer add any.
    subuid_lines: tuple[str, ...] = ()
    subgid_lines: tuple[str, ...] = ()
    #: The OpenSSH client configuration with a ``Host`` block per lab host (``ssh -F``), and
    #: the key it logs in with.
    ssh_config: str | None = None
    ssh_key: str | None = None
    #: Lab clusters: fleet host -> its members' keys in ``hosts`` (``CLUSTER/MEMBER``), the
    #: first the member that bootstrapped the cluster.
    clusters: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    def host(self, name: str) -> HostLab:
        """The lab daemon of ``name`` (a cluster's name: its first member's; ``CLUSTER/MEMBER``:
        that member's); ``LabMissingError`` when the lab has none."""
        try:
            if name in self.clusters and name not in self.hosts:
                return self.hosts[self.clusters[name][0]]
            return self.hosts[name]
        except KeyError:
            known = ", ".join(sorted(self.hosts)) or "none"
            raise LabMissingError(
                f"the lab in {self.dir} has no host {name!r} (it has: {known}); "
                f"run `lxdgpu-reconcile lab up -f FLEET --dir {self.dir}` with a fleet that "
                "declares it"
            ) from None


def state_path(lab_dir: Path) -> Path:
    return lab_dir / STATE_FILE


def load_lab(lab_dir: Path) -> LabState:
    """The record of the lab in ``lab_dir``; ``LabMissingError`` when there is none."""
    path = state_path(lab_dir.absolute())
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LabMissingError(
            f"there is no lab in {lab_dir.absolute()}; "
            f"run `lxdgpu-reconcile lab up -f FLEET --dir {lab_dir.absolute()}` first"
        ) from None
    try:
        return LabState.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise LabError(
            f"{path} is not a lab record this version understands ({exc.__class__.__name__}); "
            "bring the lab down with the version that made it, or remove the directory by hand"
        ) from None


def save_lab(state: LabState) -> None:
    """Write ``state`` atomically, so an interrupted ``lab up`` leaves a usable record; raises
    ``fileio.FileWriteError`` when it cannot be written whole."""
    path = state_path(Path(state.dir))
    fileio.write_atomic(path, json.dumps(state.model_dump(mode="json"), indent=2) + "\n")
