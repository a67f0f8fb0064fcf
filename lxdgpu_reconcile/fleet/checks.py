"""Rules a well-typed fleet must also satisfy: references, uniqueness, safety. Pure.

Each rule yields ``Finding``s with the path of keys they concern; the loader turns them into
``FILE:LINE:COL`` problems. The safety rules of config and devices live in ``fleet.safety``,
which the executor applies too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lxdgpu_reconcile.fleet import safety
from lxdgpu_reconcile.fleet.models import INSTANCE_NAME_RE, Cluster, Fleet
from lxdgpu_reconcile.fleet.safety import FORBIDDEN_EXACT as FORBIDDEN_EXACT
from lxdgpu_reconcile.fleet.safety import FORBIDDEN_TREES as FORBIDDEN_TREES
from lxdgpu_reconcile.fleet.safety import UNSAFE_CONFIG_KEYS as UNSAFE_CONFIG_KEYS
from lxdgpu_reconcile.fleet.yamlsource import Path

#: LXD always has this profile, so it may be referenced without being declared.
BUILTIN_PROFILE = "default"
#: A CUDA version as the ``cuda:`` keys name it: digits and dots (``12.4``, ``11.8.0``).
CUDA_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

_SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|credential|private[_-]?key)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Finding:
    path: Path
    message: str
    severity: str = "error"
    at_key: bool = False


def secret_keys(data: Any, path: Path = ()) -> Iterator[Finding]:
    """Keys anywhere in the raw data that look like they hold a password, secret or token, in
    file order. (One walk into a list: one generator per nested value made this a large part of
    ``validate`` for a fleet of thousands of users.)"""
    found: list[Finding] = []
    _secret_keys(data, path, found)
    return iter(found)


def _secret_keys(data: Any, path: Path, found: list[Finding]) -> None:
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and looks_secret(key):
                found.append(
                    Finding(
                        (*path, key),
                        f"{key!r} looks like a secret: secrets never go in the fleet file (it is "
                        "tracked in git); passwords are generated at apply time and handed out "
                        "by the tool, and certificates are referenced by path",
                        at_key=True,
                    )
                )
            if isinstance(value, dict | list):
                _secret_keys(value, (*path, key), found)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            if isinstance(item, dict | list):
                _secret_keys(item, (*path, i), found)


@functools.lru_cache(maxsize=4096)
def looks_secret(key: str) -> bool:
    """True when a key's name says it holds a password, secret or token (``HF_TOKEN``,
    ``environment.DB_PASSWORD``, ``api-key``). ``validate`` refuses such keys in the fleet file;
    renderings of a plan mask their values (``planning.sensitive``)."""
    last = re.split(r"[._-]", key.lower())
    return bool(_SECRET_KEY.search(key)) or "password" in last or "secret" in last


def check(fleet: Fleet) -> Iterator[Finding]:
    """Every cross-reference, uniqueness and safety rule, in file order of sections."""
    yield from _hosts(fleet)
    yield from _defaults(fleet)
    yield from _profiles(fleet)
    yield from _cuda(fleet)
    yield from _templates(fleet)
    yield from _users(fleet)


def _hosts(fleet: Fleet) -> Iterator[Finding]:
    for name, host in fleet.hosts.items():
        at = ("hosts", name)
        if host.endpoint.startswith("https://"):
            for key in ("client_cert", "client_key", "server_cert"):
                if getattr(host, key) is None:
                    yield Finding(
                        (*at, "endpoint"),
                        f"an https host needs {key}: the tool connects with a client "
                        "certificate and pins the server certificate",
                    )
        elif host.endpoint.startswith("unix://"):
            if not host.endpoint.removeprefix("unix://").startswith("/"):
                yield Finding(
                    (*at, "endpoint"),
                    "a unix endpoint needs an absolute socket path, e.g. "
                    "unix:///var/lib/lxd/unix.socket",
                )
        else:
            yield Finding(
                (*at, "endpoint"),
                f"{host.endpoint!r} is neither https://ADDRESS:PORT nor unix:///path/to/socket",
            )
        if host.cluster is not None:
            yield from _cluster(name, host.endpoint, host.cluster)


def _cluster(name: str, endpoint: str, cluster: Cluster) -> Iterator[Finding]:
    at = ("hosts", name, "cluster")
    seen: set[str] = set()
    for i, member in enumerate(cluster.members or ()):
        if member in seen:
            yield Finding((*at, "members", i), f"member {member!r} is listed twice")
        seen.add(member)
    if cluster.members is not None and not cluster.members:
        yield Finding(
            (*at, "members"),
            "an empty member list places nothing: list the members, or leave members out to "
            "use every member the cluster has",
        )
    for member in cluster.ssh:
        if cluster.members is not None and member not in cluster.members:
            listed = ", ".join(cluster.members) or "none"
            yield Finding(
                (*at, "ssh", member),
                f"member {member!r} is not among hosts.{name}.cluster.members ({listed}): "
                "give ssh destinations of listed members only",
                at_key=True,
            )
    for i, other in enumerate(cluster.endpoints):
        if not other.startswith("https://"):
            yield Finding(
                (*at, "endpoints", i),
                f"{other!r} is not https://ADDRESS:PORT: another member is reached over https, "
                "with the host's certificates",
            )
        elif not endpoint.startswith("https://"):
            yield Finding(
                (*at, "endpoints", i),
                "fallback endpoints use the host's client and server certificates: the "
                "endpoint must be https:// too",
            )


def _defaults(fleet: Fleet) -> Iterator[Finding]:
    d = fleet.defaults
    if "{user}" not in d.home_source:
        yield Finding(
            ("defaults", "home_source"),
            "home_source must contain {user}: without it every user would share one home",
        )
    yield from _host_path_safety(("defaults", "home_source"), d.home_source.replace("{user}", "x"))
    for i, profile in enumerate(d.profiles):
        yield from _profile_ref(fleet, ("defaults", "profiles", i), profile)


def _profiles(fleet: Fleet) -> Iterator[Finding]:
    for name, profile in fleet.profiles.items():
        at = ("profiles", name)
        rules = (
            *safety.config_rules(profile.config, allow_unsafe=profile.allow_unsafe),
            *safety.device_rules(profile.devices),
            *safety.unsafe_device_rules(profile.devices, allow_unsafe=profile.allow_unsafe),
        )
        for rule in rules:
            yield Finding((*at, *rule.path), rule.message, rule.severity, rule.at_key)
        for i, host in enumerate(profile.hosts or ()):
            if host not in fleet.hosts:
                yield _unknown((*at, "hosts", i), "host", host, fleet.hosts)


def _cuda(fleet: Fleet) -> Iterator[Finding]:
    for version, path in fleet.cuda.items():
        if not CUDA_VERSION_RE.match(version):
            yield Finding(
                ("cuda", version),
                f"{version!r} is not a CUDA version: write digits and dots, such as 12.4 or "
                "11.8 (the version names a profile and a device)",
                at_key=True,
            )
        yield from _host_path_safety(("cuda", version), path)


def _templates(fleet: Fleet) -> Iterator[Finding]:
    aliases: dict[str, str] = {}
    for name, template in fleet.templates.items():
        at = ("templates", name)
        if template.build_host not in fleet.hosts:
            yield _unknown((*at, "build_host"), "host", template.build_host, fleet.hosts)
        server, sep, alias = template.base.rpartition(":")
        if sep:
            if server not in fleet.image_servers:
                yield _unknown((*at, "base"), "image server", server, fleet.image_servers)
            if not alias:
                yield Finding((*at, "base"), "the base names no image after ':'")
        for i, host in enumerate(template.hosts or ()):
            if host not in fleet.hosts:
                yield _unknown((*at, "hosts", i), "host", host, fleet.hosts)
        if template.alias in aliases:
            yield Finding(
                (*at, "alias"),
                f"alias {template.alias!r} is already the alias of template "
                f"{aliases[template.alias]!r}",
            )
        aliases.setdefault(template.alias, name)
        for i, file in enumerate(template.files):
            if (file.content is None) == (file.source is None):
                yield Finding((*at, "files", i), "a file needs exactly one of content or source")
            elif file.source is not None and (problem := source_path_problem(file.source)):
                yield Finding((*at, "files", i, "source"), problem)


def source_path_problem(source: str) -> str | None:
    """Why a template file's ``source:`` leaves the fleet file's folder as written (absolute, or
    with ``..``), or None. Where it leads after symbolic links is checked by the loader."""
    inside = (
        "a template source must be a file in the fleet file's folder (or below it), named "
        "relative to it"
    )
    if source.startswith("/"):
        return f"{source!r} is an absolute path: {inside}"
    if ".." in source.split("/"):
        return f"{source!r} contains '..': {inside}"
    return None


def _users(fleet: Fleet) -> Iterator[Finding]:
    ids: dict[tuple[str, str, int], str] = {}
    containers: dict[tuple[str, str], str] = {}
    for name, user in fleet.users.items():
        at = ("users", name)
        host = fleet.hosts.get(user.host)
        if host is None:
            yield _unknown((*at, "host"), "host", user.host, fleet.hosts)
        if user.template not in fleet.templates:
            yield _unknown((*at, "template"), "template", user.template, fleet.templates)
        if user.member is not None and host is not None:
            yield from _member(user.host, host.cluster, (*at, "member"), user.member)
        for i, version in enumerate(user.cuda):
            if version not in fleet.cuda:
                yield _unknown((*at, "cuda", i), "CUDA version", version, fleet.cuda)
        for i, profile in enumerate(user.profiles):
            yield from _profile_ref(fleet, (*at, "profiles", i), profile)
        container = fleet.container_of(name)
        if user.container is None and not INSTANCE_NAME_RE.match(container):
            yield Finding(
                at,
                f"the default container name {container!r} is not a valid LXD name; set "
                "'container:' to one made of letters, digits and hyphens",
                at_key=True,
            )
        for key, value in (("uid", user.uid), ("gid", user.gid)):
            owner = ids.setdefault((user.host, key, value), name)
            if owner != name:
                yield Finding(
                    (*at, key),
                    f"{key} {value} on host {user.host!r} is already mapped for user {owner!r}",
                )
        owner = containers.setdefault((user.host, container), name)
        if owner != name:
            yield Finding(
                (*at, "container") if user.container else at,
                f"container {container!r} on host {user.host!r} already belongs to user {owner!r}",
                at_key=user.container is None,
            )
        if isinstance(user.gpus, tuple):
            if len(set(user.gpus)) != len(user.gpus):
                yield Finding((*at, "gpus"), "a GPU id is listed twice")
            if host is not None and host.gpus is not None:
                for i, gpu in enumerate(user.gpus):
                    if gpu >= host.gpus:
                        yield Finding(
                            (*at, "gpus", i),
                            f"GPU {gpu} does not exist on host {user.host!r}, which declares "
                            f"{host.gpus} GPU(s) (ids 0-{host.gpus - 1})"
                            if host.gpus
                            else f"host {user.host!r} declares no GPUs",
                        )


def _member(host: str, cluster: Cluster | None, path: Path, member: str) -> Iterator[Finding]:
    if cluster is None:
        yield Finding(
            path,
            f"host {host!r} is not a cluster: member: is for users of a cluster host "
            f"(hosts.{host}.cluster); remove it, or declare the cluster",
        )
    elif cluster.members is not None and member not in cluster.members:
        listed = ", ".join(cluster.members) or "none"
        yield Finding(
            path,
            f"member {member!r} is not among hosts.{host}.cluster.members ({listed})",
        )


def _profile_ref(fleet: Fleet, path: Path, profile: str) -> Iterator[Finding]:
    if profile != BUILTIN_PROFILE and profile not in fleet.profiles:
        yield _unknown(path, "profile", profile, fleet.profiles)


def _unknown(path: Path, what: str, name: str, known: dict[str, Any]) -> Finding:
    message = f"unknown {what} {name!r}"
    if known:
        message += f": declared ones are {', '.join(sorted(known))}"
    else:
        message += ": none is declared"
    return Finding(path, message)


def _host_path_safety(path: Path, value: str) -> Iterator[Finding]:
    for message in safety.host_path_safety(value):
        yield Finding(path, message)
