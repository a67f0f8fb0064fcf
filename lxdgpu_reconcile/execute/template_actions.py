"""The template actions of a plan: build a template, copy its image, move its alias back.

Does I/O, through ``execute.images``. What to build, copy or point back is decided by the planner
(``planning.template_steps``); these functions check that the plan still holds (the files hash to
the recipe the plan saw, the source image is the one it copies) and carry it out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import images, lxdops
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.templates import recipe


def build(
    client: LxdApi,
    body: plans.BuildTemplateBody,
    *,
    files: Mapping[str, bytes],
    timeout: float,
    step_timeout: float = images.DEFAULT_STEP_TIMEOUT,
    show: Callable[[str, images.BuildEvent], None],
) -> str:
    """Build the template on the host of ``client``; ``show`` gets each progress line and the
    event it tells of."""
    try:
        now = recipe.recipe_hash(body.spec, body.base_key, file_contents=files)
    except ValueError as exc:
        raise lxdops.LxdError(f"template {body.template}: {exc}") from None
    if now != body.recipe_hash:
        raise lxdops.StaleObject(
            f"the files of template {body.template} changed since the plan was made",
            hint="run plan again",
        )

    def progress(event: images.BuildEvent) -> None:
        show(_build_line(event), event)

    built = images.build_template(
        client,
        body.template,
        body.spec,
        recipe_hash=now,
        files=files,
        base_source=body.base_source,
        progress=progress,
        timeout=timeout,
        step_timeout=step_timeout,
    )
    images.prune_old_images(client, body.template, timeout=timeout)
    return f"built {built.fingerprint[:12]} in {built.seconds:.0f}s"


def copy(
    source: LxdApi,
    client: LxdApi,
    body: plans.CopyTemplateBody,
    *,
    source_endpoint: str,
    timeout: float,
) -> str:
    """Copy the image the plan names from ``source`` (the build host) to the host of ``client``."""
    fingerprint = images.alias_target(source, body.alias)
    image = next((i for i in images.list_images(source) if i.fingerprint == fingerprint), None)
    if image is None or image.properties.get(recipe.PROP_RECIPE_HASH) != body.recipe_hash:
        raise lxdops.StaleObject(
            f"{body.alias} on {body.source_host} is not the image the plan copies",
            hint="run plan again",
        )
    address = images.https_address(source, source_endpoint)
    properties = {
        k: v
        for k, v in image.properties.items()
        if k.startswith(state.TAG_PREFIX) or k == "description"
    }
    images.copy_image(
        source,
        address,
        client,
        image.fingerprint,
        alias=body.alias,
        properties=properties,
        timeout=timeout,
    )
    images.prune_old_images(client, body.template, timeout=timeout)
    return f"copied {image.fingerprint[:12]} from {body.source_host}"


def alias(client: LxdApi, body: plans.AliasTemplateBody) -> str:
    """Point the template's alias back at the image the plan names, if it still is that image."""
    image = next((i for i in images.list_images(client) if i.fingerprint == body.fingerprint), None)
    if (
        image is None
        or image.properties.get(recipe.PROP_TEMPLATE) != body.template
        or image.properties.get(recipe.PROP_RECIPE_HASH) != body.recipe_hash
    ):
        raise lxdops.StaleObject(
            f"image {body.fingerprint[:12]} is no longer the build of template {body.template} "
            "that the plan points its alias at",
            hint="run plan again",
        )
    images.point_alias(client, body.alias, body.fingerprint)
    return f"{body.alias} points back at {body.fingerprint[:12]}, built from this recipe"


def _build_line(event: images.BuildEvent) -> str:
    if isinstance(event, images.StepStarted):
        return f"[{event.number}/{event.total}] {event.command}"
    if isinstance(event, images.StepOutput):
        return f"    {event.line}"
    if isinstance(event, images.StepFinished):
        return f"[{event.number}/{event.total}] done in {event.seconds:.1f}s"
    return event.message
