"""Template images on LXD hosts: build, publish, copy between hosts, rotate aliases, clean up.

Does I/O, all of it through ``observe.lxdapi.LxdApi`` (deadlines, errors in plain words). What to
build and why is decided elsewhere (``templates.recipe``, the planner); this module only carries
it out.

- ``build_template`` creates a tagged build container from the base (tagged also with the process
  that runs the build, ``execute.builders``), pushes the template's files,
  runs each step, stops the container, publishes it with the recipe hash and moves the alias
  (the old image keeps ``ALIAS-previous``). The build container is deleted in a ``finally``, also
  on failure and on Ctrl-C; the next plan removes any that a killed run left behind
  (``planning.template_steps``), once their builder is gone.
- Steps run through ``execute.commands.run_command``: no websockets (pylxd's ``wss://`` exec does
  not verify the pinned server certificate), output streamed to ``progress`` line by line.
- ``copy_image`` pulls an image from one host to another over LXD's own image transfer, with a
  one-time secret (the images are private), and sets the alias there. It and the other image and
  alias operations live in ``execute.image_ops`` and are re-exported here.
- ``prune_old_images`` deletes a template's tagged images that no alias names and no container
  was created from.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from lxdgpu_reconcile.execute import builders, commands, lxdops
from lxdgpu_reconcile.execute.image_ops import (
    alias_target,
    cancel_operation,
    copy_image,
    has_image,
    https_address,
    list_images,
    point_alias,
    publish,
    set_alias,
    set_image_properties,
)
from lxdgpu_reconcile.execute.lxdops import LxdError
from lxdgpu_reconcile.fleet.models import Template
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.state import ImageObs
from lxdgpu_reconcile.templates import recipe

__all__ = [
    "DEFAULT_STEP_TIMEOUT",
    "BuildEvent",
    "BuildNote",
    "BuildResult",
    "Progress",
    "StepFailed",
    "StepFinished",
    "StepOutput",
    "StepStarted",
    "alias_target",
    "build_template",
    "cancel_operation",
    "copy_image",
    "has_image",
    "https_address",
    "list_images",
    "point_alias",
    "prune_old_images",
    "publish",
    "push_file",
    "remove_instance",
    "set_alias",
    "set_image_properties",
]

#: Default deadline for one step of a build, in seconds.
DEFAULT_STEP_TIMEOUT = 3600.0


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
    client: LxdApi,
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
    client: LxdApi, container: str, name: str, base_source: Mapping[str, str], timeout: float
) -> None:
    body = {
        "name": container,
        "description": f"lxdgpu-reconcile build of template {name}; safe to delete",
        "source": dict(base_source),
        "profiles": ["default"],
        # The builder tags let a plan made meanwhile tell this build from a leftover.
        "config": recipe.build_container_config(name, builders.this_builder()),
    }
    lxdops.create(client, "instances", body, timeout=timeout)


def _base_fingerprint(client: LxdApi, container: str) -> str:
    instance, _ = lxdops.get(client, "instances", container)
    return str(instance.get("config", {}).get("volatile.base_image", ""))


def _delete_build_container(
    client: LxdApi, container: str, progress: Progress, timeout: float
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


def remove_instance(client: LxdApi, name: str, *, timeout: float = lxdops.DEFAULT_TIMEOUT) -> None:
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
    client: LxdApi,
    instance: str,
    path: str,
    content: bytes,
    *,
    mode: str,
    uid: int = 0,
    gid: int = 0,
) -> None:
    """Write ``content`` to ``path`` in the running ``instance`` with ``mode`` (octal text).

    Missing parent directories are created (0755, root). An existing file is replaced, not
    overwritten in place, because LXD keeps the old mode of a file it overwrites.
    """
    _make_parents(client, instance, path)
    try:
        client.delete_file(instance, path, what=f"replace {path}")
    except LxdError as exc:
        if exc.status != 404:
            raise
    client.push_file(
        instance,
        path,
        content,
        mode=recipe.lxd_mode(mode),
        uid=uid,
        gid=gid,
        what=f"push {path}",
    )


def _make_parents(client: LxdApi, instance: str, path: str) -> None:
    parts = [p for p in path.split("/")[:-1] if p]
    for depth in range(1, len(parts) + 1):
        directory = "/" + "/".join(parts[:depth])
        if client.file_exists(instance, directory):
            continue
        client.make_directory(
            instance, directory, mode="0755", uid=0, gid=0, what=f"create {directory}"
        )


# --- steps -----------------------------------------------------------------------------------


def _run_steps(
    client: LxdApi, container: str, template: Template, *, progress: Progress, step_timeout: float
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


# --- clean-up --------------------------------------------------------------------------------


def prune_old_images(
    client: LxdApi, template: str, *, timeout: float = lxdops.DEFAULT_TIMEOUT
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
            client.delete("images", image.fingerprint, timeout=timeout, what=what)
            deleted.append(image.fingerprint)
    return deleted


def _prunable(image: ImageObs, template: str, used: Set[str]) -> bool:
    return (
        image.managed
        and image.properties.get(recipe.PROP_TEMPLATE) == template
        and not image.aliases
        and image.fingerprint not in used
    )


def _base_images(client: LxdApi) -> set[str]:
    return {
        str((instance.get("config") or {}).get("volatile.base_image"))
        for instance in client.list("instances", recursion=1, what="list instances")
    }
