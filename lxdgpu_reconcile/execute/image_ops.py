"""Images and aliases on one LXD host: publish, properties, aliases, copies between hosts.

Does I/O, through ``observe.lxdapi.LxdApi``. The building blocks of ``execute.images`` (which
re-exports them): ``point_alias`` keeps the old image as ``ALIAS-previous``; ``copy_image`` pulls
an image from one host to another over LXD's own image transfer, with a one-time secret (the
images are private), and sets the alias there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from lxdgpu_reconcile.execute import lxdops
from lxdgpu_reconcile.execute.lxdops import LxdError
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.state import ImageObs
from lxdgpu_reconcile.templates import recipe

_IMAGE_EXISTS = re.compile(r"The image already exists: ([0-9a-f]{64})")


def publish(client: LxdApi, instance: str, properties: Mapping[str, str], *, timeout: float) -> str:
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
        meta = client.create("images", body, timeout=timeout, what=what)
    except LxdError as exc:
        found = _IMAGE_EXISTS.search(exc.message)
        if found is None:
            raise
        set_image_properties(client, found.group(1), properties)
        return found.group(1)
    return str(meta["fingerprint"])


def set_image_properties(client: LxdApi, fingerprint: str, properties: Mapping[str, str]) -> None:
    """Merge ``properties`` into the image's (``PATCH``)."""
    client.patch(
        "images",
        fingerprint,
        {"properties": dict(properties)},
        what=f"update image {fingerprint[:12]}",
    )


def alias_target(client: LxdApi, alias: str) -> str | None:
    """The fingerprint ``alias`` names on the host, or None."""
    try:
        found, _ = client.get("images/aliases", alias, what=f"read alias {alias}")
    except LxdError as exc:
        if exc.status == 404:
            return None
        raise
    return str(found["target"])


def set_alias(client: LxdApi, alias: str, fingerprint: str, *, description: str = "") -> None:
    """Point ``alias`` at ``fingerprint``, creating it when missing (one request when it exists)."""
    body = {"target": fingerprint, "description": description}
    try:
        client.put(
            "images/aliases",
            alias,
            body,
            timeout=lxdops.DEFAULT_TIMEOUT,
            what=f"move alias {alias}",
        )
    except LxdError as exc:
        if exc.status != 404:
            raise
        body["name"] = alias
        client.create(
            "images/aliases", body, timeout=lxdops.DEFAULT_TIMEOUT, what=f"create alias {alias}"
        )


def point_alias(client: LxdApi, alias: str, fingerprint: str) -> str | None:
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


def list_images(client: LxdApi) -> tuple[ImageObs, ...]:
    """Every image on the host, with aliases and properties (one request)."""
    listed = client.list("images", recursion=1, what="list images")
    return tuple(reading.parse_image(data) for data in listed)


def https_address(client: LxdApi, endpoint: str) -> str:
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
    source_client: LxdApi,
    source_https_address: str,
    target_client: LxdApi,
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
    source_client: LxdApi,
    source_https_address: str,
    target_client: LxdApi,
    fingerprint: str,
    properties: Mapping[str, str],
    timeout: float,
) -> None:
    token_id, secret = source_client.image_secret(
        fingerprint, what=f"create a download secret for image {fingerprint[:12]}"
    )
    try:
        body = {
            "source": {
                "type": "image",
                "mode": "pull",
                "server": source_https_address,
                "protocol": "lxd",
                "fingerprint": fingerprint,
                "secret": secret,
                "certificate": source_client.host_info["environment"]["certificate"],
            },
            "properties": dict(properties),
            "public": False,
        }
        what = f"copy image {fingerprint[:12]} from {source_https_address}"
        target_client.create("images", body, timeout=timeout, what=what)
    finally:
        cancel_operation(source_client, token_id)


def cancel_operation(client: LxdApi, op_id: str) -> None:
    """Cancel operation ``op_id`` when it still runs (an unused download token); never raises
    for an operation that ended."""
    try:
        client.cancel_operation(op_id, what="cancel operation")
    except LxdError as exc:
        if exc.status not in (400, 404):  # it ended already (LXD cancels a token once used)
            raise


def has_image(client: LxdApi, fingerprint: str) -> bool:
    """Whether the host has image ``fingerprint``."""
    try:
        client.get("images", fingerprint, what=f"read image {fingerprint[:12]}")
    except LxdError as exc:
        if exc.status == 404:
            return False
        raise
    return True
