"""Template recipes: the hash that says whether a published template image is current.

Pure: no I/O. A template's *recipe* is its base image, its steps and the files it pushes. Its
hash (``recipe_hash``) is stored as an image property of the published image; the planner, the
``build`` command and the executor compare it with the hash of the fleet's recipe to decide
whether to build, copy or do nothing. This module also names everything a build writes to LXD:
image properties, the build container's name and tags, and the ``ALIAS-previous`` alias; and it
decides whether a build container is a build in progress or a leftover (``running_builder``,
from facts about live processes that the caller gathers).

What the base contributes to the hash (``base_key``):

- the fingerprint of the image that the base alias names **on the build host**, when the build
  host has that alias (a local base, or a server base the admin or the lab has imported under its
  alias): that is the image the build starts from;
- otherwise, for a base on an image server, the text ``server URL alias ALIAS``: its fingerprint
  is known only after pulling, and a cached copy expires, so the hash of such a template changes
  only when the server URL, the alias, a step or a file changes, not when the server publishes a
  new build of the base (``build --force`` picks that up).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lxdgpu_reconcile.fleet.models import Fleet, ImageServer, Template, TemplateFile
from lxdgpu_reconcile.state import TAG_MANAGED, TAG_PREFIX, TAG_ROLE, ImageObs

#: Image property: the fleet template an image was built from.
PROP_TEMPLATE = f"{TAG_PREFIX}template"
#: Image property: ``recipe_hash`` of the recipe the image was built from.
PROP_RECIPE_HASH = f"{TAG_PREFIX}recipe-hash"
#: Image property: fingerprint of the base image the build container started from.
PROP_BASE_FINGERPRINT = f"{TAG_PREFIX}base-fingerprint"
#: Instance config key on build containers: the template being built.
TAG_TEMPLATE = PROP_TEMPLATE
#: ``user.lxdgpu.role`` of a build container.
ROLE_BUILD = "build"
#: The alias that keeps a template's previous image, for rollback: ``ALIAS-previous``.
PREVIOUS_SUFFIX = "-previous"
#: Build container names: ``lxdgpu-build-<template>-<6 hex>``.
BUILD_PREFIX = "lxdgpu-build-"
#: Build container tag: the hostname of the machine whose process runs the build.
TAG_BUILDER_HOST = f"{TAG_PREFIX}builder-host"
#: Build container tag: the pid of the process that runs the build.
TAG_BUILDER_PID = f"{TAG_PREFIX}builder-pid"
#: Build container tag: that process's start time, in clock ticks since boot.
TAG_BUILDER_START = f"{TAG_PREFIX}builder-start"
#: Build container tag: when the build started (UTC, ISO 8601).
TAG_BUILD_STARTED = f"{TAG_PREFIX}build-started"
#: A build container made by another machine is a leftover this long after its build started
#: (that machine's processes cannot be checked from here); longer than any sane build.
FOREIGN_BUILD_MAX_AGE = datetime.timedelta(hours=24)
#: Version of the recipe document; bump it to make every template rebuild.
RECIPE_VERSION = 1

_NOT_NAME_CHARS = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Base:
    """A template's base image: an alias, on an image server of the fleet or on the build host."""

    alias: str
    #: The fleet's name of the image server, or None for an alias on the build host.
    server: str | None = None
    url: str = ""
    protocol: str = ""

    @property
    def remote(self) -> bool:
        return self.server is not None


def parse_base(template: Template, image_servers: Mapping[str, ImageServer]) -> Base:
    """``template.base`` (``SERVER:ALIAS`` or ``ALIAS``) resolved against the fleet's servers.

    Raises ``KeyError`` for an image server the fleet does not declare (the loader's rules
    already report that as a problem in the fleet file).
    """
    server, sep, alias = template.base.rpartition(":")
    if not sep:
        return Base(alias=template.base)
    found = image_servers[server]
    return Base(alias=alias, server=server, url=found.url, protocol=found.protocol)


def base_image(base: Base, build_host_images: Iterable[ImageObs]) -> ImageObs | None:
    """The image on the build host that ``base.alias`` names, or None."""
    for image in build_host_images:
        if base.alias in image.aliases:
            return image
    return None


def base_key(base: Base, build_host_images: Iterable[ImageObs]) -> str | None:
    """What the base contributes to the recipe hash (see the module docstring).

    None when the base is a local alias that the build host does not have: the template cannot be
    built there until the alias exists.
    """
    local = base_image(base, build_host_images)
    if local is not None:
        return local.fingerprint
    if base.remote:
        return f"server {base.url} alias {base.alias}"
    return None


def base_source(base: Base, build_host_images: Iterable[ImageObs]) -> dict[str, str] | None:
    """The ``source`` of the build container in ``POST /1.0/instances``, or None (no base).

    The build host's own image wins over the image server, so the build starts from exactly the
    image whose fingerprint went into the hash.
    """
    local = base_image(base, build_host_images)
    if local is not None:
        return {"type": "image", "fingerprint": local.fingerprint}
    if base.remote:
        return {
            "type": "image",
            "mode": "pull",
            "server": base.url,
            "protocol": base.protocol,
            "alias": base.alias,
        }
    return None


def normal_mode(mode: str) -> int:
    """A template file's mode (``"0644"``, ``"644"``, ``"4755"``) as a number; always octal."""
    return int(mode, 8)


def lxd_mode(mode: str) -> str:
    """The ``X-LXD-mode`` header value: octal with a leading 0 (LXD reads ``644`` as decimal)."""
    return f"0{normal_mode(mode):o}"


def inline_contents(template: Template) -> dict[str, bytes]:
    """The contents of the files written inline (``content:``), by path in the container."""
    return {f.path: f.content.encode() for f in template.files if f.content is not None}


def recipe_document(
    template: Template, base_fingerprint: str, *, file_contents: Mapping[str, bytes]
) -> dict[str, Any]:
    """The data the recipe hash is taken of: base, steps in order, files (path, mode, sha256)."""
    return {
        "version": RECIPE_VERSION,
        "base": base_fingerprint,
        "steps": list(template.steps),
        "files": [_file_entry(f, file_contents) for f in template.files],
    }


def _file_entry(file: TemplateFile, contents: Mapping[str, bytes]) -> dict[str, str]:
    if file.path not in contents:
        raise ValueError(f"no content given for the template file {file.path}")
    return {
        "path": file.path,
        "mode": f"{normal_mode(file.mode):04o}",
        "sha256": hashlib.sha256(contents[file.path]).hexdigest(),
    }


def recipe_hash(
    template: Template, base_fingerprint: str, *, file_contents: Mapping[str, bytes]
) -> str:
    """``sha256:HEX`` of the stable JSON of ``recipe_document``.

    ``base_fingerprint`` is what ``base_key`` returns; ``file_contents`` holds the bytes of every
    file the template pushes, by path in the container (``templates.files.template_files``).
    The alias, build host, distribution hosts and description are not part of the recipe.
    """
    document = recipe_document(template, base_fingerprint, file_contents=file_contents)
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def image_properties(
    name: str, template: Template, *, recipe_hash: str, base_fingerprint: str
) -> dict[str, str]:
    """The properties a published (or copied) template image carries."""
    return {
        TAG_MANAGED: "true",
        PROP_TEMPLATE: name,
        PROP_RECIPE_HASH: recipe_hash,
        PROP_BASE_FINGERPRINT: base_fingerprint,
        "description": template.description or f"template {name} (lxdgpu-reconcile)",
    }


def previous_alias(alias: str) -> str:
    """The alias that keeps the image ``alias`` pointed at before the last build or copy."""
    return alias + PREVIOUS_SUFFIX


def build_container_name(template_name: str, suffix: str) -> str:
    """``lxdgpu-build-<template>-<suffix>``: a valid LXD name of at most 63 characters."""
    cleaned = _NOT_NAME_CHARS.sub("-", template_name.lower()).strip("-") or "template"
    room = 63 - len(BUILD_PREFIX) - len(suffix) - 1
    return f"{BUILD_PREFIX}{cleaned[:room].rstrip('-')}-{suffix}"


def build_container_config(template_name: str, builder: Builder | None = None) -> dict[str, str]:
    """Config tags of a build container; the planner finds leftovers by these. ``builder`` adds
    the tags that name the process running the build (``builder_tags``)."""
    tags = {TAG_MANAGED: "true", TAG_ROLE: ROLE_BUILD, TAG_TEMPLATE: template_name}
    return tags | (builder_tags(builder) if builder is not None else {})


# --- who runs a build ------------------------------------------------------------------------


@dataclass(frozen=True)
class Builder:
    """The process that runs a build: its machine, pid, start time and when the build started."""

    host: str
    pid: int
    #: The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22): a pid
    #: reused by a later process has another.
    start: int
    #: When the build container was created (timezone-aware, UTC).
    started: datetime.datetime


@dataclass(frozen=True)
class LiveBuilders:
    """What the planner knows of builder processes, gathered by the caller (``service.plan``):
    this machine's hostname, the ``(pid, start)`` of the builder processes alive on it, and now
    (timezone-aware)."""

    hostname: str
    live: frozenset[tuple[int, int]]
    now: datetime.datetime


def builder_tags(builder: Builder) -> dict[str, str]:
    """The config tags naming ``builder`` on its build container."""
    return {
        TAG_BUILDER_HOST: builder.host,
        TAG_BUILDER_PID: str(builder.pid),
        TAG_BUILDER_START: str(builder.start),
        TAG_BUILD_STARTED: builder.started.astimezone(datetime.UTC).isoformat(timespec="seconds"),
    }


def builder_of(config: Mapping[str, str]) -> Builder | None:
    """The builder a build container's tags name; None when a tag is missing or unreadable (a
    container made by a version that did not record its builder, or tags edited by hand)."""
    try:
        host = config[TAG_BUILDER_HOST]
        pid = int(config[TAG_BUILDER_PID])
        start = int(config[TAG_BUILDER_START])
        started = datetime.datetime.fromisoformat(config[TAG_BUILD_STARTED])
    except (KeyError, ValueError):
        return None
    if not host or pid <= 0 or start < 0:
        return None
    if started.tzinfo is None:
        started = started.replace(tzinfo=datetime.UTC)
    return Builder(host=host, pid=pid, start=start, started=started)


def running_builder(config: Mapping[str, str], builders: LiveBuilders | None) -> Builder | None:
    """The builder still running the build container with ``config``, or None: a leftover.

    - no readable builder tags (an older version made it): a leftover;
    - made on this machine (``builder-host`` is ``builders.hostname``): running while its
      ``(pid, start)`` is alive; a dead pid, or one reused by another process, is a leftover;
    - made on another machine: running until ``FOREIGN_BUILD_MAX_AGE`` after it started, a
      leftover after that (its process cannot be checked from here);
    - ``builders`` None (the caller does not know which processes live): running, the safe side.
    """
    builder = builder_of(config)
    if builder is None:
        return None
    if builders is None:
        return builder
    if builder.host == builders.hostname:
        return builder if (builder.pid, builder.start) in builders.live else None
    young = builders.now - builder.started <= FOREIGN_BUILD_MAX_AGE
    return builder if young else None


def is_build_container(config: Mapping[str, str]) -> bool:
    """Whether an instance's config marks it as a build container of this tool."""
    return config.get(TAG_MANAGED) == "true" and config.get(TAG_ROLE) == ROLE_BUILD


def is_current(image: ImageObs | None, recipe_hash: str) -> bool:
    """Whether ``image`` (what the template alias names on a host) carries ``recipe_hash``."""
    return image is not None and image.properties.get(PROP_RECIPE_HASH) == recipe_hash


def build_reason(alias: str, image: ImageObs | None, recipe_hash: str) -> str | None:
    """Why the template must be built on its build host, or None when its image is current.

    ``image`` is what ``alias`` names on the build host (``HostSnapshot.image_by_alias``).
    """
    if image is None:
        return f"alias {alias} does not exist on the build host"
    stored = image.properties.get(PROP_RECIPE_HASH)
    if stored is None:
        return f"alias {alias} names an image that was not built from this recipe (no recipe hash)"
    if stored != recipe_hash:
        return f"recipe changed ({_short(stored)} -> {_short(recipe_hash)})"
    return None


def image_with_recipe(
    images: Iterable[ImageObs], template_name: str, recipe_hash: str
) -> ImageObs | None:
    """A tagged image of ``template_name`` built from ``recipe_hash`` (e.g. ``ALIAS-previous``
    after the fleet file was reverted), so the alias can point back at it instead of rebuilding.
    """
    for image in images:
        props = image.properties
        if (
            props.get(TAG_MANAGED) == "true"
            and props.get(PROP_TEMPLATE) == template_name
            and props.get(PROP_RECIPE_HASH) == recipe_hash
        ):
            return image
    return None


def distribution_hosts(fleet: Fleet, name: str) -> tuple[str, ...]:
    """The hosts that must hold template ``name``: ``hosts:``, else every host with a user of it.

    The build host is included only when listed or when one of its users has the template.
    """
    template = fleet.templates[name]
    if template.hosts is not None:
        return tuple(dict.fromkeys(template.hosts))
    return tuple(dict.fromkeys(u.host for u in fleet.users.values() if u.template == name))


def copy_targets(fleet: Fleet, name: str) -> tuple[str, ...]:
    """The hosts template ``name`` is copied to after a build: distribution hosts but the build
    host, in order."""
    build_host = fleet.templates[name].build_host
    return tuple(h for h in distribution_hosts(fleet, name) if h != build_host)


def _short(value: str) -> str:
    return value.removeprefix("sha256:")[:12]
