"""The lab's stand-in images: busybox from Debian's ``busybox-static``, made locally.

No image server is reachable from the lab, so every image alias the fleet names (a template's
base, the template itself) gets a busybox image of its own: the same rootfs plus
``/etc/lab-image`` naming the alias, so that each has its own fingerprint and a container shows
the template it was really made from. Building (``build_images``) reads ``/bin/busybox`` and
writes one unified image tarball per alias; importing (``import_images``) uploads them to a lab
daemon over its unix socket and adds the aliases.

The container's ``/sbin/init`` sleeps until LXD asks it to stop (SIGPWR), so containers start in
about a second and stop cleanly.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlencode

import yaml

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile.lab.faults import LabError
from lxdgpu_reconcile.lab.sock import LxdSocket, quoted
from lxdgpu_reconcile.lab.stand_ins import SHADOW, STAND_INS
from lxdgpu_reconcile.state import TAG_LAB

BUSYBOX = Path("/bin/busybox")
IMAGE_NAME = "busybox.tar.gz"
#: Property put on every image the lab imports.
LAB_PROPERTY = TAG_LAB

INIT = """#!/bin/sh
# Lab init: stay up until LXD asks the container to stop.
trap 'exit 0' PWR TERM INT USR1 USR2
mkdir -p /run /var/run 2>/dev/null
while :; do sleep 3600 & wait $!; done
"""
PASSWD = "root:x:0:0:root:/root:/bin/sh\nubuntu:x:1000:1000:ubuntu:/home/ubuntu:/bin/sh\n"
GROUP = "root:x:0:\nubuntu:x:1000:\n"
#: Directories of the rootfs: path, mode, uid.
DIRS: tuple[tuple[str, int, int], ...] = (
    ("bin", 0o755, 0),
    ("sbin", 0o755, 0),
    ("usr", 0o755, 0),
    ("usr/bin", 0o755, 0),
    ("usr/sbin", 0o755, 0),
    ("etc", 0o755, 0),
    ("dev", 0o755, 0),
    ("proc", 0o555, 0),
    ("sys", 0o555, 0),
    ("run", 0o755, 0),
    ("var", 0o755, 0),
    ("mnt", 0o755, 0),
    ("tmp", 0o1777, 0),
    ("root", 0o700, 0),
    ("home", 0o755, 0),
    ("home/ubuntu", 0o755, 1000),
)


def applets(busybox: Path = BUSYBOX) -> list[str]:
    """Applet paths such as ``bin/sh`` and ``usr/bin/env``, from ``busybox --list-full``."""
    done = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise LabError(f"{busybox} --list-full failed; reinstall busybox-static")
    return [line.strip() for line in done.stdout.splitlines() if "/" in line.strip()]


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes | None = None) -> None:
    info.uname = info.gname = ""
    info.size = len(data) if data is not None else 0
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _entry(name: str, kind: bytes, mode: int, mtime: int, uid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, mtime, uid, uid
    return info


def metadata(architecture: str, created: int, alias: str = "") -> bytes:
    standing_in = f" standing in for {alias}" if alias else ""
    doc = {
        "architecture": architecture,
        "creation_date": created,
        "properties": {
            "os": "busybox",
            "release": "lab",
            "description": f"busybox{standing_in} (lxdgpu-reconcile lab)",
        },
        "templates": {},
    }
    return yaml.safe_dump(doc, sort_keys=True).encode()


def image_tarball(
    busybox_bytes: bytes, links: Iterable[str], architecture: str, mtime: int, alias: str = ""
) -> bytes:
    """A unified LXD image (``metadata.yaml`` + ``rootfs/``) as deterministic ``tar.gz`` bytes;
    with ``alias``, the stand-in for that alias (``/etc/lab-image`` names it)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        _add(
            tar,
            _entry("metadata.yaml", tarfile.REGTYPE, 0o644, mtime),
            metadata(architecture, mtime, alias),
        )
        _add(tar, _entry("rootfs", tarfile.DIRTYPE, 0o755, mtime))
        for path, mode, uid in DIRS:
            _add(tar, _entry(f"rootfs/{path}", tarfile.DIRTYPE, mode, mtime, uid))
        _add(tar, _entry("rootfs/bin/busybox", tarfile.REGTYPE, 0o755, mtime), busybox_bytes)
        _add(tar, _entry("rootfs/sbin/init", tarfile.REGTYPE, 0o755, mtime), INIT.encode())
        for name, text in (("passwd", PASSWD), ("group", GROUP), ("hostname", "lab\n")):
            _add(tar, _entry(f"rootfs/etc/{name}", tarfile.REGTYPE, 0o644, mtime), text.encode())
        # First passwords (lab.stand_ins): /etc/shadow, chpasswd and vncpasswd stand-ins.
        _add(tar, _entry("rootfs/etc/shadow", tarfile.REGTYPE, 0o600, mtime), SHADOW.encode())
        for path, script in STAND_INS:
            _add(tar, _entry(f"rootfs/{path}", tarfile.REGTYPE, 0o755, mtime), script.encode())
        if alias:
            entry = _entry("rootfs/etc/lab-image", tarfile.REGTYPE, 0o644, mtime)
            _add(tar, entry, f"{alias}\n".encode())
        for link in sorted(set(links) - {"bin/busybox", "sbin/init", *dict(STAND_INS)}):
            info = _entry(f"rootfs/{link}", tarfile.SYMTYPE, 0o777, mtime)
            info.linkname = "/bin/busybox"
            _add(tar, info)
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def build_images(out_dir: Path, aliases: Iterable[str], busybox: Path = BUSYBOX) -> dict[str, Path]:
    """Write the stand-in image tarball of each alias into ``out_dir``: alias -> tarball."""
    return {alias: build_image(out_dir, busybox, alias=alias) for alias in aliases}


def build_image(out_dir: Path, busybox: Path = BUSYBOX, *, alias: str = "") -> Path:
    """Write the busybox image tarball (the stand-in for ``alias``, when given) into ``out_dir``
    (kept when already there)."""
    name = IMAGE_NAME
    if alias:
        name = f"busybox-{hashlib.sha256(alias.encode()).hexdigest()[:16]}.tar.gz"
    path = out_dir / name
    if path.exists():
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    data = image_tarball(
        busybox.read_bytes(),
        applets(busybox),
        architecture=os.uname().machine,
        mtime=int(busybox.stat().st_mtime),
        alias=alias,
    )
    fileio.write_atomic(path, data)
    return path


def import_images(lxd: LxdSocket, tarballs: Mapping[str, Path]) -> tuple[str, ...]:
    """Import each alias's stand-in (``build_images``) under that alias, when the alias is
    missing; the aliases created."""
    return tuple(
        created
        for alias, tarball in tarballs.items()
        for created in import_image(lxd, tarball, [alias])
    )


def import_image(lxd: LxdSocket, tarball: Path, aliases: Iterable[str]) -> tuple[str, ...]:
    """Import ``tarball`` (once) and point each missing alias at it; the aliases created."""
    data = tarball.read_bytes()
    fp = hashlib.sha256(data).hexdigest()
    if lxd.call("GET", f"/1.0/images/{fp}", ok_missing=True) is None:
        headers = {
            "Content-Type": "application/octet-stream",
            "X-LXD-public": "0",
            "X-LXD-properties": urlencode({LAB_PROPERTY: "true"}),
        }
        lxd.call("POST", "/1.0/images", data=data, headers=headers)
    lxd.call("PATCH", f"/1.0/images/{fp}", json_body={"properties": {LAB_PROPERTY: "true"}})
    created = []
    for alias in aliases:
        if lxd.call("GET", f"/1.0/images/aliases/{quoted(alias)}", ok_missing=True) is None:
            body = {"name": alias, "target": fp, "description": "lab busybox stand-in"}
            lxd.call("POST", "/1.0/images/aliases", json_body=body)
            created.append(alias)
    return tuple(created)
