"""Template images on LXD hosts: build, publish, copy between hosts, rotate aliases, clean up.

Does I/O, all of it through the raw API of pinned pylxd clients and ``execute.lxdops`` (deadlines,
errors in plain words). What to build and why is decided elsewhere (``templates.recipe``, the
planner); this module only carries it out.

- ``build_template`` creates a tagged build container from the base, pushes the template's files,
  runs each step, stops the container, publishes it with the recipe hash and moves the alias
  (the old image keeps ``ALIAS-previous``). The build container is deleted in a ``finally``, also
  on failure and on Ctrl-C; ``remove_leftover_builds`` removes any that a killed run left behind.
- Steps run through ``execute.commands.run_command``: no websockets (pylxd's ``wss://`` exec does
  not verify the pinned server certificate), output streamed to ``progress`` line by line.
- ``copy_image`` pulls an image from one host to another over LXD's own image transfer, with a
  one-time secret (the images are private), and sets the alias there.
- ``prune_old_images`` deletes a template's tagged images that no alias names and no container
  was created from.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from lxdgpu_reconcile.execute import commands, lxdops
from lxdgpu_reconcile.execute.lxdops import LxdError
from lxdgpu_reconcile.fleet.models import Template
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.state import TAG_ROLE, ImageObs
from lxdgpu_reconcile.templates import recipe

#: Default deadline for one step of a build, in seconds.
DEFAULT_STEP_TIMEOUT = 3600.0
_IMAGE_EXISTS = re.compile(r"The image already exists: ([0-9a-f]{64})")


@dataclass(frozen=True)
class BuildNote:
    """A stage of a build (creating, starting, pushing, stopping, publishing, cleaning up)."""

    message: str
    warning: bool = False


@dataclass(frozen=True)
class StepStarted:
    number: int  # from 1
    total: int
    command: str


@dataclass(frozen=True)
class StepOutput:
    """One line a running step wrote (standard error is merged into standard output)."""

    number: int
    line: str


@dataclass(frozen=True)
class StepFinished:
    number: int
    total: int
    seconds: float


BuildEvent = BuildNote | StepStarted | StepOutput | StepFinished
Progress = Callable[[BuildEvent], None]


@dataclass(frozen=True)
class BuildResult:
    """A published template image."""

    fingerprint: str
    seconds: float
    #: The image the base alias named when the build container was created.
    base_fingerprint: str
    #: The image the alias named before, now ``ALIAS-previous``; None when there was none.
    previous: str | None


class StepFailed(LxdError):
    """A build step exited non-zero or ran out of time; the build was abandoned."""

    def __init__(
        self,
        message: str,
        *,
        number: int,
        command: str,
        exit_code: int | None,
        tail: tuple[str, ...],
        hint: str,
    ) -> None:
        super().__init__(message, hint=hint)
        self.number = number
        self.command = command
        self.exit_code = exit_code
        self.tail = tail


def _ignore(_: BuildEvent) -> None:
    return None


# --- build -----------------------------------------------------------------------------------


def build_template(
    client: Any,
    name: str,
    template: Template,
    *,
    recipe_hash: str,
    files: Mapping[str, bytes],
    base_source: Mapping[str, str],
    progress: Progress = _ignore,
    timeout: float = lxdops.DEFAULT_TIMEOUT,
    step_timeout: float = DEFAULT_STEP_TIMEOUT,
) -> BuildResult:
    """Build template ``name`` on the host of ``client`` and point ``template.alias`` at it.

    ``files`` holds the content of each of ``template.files`` by path (``templates.files``);
    ``base_source`` is the build container's ``source`` (``recipe.base_source``). ``timeout``
    bounds each LXD operation (create, which may pull the base, start, stop, publish),
    ``step_timeout`` each step. Raises ``StepFailed`` or ``LxdError``; the build container is
    always deleted and, on failure, the alias is left as it was.
    """
    started = time.monotonic()
    container = recipe.build_container_name(name, secrets.token_hex(3))
    progress(BuildNote(f"creating build container {container} from {_describe(base_source)}"))
    try:
        _create_build_container(client, container, name, base_source, timeout)
        base_fingerprint = _base_fingerprint(client, container)
        progress(BuildNote(f"starting {container}"))
        lxdops.set_state(client, container, "start", timeout=timeout)
        for file in template.files:
            progress(BuildNote(f"pushing {file.path} (mode {recipe.lxd_mode(file.mode)})"))
            push_file(client, container, file.path, files[file.path], mode=file.mode)
        _run_steps(client, container, template, progress=progress, step_timeout=step_timeout)
        progress(BuildNote(f"stopping {container}"))
        lxdops.set_state(client, container, "stop", timeout=timeout)
        properties = recipe.image_properties(
            name, template, recipe_hash=recipe_hash, base_fingerprint=base_fingerprint
        )
        progress(BuildNote(f"publishing {container} as {template.alias}"))
        fingerprint = publish(client, container, properties, timeout=timeout)
        previous = point_alias(client, template.alias, fingerprint)
    finally:
        _delete_build_container(client, container, progress, timeout)
    return BuildResult(
        fingerprint=fingerprint,
        seconds=time.monotonic() - started,
        base_fingerprint=base_fingerprint,
        previous=previous,
    )


def _describe(source: Mapping[str, str]) -> str:
    if source.get("mode") == "pull":
        return f"{source.get('server')} {source.get('alias')}"
    return source.get("alias") or source.get("fingerprint", "")[:12]


def _create_build_container(
    client: Any, container: str, name: str, base_source: Mapping[str, str], timeout: float
) -> None:
    body = {
        "name": container,
        "description": f"lxdgpu-reconcile build of template {name}; safe to delete",
        "source": dict(base_source),
        "profiles": ["default"],
        "config": recipe.build_container_config(name),
    }
    lxdops.create(client, "instances", body, timeout=timeout)


def _base_fingerprint(client: Any, container: str) -> str:
    instance, _ = lxdops.get(client, "instances", container)
    return str(instance.get("config", {}).get("volatile.base_image", ""))


def _delete_build_container(
    client: Any, container: str, progress: Progress, timeout: float
) -> None:
    """Force-stop and delete ``container``; on failure say so rather than hide the real error."""
    try:
        progress(BuildNote(f"deleting build container {container}"))
        remove_instance(client, container, timeout=timeout)
    except LxdError as exc:
        progress(
            BuildNote(
                f"could not delete build container {container}: {exc}; the next plan or build "
                "removes it",
                warning=True,
            )
        )


def remove_instance(client: Any, name: str, *, timeout: float = lxdops.DEFAULT_TIMEOUT) -> None:
    """Force-stop ``name`` when it runs, then delete it; nothing when it does not exist."""
    try:
        instance, _ = lxdops.get(client, "instances", name)
    except LxdError as exc:
        if exc.status == 404:
            return
        raise
    if instance.get("status") != "Stopped":
        lxdops.set_state(client, name, "stop", timeout=timeout, force=True)
    lxdops.delete(client, "instances", name, timeout=timeout)


# --- files -----------------------------------------------------------------------------------


def push_file(
    client: Any, instance: str, path: str, content: bytes, *, mode: str, uid: int = 0, gid: int = 0
) -> None:
    """Write ``content`` to ``path`` in the running ``instance`` with ``mode`` (octal text).

    Missing parent directories are created (0755, root). An existing file is replaced, not
    overwritten in place, because LXD keeps the old mode of a file it overwrites.
    """
    files = client.api.instances[instance].files
    _make_parents(files, path)
    try:
        lxdops.call(f"replace {path}", files.delete, params={"path": path})
    except LxdError as exc:
        if exc.status != 404:
            raise
    headers = {
        "X-LXD-type": "file",
        "X-LXD-mode": recipe.lxd_mode(mode),
        "X-LXD-uid": str(uid),
        "X-LXD-gid": str(gid),
        "X-LXD-write": "overwrite",
    }
    lxdops.call(f"push {path}", files.post, params={"path": path}, data=content, headers=headers)


def _make_parents(files: Any, path: str) -> None:
    parts = [p for p in path.split("/")[:-1] if p]
    for depth in range(1, len(parts) + 1):
        directory = "/" + "/".join(parts[:depth])
        try:
            lxdops.call(f"read {directory}", files.get, params={"path": directory})
            continue
        except LxdError as exc:
            if exc.status != 404:
                raise
        headers = {
            "X-LXD-type": "directory",
            "X-LXD-mode": "0755",
            "X-LXD-uid": "0",
            "X-LXD-gid": "0",
        }
        lxdops.call(f"create {directory}", files.post, params={"path": directory}, headers=headers)


# --- steps -----------------------------------------------------------------------------------


def _run_steps(
    client: Any, container: str, template: Template, *, progress: Progress, step_timeout: float
) -> None:
    total = len(template.steps)
    for number, command in enumerate(template.steps, start=1):
        progress(StepStarted(number, total, command))
        began = time.monotonic()
        exit_code, tail = commands.run_command(
            client,
            container,
            command,
            on_line=_output_of(number, progress),
            timeout=step_timeout,
        )
        if exit_code != 0:
            raise _step_failed(template, number, total, command, exit_code, tail, step_timeout)
        progress(StepFinished(number, total, time.monotonic() - began))


def _output_of(number: int, progress: Progress) -> Callable[[str], None]:
    def on_line(line: str) -> None:
        progress(StepOutput(number, line))

    return on_line


def _step_failed(
    template: Template,
    number: int,
    total: int,
    command: str,
    exit_code: int | None,
    tail: tuple[str, ...],
    step_timeout: float,
) -> StepFailed:
    first_line = command.strip().splitlines()[0] if command.strip() else command
    what = (
        f"exited with code {exit_code}"
        if exit_code is not None
        else f"did not finish within {step_timeout:.0f} s"
    )
    return StepFailed(
        f"step {number}/{total} {what}: {first_line}",
        number=number,
        command=command,
        exit_code=exit_code,
        tail=tail,
        hint=f"the build container was deleted and alias {template.alias} is unchanged; "
        "fix the step in the fleet file (try it in a container launched from the base) "
        "and build again",
    )


# --- images and aliases ----------------------------------------------------------------------


def publish(client: Any, instance: str, properties: Mapping[str, str], *, timeout: float) -> str:
    """Publish the stopped ``instance`` as a private image with ``properties``; its fingerprint.

    Publishing content the host already has fails in LXD with "The image already exists"; that
    image is then the result, with ``properties`` merged into its own.
    """
    what = f"publish {instance}"
    body = {
        "source": {"type": "instance", "name": instance},
        "properties": dict(properties),
        "public": False,
    }
    try:
        meta = lxdops.wait_operation(
            client, lxdops.call(what, client.api.images.post, json=body), what, timeout
        )
    except LxdError as exc:
        found = _IMAGE_EXISTS.search(exc.message)
        if found is None:
            raise
        set_image_properties(client, found.group(1), properties)
        return found.group(1)
    return str(meta["fingerprint"])


def set_image_properties(client: Any, fingerprint: str, properties: Mapping[str, str]) -> None:
    """Merge ``properties`` into the image's (``PATCH``)."""
    lxdops.call(
        f"update image {fingerprint[:12]}",
        client.api.images[fingerprint].patch,
        json={"properties": dict(properties)},
    )


def alias_target(client: Any, alias: str) -> str | None:
    """The fingerprint ``alias`` names on the host, or None."""
    try:
        response = lxdops.call(f"read alias {alias}", client.api.images.aliases[_q(alias)].get)
    except LxdError as exc:
        if exc.status == 404:
            return None
        raise
    return str(response.json()["metadata"]["target"])


def set_alias(client: Any, alias: str, fingerprint: str, *, description: str = "") -> None:
    """Point ``alias`` at ``fingerprint``, creating it when missing (one request when it exists)."""
    body = {"target": fingerprint, "description": description}
    try:
        lxdops.call(f"move alias {alias}", client.api.images.aliases[_q(alias)].put, json=body)
    except LxdError as exc:
        if exc.status != 404:
            raise
        body["name"] = alias
        lxdops.call(f"create alias {alias}", client.api.images.aliases.post, json=body)


def point_alias(client: Any, alias: str, fingerprint: str) -> str | None:
    """Point ``alias`` at ``fingerprint``, keeping its old image as ``ALIAS-previous``.

    ``ALIAS-previous`` is moved first, then ``alias``, so ``alias`` never goes missing. Returns
    the fingerprint ``alias`` named before, or None when it was missing or already right.
    """
    old = alias_target(client, alias)
    if old == fingerprint:
        return None
    if old is not None:
        set_alias(
            client,
            recipe.previous_alias(alias),
            old,
            description=f"previous image of {alias}, for rollback (lxdgpu-reconcile)",
        )
    set_alias(client, alias, fingerprint, description="template image (lxdgpu-reconcile)")
    return old


def list_images(client: Any) -> tuple[ImageObs, ...]:
    """Every image on the host, with aliases and properties (one request)."""
    response = lxdops.call("list images", client.api.images.get, params={"recursion": 1})
    return tuple(reading.parse_image(data) for data in response.json()["metadata"] or ())


def https_address(client: Any, endpoint: str) -> str:
    """An ``https://ADDRESS:PORT`` other hosts can pull images from: the fleet's endpoint when it
    is https, else the first address the host listens on (``core.https_address``)."""
    if endpoint.startswith("https://"):
        return endpoint.rstrip("/")
    addresses = (client.host_info.get("environment") or {}).get("addresses") or []
    if not addresses:
        raise LxdError(
            "the host has no https listener, so other hosts cannot pull images from it",
            hint="set one on the host: `lxc config set core.https_address :8443`",
        )
    return f"https://{addresses[0]}"


def copy_image(
    source_client: Any,
    source_https_address: str,
    target_client: Any,
    fingerprint: str,
    *,
    alias: str,
    properties: Mapping[str, str],
    timeout: float = lxdops.DEFAULT_TIMEOUT,
) -> bool:
    """Copy image ``fingerprint`` to the target host, set its properties and point ``alias``.

    The target pulls the image from ``source_https_address`` with a one-time secret and the
    source's certificate (pylxd's ``Image.copy`` cannot do this from a unix-socket client). The
    alias moves as in ``point_alias``. Returns False when the target already had the image.
    """
    transferred = not has_image(target_client, fingerprint)
    if transferred:
        _pull_image(
            source_client, source_https_address, target_client, fingerprint, properties, timeout
        )
    set_image_properties(target_client, fingerprint, properties)
    point_alias(target_client, alias, fingerprint)
    return transferred


def _pull_image(
    source_client: Any,
    source_https_address: str,
    target_client: Any,
    fingerprint: str,
    properties: Mapping[str, str],
    timeout: float,
) -> None:
    token = lxdops.call(
        f"create a download secret for image {fingerprint[:12]}",
        source_client.api.images[fingerprint].secret.post,
        json={},
    )
    token_id = lxdops.operation_id(token)
    try:
        body = {
            "source": {
                "type": "image",
                "mode": "pull",
                "server": source_https_address,
                "protocol": "lxd",
                "fingerprint": fingerprint,
                "secret": token.json()["metadata"]["metadata"]["secret"],
                "certificate": source_client.host_info["environment"]["certificate"],
            },
            "properties": dict(properties),
            "public": False,
        }
        what = f"copy image {fingerprint[:12]} from {source_https_address}"
        response = lxdops.call(what, target_client.api.images.post, json=body)
        lxdops.wait_operation(target_client, response, what, timeout)
    finally:
        cancel_operation(source_client, token_id)


def cancel_operation(client: Any, op_id: str) -> None:
    """Cancel operation ``op_id`` when it still runs (an unused download token); never raises
    for an operation that ended."""
    try:
        lxdops.call("cancel operation", client.api.operations[op_id].delete)
    except LxdError as exc:
        if exc.status not in (400, 404):  # it ended already (LXD cancels a token once used)
            raise


def has_image(client: Any, fingerprint: str) -> bool:
    """Whether the host has image ``fingerprint``."""
    try:
        lxdops.call(f"read image {fingerprint[:12]}", client.api.images[fingerprint].get)
    except LxdError as exc:
        if exc.status == 404:
            return False
        raise
    return True


# --- clean-up --------------------------------------------------------------------------------


def remove_leftover_builds(
    client: Any, *, template: str | None = None, timeout: float = lxdops.DEFAULT_TIMEOUT
) -> list[str]:
    """Delete the build containers on the host (only those of ``template`` when given).

    They are found by their tags (``user.lxdgpu.role: build``), never by name. Returns the
    names deleted.
    """
    response = lxdops.call(
        "list build containers",
        client.api.instances.get,
        params={"recursion": 1, "filter": f"config.{TAG_ROLE} eq {recipe.ROLE_BUILD}"},
    )
    removed = []
    for instance in response.json()["metadata"] or ():
        config = instance.get("config") or {}
        if not recipe.is_build_container(config):
            continue
        if template is not None and config.get(recipe.TAG_TEMPLATE) != template:
            continue
        remove_instance(client, instance["name"], timeout=timeout)
        removed.append(str(instance["name"]))
    return removed


def prune_old_images(
    client: Any, template: str, *, timeout: float = lxdops.DEFAULT_TIMEOUT
) -> list[str]:
    """Delete the images of ``template`` that are no longer needed; their fingerprints.

    Only images tagged by this tool for ``template`` are candidates, and of those only the ones
    no alias names (so never the current image or ``ALIAS-previous``) and no instance on the host
    was created from (``volatile.base_image``).
    """
    used = _base_images(client)
    deleted: list[str] = []
    for image in list_images(client):
        if _prunable(image, template, used):
            what = f"delete image {image.fingerprint[:12]}"
            response = lxdops.call(what, client.api.images[image.fingerprint].delete)
            lxdops.wait_operation(client, response, what, timeout)
            deleted.append(image.fingerprint)
    return deleted


def _prunable(image: ImageObs, template: str, used: Set[str]) -> bool:
    return (
        image.managed
        and image.properties.get(recipe.PROP_TEMPLATE) == template
        and not image.aliases
        and image.fingerprint not in used
    )


def _base_images(client: Any) -> set[str]:
    response = lxdops.call("list instances", client.api.instances.get, params={"recursion": 1})
    return {
        str((instance.get("config") or {}).get("volatile.base_image"))
        for instance in response.json()["metadata"] or ()
    }


def _q(name: str) -> str:
    return quote(name, safe="")
