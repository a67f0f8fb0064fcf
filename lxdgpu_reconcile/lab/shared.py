"""Machine resources that labs share, counted across every lab on the machine.

Two labs up at once may need the same NIC parent (``eno1``); labs of earlier versions also
shared the delegation lines they added to this machine's ``/etc/subuid`` (labs now delegate ids
only in each lab host's own copy, see ``lab.hostsys``). The first lab that finds one missing
creates it; every lab that needs a resource some lab created records
itself as one of its users in one registry for the machine (``REGISTRY_DIR/shared.json``, edited
under an exclusive ``flock``). ``lab down`` removes such a resource only when no other lab uses
it any more; a lab directory whose ``lab.json`` is gone no longer counts as a user. A resource
that existed before any lab (a real ``eno1``, Debian's ``root:100000:...`` line) is never in the
registry and never removed.

The registry lives next to the default lab directory, not under ``/run``: id delegations in
``/etc/subuid`` outlive a reboot, and so must the record of which labs use them.

``Registry`` and its methods are pure (tested without a machine); ``open_registry`` does the I/O.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile.lab.faults import LabError
from lxdgpu_reconcile.lab.record import STATE_FILE

REGISTRY_DIR = Path("/var/lib/lxdgpu-reconcile")
REGISTRY_FILE = "shared.json"
LOCK_FILE = "shared.lock"
REGISTRY_VERSION = 1


class Resource(BaseModel):
    """One machine resource a lab created: a veth pair, or one line of a subuid/subgid file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["veth", "subid"]
    #: The interface name (``eno1``), or the line (``root:2901:1``).
    name: str
    #: veth: the other end of the pair.
    peer: str = ""
    #: subid: the file the line is in (``/etc/subuid``).
    file: str = ""

    @property
    def key(self) -> str:
        return veth_key(self.name) if self.kind == "veth" else f"{self.file} {self.name}"

    def __str__(self) -> str:
        return f"veth {self.name}" if self.kind == "veth" else f"{self.name} in {self.file}"


def veth_key(name: str) -> str:
    return f"veth {name}"


def veth(name: str, peer: str) -> Resource:
    return Resource(kind="veth", name=name, peer=peer)


def subid_line(path: Path, line: str) -> Resource:
    return Resource(kind="subid", name=line, file=str(path))


class Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    resource: Resource
    #: Absolute lab directories that use the resource.
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class Release:
    """What one lab going down means for the shared resources."""

    #: Resources no live lab uses any more: the going lab removes them from the machine.
    remove: tuple[Resource, ...]
    #: Resources the going lab used that other labs still use, with those labs.
    keep: tuple[tuple[Resource, tuple[str, ...]], ...]


class Registry(BaseModel):
    """Every lab-created resource on the machine and the labs that use it."""

    model_config = ConfigDict(extra="forbid")

    version: int = REGISTRY_VERSION
    entries: dict[str, Entry] = {}

    def get(self, key: str) -> Resource | None:
        entry = self.entries.get(key)
        return entry.resource if entry else None

    def of_kind(self, kind: str, file: Path | None = None) -> list[Resource]:
        return [
            e.resource
            for e in self.entries.values()
            if e.resource.kind == kind and (file is None or e.resource.file == str(file))
        ]

    def claim(self, resource: Resource, lab: str) -> None:
        """Record that ``lab`` uses ``resource`` (which a lab created)."""
        entry = self.entries.get(resource.key)
        users = entry.users if entry else ()
        if lab not in users:
            users = (*users, lab)
        self.entries[resource.key] = Entry(
            resource=entry.resource if entry else resource, users=users
        )

    def release(self, lab: str, *, alive: Callable[[str], bool]) -> Release:
        """Drop ``lab`` (and every lab that is no longer ``alive``) from every resource.

        The resources left with no user are removed from the registry and returned to be
        removed from the machine, also those that only vanished labs used.
        """
        remove: list[Resource] = []
        keep: list[tuple[Resource, tuple[str, ...]]] = []
        for key, entry in sorted(self.entries.items()):
            others = tuple(u for u in entry.users if u != lab and alive(u))
            if not others:
                remove.append(entry.resource)
                del self.entries[key]
                continue
            if lab in entry.users:
                keep.append((entry.resource, others))
            self.entries[key] = Entry(resource=entry.resource, users=others)
        return Release(remove=tuple(remove), keep=tuple(keep))


def lab_alive(lab_dir: str) -> bool:
    """Whether ``lab_dir`` still holds a lab (its ``lab.json``)."""
    return (Path(lab_dir) / STATE_FILE).exists()


@contextmanager
def open_registry(directory: Path = REGISTRY_DIR) -> Iterator[Registry]:
    """The machine's registry, locked against every other lab until the block ends.

    What the block changes is written back when it ends, also when it raises (a resource created
    before the failure stays recorded). An empty registry leaves no file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        registry = _load(directory / REGISTRY_FILE)
        try:
            yield registry
        finally:
            _save(directory / REGISTRY_FILE, registry)


def _load(path: Path) -> Registry:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Registry()
    try:
        return Registry.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise LabError(
            f"{path} is not a registry of shared lab resources this version understands "
            f"({exc.__class__.__name__}); bring every lab down with the version that made it, "
            "or remove the file by hand"
        ) from None


def _save(path: Path, registry: Registry) -> None:
    if not registry.entries:
        path.unlink(missing_ok=True)
        return
    text = json.dumps(registry.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    fileio.write_atomic(path, text)


def users_text(labs: Iterable[str]) -> str:
    """``the lab in A`` / ``the labs in A, B``."""
    labs = tuple(labs)
    return ("the lab in " if len(labs) == 1 else "the labs in ") + ", ".join(labs)
