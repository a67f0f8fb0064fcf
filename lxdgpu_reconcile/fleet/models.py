"""The fleet file, format version 1, as frozen pydantic models.

Pure: no I/O. The loader (``spec.loading``) turns YAML into plain data with source positions and
validates it against ``Fleet``; the cross-reference rules (``spec.rules``) run on the result.
Every model forbids unknown keys, so a typo is an error with a suggestion rather than a silently
ignored setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

FORMAT_VERSION = 1

#: LXD instance names: 1-63 letters, digits and hyphens, not starting with a digit or hyphen and not
#: ending with a hyphen.
INSTANCE_NAME_RE = re.compile(r"^[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class Model(BaseModel):
    """Base of every fleet model: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def _no_separator(value: str) -> str:
    if ":" in value or "/" in value:
        raise ValueError(
            f"{value!r} contains ':' or '/', which lxc uses to separate remotes and paths; "
            "choose a name without them"
        )
    if value.startswith(".") or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError(
            f"{value!r} starts with '.' or holds a space or a control character; names also "
            "name files and folders (the lab's, an ssh config's hosts): choose letters, digits, "
            "'-', '_' and '.' (not first)"
        )
    return value


def _as_text(value: Any) -> Any:
    """Versions are text: the loader keeps ``10.0`` as written; an int becomes its digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _instance_name(value: str) -> str:
    if not INSTANCE_NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid LXD container name: use 1-63 letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen"
        )
    return value


def _host_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is relative: host paths must be absolute")
    if ".." in value.split("/"):
        raise ValueError(f"{value!r} contains '..': write the path without it")
    return value


NonEmpty = Annotated[str, StringConstraints(min_length=1)]
#: A name for a fleet object (host, profile, template, user, image server, alias).
Name = Annotated[str, StringConstraints(min_length=1, max_length=63), AfterValidator(_no_separator)]
InstanceName = Annotated[str, AfterValidator(_instance_name)]
#: A version string such as ``10.0`` or ``12.10``, kept exactly as written.
Version = Annotated[str, BeforeValidator(_as_text), StringConstraints(min_length=1)]
HostPath = Annotated[str, AfterValidator(_host_path)]
#: A user name as on the host (``useradd``): lower-case letters, digits, ``_`` and ``-``.
UserName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
#: LXD's own configuration values are strings; plain numbers and true/false are accepted and
#: written as LXD writes them.
LxdValue = Annotated[str, BeforeValidator(lambda v: _lxd_text(v))]
#: An OpenSSH destination: ``[user@]host``, where host is a name of ``~/.ssh/config``, a host name
#: or an address. Never starts with ``-`` (it would be read as an option of ``ssh``).
SshDestination = Annotated[
    str,
    StringConstraints(
        pattern=r"^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}@)?[A-Za-z0-9][A-Za-z0-9._-]{0,252}$"
    ),
]
#: An octal permission mode such as ``0750``.
OctalMode = Annotated[str, StringConstraints(pattern=r"^0?[0-7]{3}$")]
#: A host id of a real account, never a system one.
HostId = Annotated[int, Field(ge=1000, le=4294967294)]


def _lxd_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return value


def _cpu(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a CPU count such as 16 or a share such as '75%'")
    if isinstance(value, int):
        if value < 1:
            raise ValueError("a CPU count must be at least 1")
        return value
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*%\s*", value)
        if match:
            percent = int(match.group(1))
            if not 1 <= percent <= 100:
                raise ValueError("a CPU share must be between 1% and 100%")
            return f"{percent}%"
        if value.strip().isdigit():
            return _cpu(int(value))
    raise ValueError(
        f"{value!r} is not a CPU limit: write a count such as 16 or a share such as '75%'"
    )


#: ``limits.cpu`` as the fleet says it: a count (int) or a share of the host's CPUs (``"75%"``).
CpuLimit = Annotated[int | str, BeforeValidator(_cpu)]


class Defaults(Model):
    """Settings every user container gets unless the user overrides them."""

    container_user: UserName = Field(
        "ubuntu", description="The user inside every container that host users map onto."
    )
    container_uid: int = Field(
        1000, ge=1, le=65535, description="Uid and gid of container_user inside the container."
    )
    home_source: HostPath = Field(
        "/home/{user}", description="Host path of a user's home; {user} is the user's name."
    )
    home_path: HostPath = Field(
        "/home/{container_user}/{user}",
        description="Where the home appears inside the container; {container_user} is "
        "container_user, {user} the user's name.",
    )
    profiles: tuple[Name, ...] = Field(
        ("default",), description="Profiles every user container gets, in this order."
    )
    cpu: CpuLimit = Field(
        "75%", description="limits.cpu default: a count, or a share of the host's CPUs."
    )
    state: Literal["running", "stopped"] = Field(
        "running", description="Power state of user containers unless a user says otherwise."
    )
    home_mode: OctalMode = Field(
        "0750", description="Mode of the host home directories the tool creates and keeps."
    )


class Cluster(Model):
    """An LXD cluster driven as one host of the fleet (docs/clusters.md)."""

    members: tuple[Name, ...] | None = Field(
        None,
        description="The members new containers may be placed on; left out: every member the "
        "cluster lists (/1.0/cluster/members).",
    )
    endpoints: tuple[NonEmpty, ...] = Field(
        (),
        description="Other members' endpoints, tried in order when endpoint does not answer; "
        "the same certificates apply (the cluster has one certificate).",
    )
    ssh: dict[Name, SshDestination] = Field(
        default_factory=dict,
        description="Member -> [user@]host of that member's own system (accounts, homes and id "
        "delegations are per member); a member left out has its host layer left alone.",
    )


class Host(Model):
    """One LXD server of the fleet and how the tool reaches it."""

    endpoint: NonEmpty = Field(
        description="https://ADDRESS:PORT, or unix:///path/to/unix.socket for a local daemon."
    )
    client_cert: NonEmpty | None = Field(
        None, description="Client certificate trusted by the host (https); relative to the file."
    )
    client_key: NonEmpty | None = Field(
        None, description="Key of client_cert (https); relative to the fleet file."
    )
    server_cert: NonEmpty | None = Field(
        None, description="The host's own certificate, pinned (https); relative to the file."
    )
    gpus: int | None = Field(
        None, ge=0, description="Expected GPU count; checked against the host before apply."
    )
    description: str = ""
    paused: bool = Field(
        False,
        description="Leave this host alone: plan shows its changes as pending; apply and "
        "reconcile skip them.",
    )
    ssh: SshDestination | None = Field(
        None,
        description="[user@]host the tool reaches the server's own system through (OpenSSH, "
        "with the admin's ~/.ssh/config, keys and known_hosts) to manage accounts, homes and "
        "id delegations; without it (and without --local) that layer is left alone.",
    )
    cluster: Cluster | None = Field(
        None,
        description="The host is an LXD cluster: one API for several members, with new "
        "containers placed on a member (users.NAME.member, or the placement rule).",
    )


class ImageServer(Model):
    """A remote image server that template bases come from (``lxc remote add``)."""

    url: NonEmpty
    protocol: Literal["simplestreams", "lxd"] = "simplestreams"


class Profile(Model):
    """An LXD profile, with LXD's own keys and values, plus keys of this tool."""

    description: str = ""
    config: dict[NonEmpty, LxdValue] = Field(default_factory=dict)
    devices: dict[NonEmpty, dict[NonEmpty, LxdValue]] = Field(default_factory=dict)
    hosts: tuple[Name, ...] | None = Field(
        None,
        description="Hosts that get this profile even without a user who needs it.",
    )
    allow_unsafe: bool = Field(
        False,
        description=(
            "Allow keys and devices that give a container power over the host "
            "(security.privileged, raw.*, proxy and unix-char devices, ...: docs/fleet-file.md "
            "lists them); never sent to LXD."
        ),
    )


class TemplateFile(Model):
    """A file pushed into the build container before the steps run."""

    path: HostPath = Field(description="Absolute path inside the build container.")
    content: str | None = Field(None, description="The file's text.")
    source: NonEmpty | None = Field(None, description="A local file, relative to the fleet file.")
    mode: str = Field("0644", pattern=r"^0?[0-7]{3,4}$", description="Octal mode, e.g. '0755'.")


class Template(Model):
    """A container image built from a base image and provisioning steps, published as an alias."""

    alias: Name
    base: NonEmpty = Field(description="IMAGE_SERVER:ALIAS, or an alias on the build host.")
    build_host: Name
    steps: tuple[NonEmpty, ...] = ()
    files: tuple[TemplateFile, ...] = ()
    hosts: tuple[Name, ...] | None = Field(
        None, description="Hosts to copy the image to; default: every host with a user of it."
    )
    description: str = ""
    vnc: bool = Field(
        False,
        description="The image runs a VNC server: each new container also gets a first VNC "
        "password (vncpasswd) for its container user.",
    )


class User(Model):
    """A person who gets one container on one host, with their host home mapped in."""

    host: Name
    template: Name
    uid: HostId = Field(description="Host uid mapped onto defaults.container_uid.")
    gid: HostId = Field(description="Host gid mapped onto defaults.container_uid.")
    cuda: tuple[Version, ...] = Field((), description="CUDA versions mounted from the host.")
    cpu: CpuLimit | None = Field(None, description="Overrides defaults.cpu.")
    gpus: Literal["all"] | tuple[Annotated[int, Field(ge=0)], ...] = Field(
        "all", description="'all', or a list of GPU ids such as [0, 1]."
    )
    profiles: tuple[Name, ...] = Field((), description="Extra profiles after defaults.profiles.")
    state: Literal["running", "stopped"] | None = Field(None, description="Overrides defaults.")
    container: InstanceName | None = Field(None, description='Default "{user}-container".')
    member: Name | None = Field(
        None,
        description="On a cluster host: the member the container lives on; left out: placed "
        "by the placement rule when created, then kept where it is.",
    )
    paused: bool = Field(
        False,
        description="Leave this user's container alone (e.g. during a long training run): plan "
        "shows its changes as pending; apply and reconcile skip them.",
    )


#: ``HH:MM-HH:MM``, local time; the end is exclusive and may be earlier than the start (the window
#: then crosses midnight).
WINDOW_RE = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")


def window_minutes(text: str) -> tuple[int, int]:
    """The start and end of a ``HH:MM-HH:MM`` window in minutes after midnight."""
    match = WINDOW_RE.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a time window: write HH:MM-HH:MM in local time, e.g. "
            "'02:00-06:00' (a window may cross midnight: '22:00-06:00')"
        )
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    return h1 * 60 + m1, h2 * 60 + m2


def _window(value: str) -> str:
    start, end = window_minutes(value)
    if start == end:
        raise ValueError(
            f"{value!r} starts and ends at the same time: give a window such as '02:00-06:00', "
            "or use allow_restarts: always"
        )
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


class ReconcilePolicy(Model):
    """What ``reconcile`` (cron, systemd timer) may do on its own; the rest stays pending.

    Creates, in-place updates and starts are always applied. Restarts of running containers,
    deletes and template builds are held back (reported as pending) unless allowed here.
    """

    allow_restarts: Literal["never", "always", "window"] = Field(
        "never",
        description="Restart running containers for changes LXD applies only at start: never, "
        "always, or only inside restart_window.",
    )
    restart_window: Annotated[str, AfterValidator(_window)] | None = Field(
        None,
        description="With allow_restarts: window, when restarts may happen: 'HH:MM-HH:MM' in the "
        "local time of the machine that runs reconcile; may cross midnight ('22:00-06:00').",
    )
    allow_deletes: bool = Field(
        False,
        description="Delete tagged containers and profiles no longer in the fleet file (as "
        "plan --prune; protected containers are never deleted).",
    )
    allow_template_builds: bool = Field(
        False, description="Build and copy template images when their recipe changed."
    )

    @model_validator(mode="after")
    def _window_goes_with_mode(self) -> ReconcilePolicy:
        if self.allow_restarts == "window" and self.restart_window is None:
            raise ValueError(
                "allow_restarts: window needs restart_window, e.g. restart_window: "
                "'02:00-06:00' (local time)"
            )
        if self.allow_restarts != "window" and self.restart_window is not None:
            raise ValueError(
                f"restart_window is used only with allow_restarts: window (it is "
                f"{self.allow_restarts}): set allow_restarts: window, or remove restart_window"
            )
        return self


class Fleet(Model):
    """The whole fleet file."""

    model_config = ConfigDict(
        json_schema_extra={"title": "lxdgpu-reconcile fleet file, format version 1"}
    )

    version: Literal[1] = Field(description="Format version of the fleet file; must be 1.")
    defaults: Defaults = Field(default_factory=Defaults)
    hosts: dict[Name, Host] = Field(default_factory=dict)
    image_servers: dict[Name, ImageServer] = Field(default_factory=dict)
    profiles: dict[Name, Profile] = Field(default_factory=dict)
    cuda: dict[Version, HostPath] = Field(
        default_factory=dict, description="CUDA version -> host tree, mounted at the same path."
    )
    templates: dict[Name, Template] = Field(default_factory=dict)
    users: dict[UserName, User] = Field(default_factory=dict)
    reconcile: ReconcilePolicy = Field(
        default_factory=ReconcilePolicy,
        description="What the reconcile command (cron, systemd timer) may apply on its own.",
    )

    def container_of(self, user: str) -> str:
        """The container name of ``user``."""
        return self.users[user].container or f"{user}-container"

    def cpu_of(self, user: str) -> int | str:
        """The CPU limit ``user`` asks for, after defaults."""
        cpu = self.users[user].cpu
        return self.defaults.cpu if cpu is None else cpu

    def state_of(self, user: str) -> str:
        """The power state ``user``'s container should be in."""
        return self.users[user].state or self.defaults.state

    def profiles_of(self, user: str) -> tuple[str, ...]:
        """Declared profiles of ``user``'s container (defaults, then the user's own)."""
        return self.defaults.profiles + self.users[user].profiles

    def users_on(self, host: str) -> Mapping[str, User]:
        """The users whose container lives on ``host``, in file order."""
        return {name: u for name, u in self.users.items() if u.host == host}
