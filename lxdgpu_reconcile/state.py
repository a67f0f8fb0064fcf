"""Observed LXD state: an immutable snapshot of every host, pure data.

``observe`` produces a ``FleetSnapshot``; the diff and the planner read it; ``status`` renders it.
Nothing here does I/O. Values are kept as LXD returns them (config values are strings), so the
snapshot is also what a saved plan records and what tests build by hand.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

#: Prefix of every key this tool writes into LXD config and image properties.
TAG_PREFIX = "user.lxdgpu."
#: Marks an object as created (or adopted) and managed by this tool.
TAG_MANAGED = "user.lxdgpu.managed"
#: The fleet user a container belongs to.
TAG_USER = "user.lxdgpu.user"
#: Hash of the desired spec the object was last written from.
TAG_SPEC_HASH = "user.lxdgpu.spec-hash"
#: Kind of object, e.g. ``container``, ``cuda``, ``profile``, ``build``.
TAG_ROLE = "user.lxdgpu.role"
#: On user containers: ``HOST/NAME``, where and under which name the tool created it. Written
#: in the create request and never again, so a copy (``lxc copy``, which copies every
#: ``user.*`` key) carries a value that is not its own host and name.
TAG_CREATED_AS = "user.lxdgpu.created-as"
#: On a container moved to another host or renamed: ``HOST/NAME`` it moves to. Written when its
#: move stops it, before the copy; the move is finished once ``TAG_MOVED_AT`` is written too.
TAG_MOVED_TO = "user.lxdgpu.moved-to"
#: On a moved container: when its move finished (UTC, ISO 8601). It then stays, stopped, until
#: ``--prune`` deletes it.
TAG_MOVED_AT = "user.lxdgpu.moved-at"
#: On images the local lab imported as stand-ins for a fleet's base and template aliases.
TAG_LAB = "user.lxdgpu.lab"


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Address(Frozen):
    """One address of a running instance, as ``/1.0/instances/NAME/state`` lists it."""

    interface: str
    family: str  # "inet" or "inet6"
    address: str
    netmask: str = ""
    scope: str = ""  # "global", "link", "local"


class InstanceObs(Frozen):
    """An instance as LXD reports it (``recursion`` form)."""

    name: str
    type: str = "container"
    status: str  # "Running", "Stopped", "Frozen", ...
    description: str = ""
    profiles: tuple[str, ...] = ()
    config: dict[str, str] = Field(default_factory=dict)
    devices: dict[str, dict[str, str]] = Field(default_factory=dict)
    expanded_config: dict[str, str] = Field(default_factory=dict)
    expanded_devices: dict[str, dict[str, str]] = Field(default_factory=dict)
    addresses: tuple[Address, ...] = ()
    created_at: str = ""
    #: The cluster member the instance lives on; "" on a host that is not a cluster.
    location: str = ""

    @property
    def managed(self) -> bool:
        return self.config.get(TAG_MANAGED) == "true"

    @property
    def running(self) -> bool:
        return self.status == "Running"


class ProfileObs(Frozen):
    name: str
    description: str = ""
    config: dict[str, str] = Field(default_factory=dict)
    devices: dict[str, dict[str, str]] = Field(default_factory=dict)
    used_by: tuple[str, ...] = ()

    @property
    def managed(self) -> bool:
        return self.config.get(TAG_MANAGED) == "true"


class ImageObs(Frozen):
    fingerprint: str
    aliases: tuple[str, ...] = ()
    properties: dict[str, str] = Field(default_factory=dict)
    public: bool = False
    size: int = 0
    created_at: str = ""
    architecture: str = ""

    @property
    def managed(self) -> bool:
        return self.properties.get(TAG_MANAGED) == "true"


class PoolObs(Frozen):
    name: str
    driver: str
    status: str = ""


class GpuObs(Frozen):
    """One GPU card from ``/1.0/resources``."""

    id: int  # the DRM id LXD's gpu device ``id=`` refers to, or the card's index
    vendor: str = ""
    product: str = ""
    driver: str = ""
    pci_address: str = ""
    nvidia_uuid: str = ""


class MemberObs(Frozen):
    """One member of a cluster host: ``/1.0/cluster/members`` and, when it is online, its
    own ``/1.0/resources?target=NAME``."""

    name: str
    status: str  # "Online", "Offline", "Evacuated", ...
    url: str = ""
    message: str = ""
    cpus: int = 0
    gpus: tuple[GpuObs, ...] = ()
    memory_total: int | None = None
    memory_used: int | None = None

    @property
    def online(self) -> bool:
        return self.status == "Online"


class HostErrorKind(StrEnum):
    UNREACHABLE = "unreachable"
    UNTRUSTED = "untrusted"
    CERTIFICATE = "certificate"
    TIMEOUT = "timeout"
    CONFIG = "config"
    ERROR = "error"


class HostError(Frozen):
    """Why a host could not be observed, and what the admin can do about it."""

    kind: HostErrorKind
    message: str
    hint: str = ""


class AccountObs(Frozen):
    """A host account as ``getent passwd`` lists it."""

    name: str
    uid: int
    gid: int
    home: str = ""
    shell: str = ""


class GroupObs(Frozen):
    """A host group as ``getent group`` lists it."""

    name: str
    gid: int


class PathObs(Frozen):
    """A host path: whether it exists, and its kind, owner and mode when it does."""

    path: str
    exists: bool
    kind: str = ""  # "directory", "regular file", "symbolic link", ... (``stat -c %F``)
    uid: int | None = None
    gid: int | None = None
    mode: str = ""  # octal permission bits as ``stat -c %a`` prints them, e.g. "750"


class SubId(Frozen):
    """One line of /etc/subuid or /etc/subgid: ``owner:start:count``."""

    owner: str
    start: int
    count: int

    def covers(self, ident: int, owner: str = "root") -> bool:
        return self.owner == owner and self.start <= ident < self.start + self.count


class HostFacts(Frozen):
    """What a host's own system says and LXD's API cannot (read over SSH, or locally).

    Read for the fleet's users, homes and disk sources only: ``accounts`` holds every account
    named like a fleet user or holding a fleet uid, ``groups`` every group holding a fleet gid
    or named like a fleet user, ``paths`` every home and disk source asked about. ``delegated``
    lists the delegations the tool itself added (its ledger on the host, lines such as
    ``subuid:1003``), the only ones it may remove. ``nvidia`` is ``nvidia-smi -L``'s lines, or
    None when the host has no ``nvidia-smi``.
    """

    #: How the facts were read: "ssh root@server01", "local", ...
    via: str
    error: HostError | None = None
    accounts: tuple[AccountObs, ...] = ()
    groups: tuple[GroupObs, ...] = ()
    paths: dict[str, PathObs] = Field(default_factory=dict)
    subuid: tuple[SubId, ...] = ()
    subgid: tuple[SubId, ...] = ()
    delegated: tuple[str, ...] = ()
    #: Network interfaces asked about (macvlan parents) -> whether the host has them.
    nics: dict[str, bool] = Field(default_factory=dict)
    nvidia: tuple[str, ...] | None = None

    @property
    def readable(self) -> bool:
        return self.error is None

    def account(self, name: str) -> AccountObs | None:
        return next((a for a in self.accounts if a.name == name), None)

    def account_with_uid(self, uid: int) -> AccountObs | None:
        return next((a for a in self.accounts if a.uid == uid), None)

    def group_with_gid(self, gid: int) -> GroupObs | None:
        return next((g for g in self.groups if g.gid == gid), None)

    def delegates(self, file: str, ident: int) -> bool:
        """Whether root is delegated ``ident`` in ``file`` ("subuid" or "subgid")."""
        lines = self.subuid if file == "subuid" else self.subgid
        return any(line.covers(ident) for line in lines)


class HostSnapshot(Frozen):
    """Everything observed on one host. ``error`` is set (and the rest empty) when unreadable."""

    host: str
    endpoint: str
    error: HostError | None = None
    server_version: str = ""
    api_extensions: tuple[str, ...] = ()
    cpus: int = 0
    #: Bytes of memory on the host and in use (``/1.0/resources`` ``memory.total`` and
    #: ``memory.used``); None when not read (an older snapshot, or no resources extension).
    memory_total: int | None = None
    memory_used: int | None = None
    gpus: tuple[GpuObs, ...] = ()
    instances: dict[str, InstanceObs] = Field(default_factory=dict)
    profiles: dict[str, ProfileObs] = Field(default_factory=dict)
    images: tuple[ImageObs, ...] = ()
    pools: dict[str, PoolObs] = Field(default_factory=dict)
    #: A cluster host's members (``hosts.X.cluster``); empty for a single server.
    members: tuple[MemberObs, ...] = ()
    #: On a cluster: instances on a member that is not online, by name -> that member. LXD lists
    #: them without their config; they are not in ``instances`` and nothing is planned on them.
    unseen: dict[str, str] = Field(default_factory=dict)
    #: The host's own facts (accounts, homes, delegations, paths, NICs), or None when the host
    #: layer is not read (no ``ssh:`` for the host and no ``--local``).
    facts: HostFacts | None = None
    #: On a cluster host: each member's own facts, by member, for the members the fleet gives
    #: an ssh destination (``hosts.X.cluster.ssh``); ``facts`` is then None. Empty otherwise.
    member_facts: dict[str, HostFacts] = Field(default_factory=dict)

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def clustered(self) -> bool:
        return bool(self.members)

    def member(self, name: str) -> MemberObs | None:
        return next((m for m in self.members if m.name == name), None)

    @property
    def members_down(self) -> tuple[MemberObs, ...]:
        return tuple(m for m in self.members if not m.online)

    def image_by_alias(self, alias: str) -> ImageObs | None:
        for image in self.images:
            if alias in image.aliases:
                return image
        return None


class FleetSnapshot(Frozen):
    """The observed state of every host in the fleet, keyed by host name."""

    hosts: dict[str, HostSnapshot] = Field(default_factory=dict)

    @property
    def unreachable(self) -> tuple[str, ...]:
        return tuple(name for name, snap in self.hosts.items() if not snap.reachable)
