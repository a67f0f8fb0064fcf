"""Where a fleet is realised: on its real hosts, or rehearsed in the local lab.

Pure data. The lab (``lxdgpu_reconcile.lab``) returns a ``Site`` that roots every host-side path
inside the lab directory and leaves GPUs unattached; everything else uses ``REAL``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Site(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Prefix for every host-side path (disk sources, CUDA trees, homes); "" on real hosts.
    host_root: str = ""
    #: False in the lab: GPU devices and ``nvidia.*`` keys are planned but not written to LXD.
    attach_gpus: bool = True
    #: The lab directory when rehearsing in the lab.
    lab_dir: str | None = None
    #: An OpenSSH client configuration file (``ssh -F``) for reaching the hosts; None: the
    #: admin's own (``~/.ssh/config``). The lab writes one for its hosts' sshd.
    ssh_config: str | None = None
    #: Read and change the host layer (accounts, homes, delegations) of every host on the
    #: machine itself, not over SSH (``--local``: the tool runs on the server it manages).
    local: bool = False
    #: Each host has a /home of its own (the lab: every lab host's /home is its own, in its
    #: namespace), so homes below /home are not moved under ``host_root``.
    own_homes: bool = False

    def host_path(self, path: str) -> str:
        """``path`` on the host as LXD must see it on this site."""
        if not self.host_root:
            return path
        return self.host_root.rstrip("/") + "/" + path.lstrip("/")

    def home_dir(self, path: str) -> str:
        """A user's home (``defaults.home_source`` filled in) on the host as LXD, and the host
        layer, must see it on this site: as written when the hosts have homes of their own and
        it is below /home, else like any host path (``host_path``)."""
        if self.own_homes and path.startswith("/home/"):
            return path
        return self.host_path(path)


REAL = Site()
