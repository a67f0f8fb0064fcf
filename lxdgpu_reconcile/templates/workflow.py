"""Build one template now and copy it to its hosts: what ``lxdgpu-reconcile build`` does.

Does I/O: connects to the build host and the distribution hosts (``observe.connect``) and writes
through ``execute.templates``. Decides on its own, from the fleet and the build host's images,
whether a build is needed (``templates.recipe``): an unchanged recipe builds nothing, a recipe
that an older image of the template already carries (the fleet file was reverted) points the
alias back at that image, anything else builds. The planner makes the same decisions for
``plan``/``apply``; this module is for the admin who wants to run and watch one build.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute import images as executing
from lxdgpu_reconcile.execute.lxdops import DEFAULT_TIMEOUT, LxdError
from lxdgpu_reconcile.fleet.models import Fleet, Template
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.state import TAG_PREFIX, ImageObs
from lxdgpu_reconcile.templates import recipe
from lxdgpu_reconcile.templates.sources import TemplateFileError, template_files

Connect = Callable[..., Any]


class BuildError(ToolError):
    """The template could not be built; ``hint`` says what to do, ``tail`` is a step's output."""

    def __init__(self, message: str, hint: str = "", tail: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint)
        self.tail = tail


@dataclass(frozen=True)
class CopyOutcome:
    host: str
    #: copied: the image was transferred; aliased: the host had the image, the alias moved to it.
    action: Literal["copied", "aliased", "up to date", "failed"]
    seconds: float = 0.0
    error: str = ""
    hint: str = ""


@dataclass(frozen=True)
class Outcome:
    """What ``build_and_distribute`` did."""

    template: str
    alias: str
    build_host: str
    recipe_hash: str
    fingerprint: str
    action: Literal["built", "restored", "unchanged"]
    #: Why it was built or restored ("" when unchanged).
    reason: str = ""
    build: executing.BuildResult | None = None
    copies: tuple[CopyOutcome, ...] = ()
    removed_builds: tuple[str, ...] = ()
    pruned: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(copy.action != "failed" for copy in self.copies)


def build_and_distribute(
    fleet: Fleet,
    name: str,
    *,
    base_dir: Path,
    force: bool = False,
    distribute: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    step_timeout: float = executing.DEFAULT_STEP_TIMEOUT,
    progress: executing.Progress = lambda _: None,
    connect: Connect = connecting.connect,
) -> Outcome:
    """Build template ``name`` on its build host when needed (always with ``force``), then copy
    it to every host that lacks it (unless not ``distribute``).

    ``base_dir`` is the fleet file's folder (template files' ``source:``). Raises
    ``BuildError`` when nothing could be built; a failed copy is reported in the outcome.
    """
    template = _template(fleet, name)
    contents = _contents(template, base_dir)
    client = _connect(connect, fleet, template.build_host, timeout)
    try:
        outcome = _build(
            client, fleet, name, template, contents, force, progress, timeout, step_timeout
        )
    except LxdError as exc:
        raise _build_error(exc, template) from None
    targets = recipe.copy_targets(fleet, name) if distribute else ()
    if not targets:
        return outcome
    try:
        properties = _managed_properties(client, outcome.fingerprint)
        source = executing.https_address(client, fleet.hosts[template.build_host].endpoint)
    except LxdError as exc:
        raise BuildError(f"{template.build_host}: {exc.message}", exc.hint) from None
    copies = tuple(
        _copy(fleet, host, client, source, outcome, properties, progress, timeout, connect)
        for host in targets
    )
    pruned = dict(outcome.pruned)
    for copy in copies:
        if copy.action in ("copied", "aliased"):
            pruned[copy.host] = _prune(fleet, copy.host, name, timeout, connect)
    return replace(outcome, copies=copies, pruned=pruned)


def _template(fleet: Fleet, name: str) -> Template:
    if name not in fleet.templates:
        known = ", ".join(fleet.templates) or "none"
        raise BuildError(
            f"the fleet has no template {name!r} (templates: {known})",
            "name one of the fleet's templates (the key under templates:, not its alias)",
        )
    return fleet.templates[name]


def _contents(template: Template, base_dir: Path) -> dict[str, bytes]:
    try:
        return template_files(template, base_dir)
    except TemplateFileError as exc:
        raise BuildError(exc.message, exc.hint) from None


def _connect(connect: Connect, fleet: Fleet, host: str, timeout: float) -> Any:
    try:
        return connect(host, fleet.hosts[host], timeout=timeout)
    except connecting.HostConnectError as exc:
        raise BuildError(exc.message, exc.hint) from None


@dataclass(frozen=True)
class _Recipe:
    """The template's recipe as found on its build host."""

    hash: str
    base_source: dict[str, str]
    images: tuple[ImageObs, ...]


def _resolve(
    client: Any, fleet: Fleet, name: str, template: Template, contents: dict[str, bytes]
) -> _Recipe:
    images = executing.list_images(client)
    base = recipe.parse_base(template, fleet.image_servers)
    key = recipe.base_key(base, images)
    source = recipe.base_source(base, images)
    if key is None or source is None:
        raise BuildError(
            f"the base image {template.base!r} of template {name} is not on build host "
            f"{template.build_host}",
            f"import it there under the alias {base.alias!r}, or write the base as "
            "IMAGE_SERVER:ALIAS with a server from image_servers",
        )
    hashed = recipe.recipe_hash(template, key, file_contents=contents)
    return _Recipe(hash=hashed, base_source=source, images=images)


def _build(
    client: Any,
    fleet: Fleet,
    name: str,
    template: Template,
    contents: dict[str, bytes],
    force: bool,
    progress: executing.Progress,
    timeout: float,
    step_timeout: float,
) -> Outcome:
    host, alias = template.build_host, template.alias
    removed = tuple(executing.remove_leftover_builds(client, template=name, timeout=timeout))
    for leftover in removed:
        progress(executing.BuildNote(f"{host}: removed leftover build container {leftover}"))
    found = _resolve(client, fleet, name, template, contents)
    current = _by_alias(found.images, alias)
    reason = recipe.build_reason(alias, current, found.hash)
    outcome = Outcome(
        template=name,
        alias=alias,
        build_host=host,
        recipe_hash=found.hash,
        fingerprint=current.fingerprint if current else "",
        action="unchanged",
        removed_builds=removed,
    )
    if reason is None and not force:
        progress(executing.BuildNote(f"{host}: {alias} is up to date ({found.hash})"))
        return outcome
    kept = None if force else recipe.image_with_recipe(found.images, name, found.hash)
    if kept is not None:
        progress(executing.BuildNote(f"{host}: pointing {alias} back at {_fp(kept)}"))
        executing.point_alias(client, alias, kept.fingerprint)
        why = f"{reason}; image {_fp(kept)} was built from this recipe"
        return replace(outcome, fingerprint=kept.fingerprint, action="restored", reason=why)
    progress(executing.BuildNote(f"{host}: building {alias}: {reason or 'forced'}"))
    result = executing.build_template(
        client,
        name,
        template,
        recipe_hash=found.hash,
        files=contents,
        base_source=found.base_source,
        progress=progress,
        timeout=timeout,
        step_timeout=step_timeout,
    )
    pruned = {host: tuple(executing.prune_old_images(client, name, timeout=timeout))}
    return replace(
        outcome,
        fingerprint=result.fingerprint,
        action="built",
        reason=reason or "--force",
        build=result,
        pruned=pruned,
    )


def _copy(
    fleet: Fleet,
    host: str,
    source_client: Any,
    source_address: str,
    outcome: Outcome,
    properties: dict[str, str],
    progress: executing.Progress,
    timeout: float,
    connect: Connect,
) -> CopyOutcome:
    started = time.monotonic()
    try:
        target = _connect(connect, fleet, host, timeout)
        current = _by_alias(executing.list_images(target), outcome.alias)
        if current is not None and current.fingerprint == outcome.fingerprint:
            return CopyOutcome(host, "up to date")
        progress(executing.BuildNote(f"{host}: copying {outcome.alias} from {outcome.build_host}"))
        transferred = executing.copy_image(
            source_client,
            source_address,
            target,
            outcome.fingerprint,
            alias=outcome.alias,
            properties=properties,
            timeout=timeout,
        )
    except (BuildError, LxdError) as exc:
        return CopyOutcome(host, "failed", error=exc.message, hint=exc.hint)
    action: Literal["copied", "aliased"] = "copied" if transferred else "aliased"
    return CopyOutcome(host, action, seconds=time.monotonic() - started)


def _prune(fleet: Fleet, host: str, name: str, timeout: float, connect: Connect) -> tuple[str, ...]:
    """Old images of the template on ``host``; a failure here is not worth failing the copy."""
    try:
        client = _connect(connect, fleet, host, timeout)
        return tuple(executing.prune_old_images(client, name, timeout=timeout))
    except (BuildError, LxdError):
        return ()


def _managed_properties(client: Any, fingerprint: str) -> dict[str, str]:
    """The image's own properties of this tool (and its description), to carry to other hosts."""
    for image in executing.list_images(client):
        if image.fingerprint == fingerprint:
            return {
                key: value
                for key, value in image.properties.items()
                if key.startswith(TAG_PREFIX) or key == "description"
            }
    return {}


def _by_alias(images: tuple[ImageObs, ...], alias: str) -> ImageObs | None:
    return next((image for image in images if alias in image.aliases), None)


def _build_error(exc: LxdError, template: Template) -> BuildError:
    if isinstance(exc, executing.StepFailed):
        return BuildError(exc.message, exc.hint, exc.tail)
    return BuildError(
        f"building template {template.alias} failed: {exc.message}",
        exc.hint or f"the build container was deleted and alias {template.alias} is unchanged",
    )


def _fp(image: ImageObs) -> str:
    return image.fingerprint[:12]
