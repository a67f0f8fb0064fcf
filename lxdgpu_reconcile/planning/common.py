"""Types every planning stage shares: object references and plan errors. Pure data, no I/O.

A ``PlanError`` is a problem found while expanding or planning (an untagged object in the way,
an unreachable host, a missing image alias, a GPU id the host does not have). It is data in the
plan, never an exception: it names the object, says what is wrong and lists what the admin can
do. Any error on a host makes that host's plan not applyable.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Base of every planning model: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ObjectKind(StrEnum):
    """Kinds of object a plan acts on: LXD profiles and instances, and template images (built
    or copied under the template's alias)."""

    PROFILE = "profile"
    INSTANCE = "instance"
    TEMPLATE = "template"
    #: The host layer, on the server's own system (``execute.host_actions``): a host account
    #: (name: the user), its home directory (name: the path) and a delegation of one id to root
    #: in /etc/subuid or /etc/subgid (name: ``subuid:1003``).
    ACCOUNT = "account"
    HOME = "home"
    DELEGATION = "delegation"


class ObjectRef(Frozen):
    """One LXD object on one host, by kind and name."""

    kind: ObjectKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.name}"


class PowerState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class ErrorCode(StrEnum):
    """Why (part of) a plan cannot be applied. Stable: tools may match on the value."""

    HOST_UNREACHABLE = "host-unreachable"
    HOST_NOT_OBSERVED = "host-not-observed"
    UNKNOWN_HOST = "unknown-host"
    UNKNOWN_TARGET = "unknown-target"
    UNTAGGED_INSTANCE = "untagged-instance"
    UNTAGGED_PROFILE = "untagged-profile"
    OTHER_OWNER = "other-owner"
    COPY_IN_THE_WAY = "copy-in-the-way"
    NOT_A_CONTAINER = "not-a-container"
    UNSUPPORTED_STATUS = "unsupported-status"
    MISSING_IMAGE = "missing-image"
    MISSING_PROFILE = "missing-profile"
    PROFILE_NAME_TAKEN = "profile-name-taken"
    GPU_NOT_ON_HOST = "gpu-not-on-host"
    CPU_COUNT_UNKNOWN = "cpu-count-unknown"
    UNKNOWN_CUDA = "unknown-cuda"
    MISSING_BASE = "missing-base"
    TEMPLATE_FILES = "template-files"
    MOVE_CONFLICT = "move-conflict"
    #: A member the fleet names (``users.U.member``, ``hosts.X.cluster.members``) that the
    #: cluster does not have (``planning.placement``).
    UNKNOWN_MEMBER = "unknown-member"
    # The host layer and preflight (``planning.host_layer``, ``planning.preflight``).
    HOST_LAYER_UNREADABLE = "host-layer-unreadable"
    ACCOUNT_CONFLICT = "account-conflict"
    HOME_NOT_A_DIRECTORY = "home-not-a-directory"
    MISSING_SOURCE = "missing-source"
    MISSING_NIC_PARENT = "missing-nic-parent"
    MISSING_POOL = "missing-pool"
    MISSING_DELEGATION = "missing-delegation"
    GPU_COUNT = "gpu-count"
    NO_NVIDIA_DRIVER = "no-nvidia-driver"


class PlanError(Frozen):
    """A problem that keeps (part of) the plan from being applied, and the ways out."""

    code: ErrorCode
    message: str
    host: str | None = None
    object: ObjectRef | None = None
    fixes: tuple[str, ...] = ()
