"""The data of the web page and of ``/api/v1/status``, from the board's last observation.

Pure. The shape is that of ``status --format json`` (``report.status.status_json``, format 1),
built from the last snapshot of each host, with fields added for the page (docs/web.md):
top-level ``observed_at``, ``interval``, ``round`` and ``pending_error``; per host ``stale``,
``read_at``, ``attempted_at``, ``memory_total``, ``memory_used`` and each GPU's ``holders``; per
container ``stale``, ``description``, ``gpus``, ``cuda``, ``outdated`` and ``pending`` (what a
plan against the observation would change: ``web.pending``, made when the board records it).
Error texts are stripped of file paths of certificates and keys, so the page can be shown to
anyone. ``notes`` and ``memory_text`` make two cells of the page (``page.js`` does the same).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.planning.desired_profiles import cuda_profile_name
from lxdgpu_reconcile.report.status import ABSENT, UNKNOWN, status_json
from lxdgpu_reconcile.state import FleetSnapshot, HostError, HostSnapshot, InstanceObs
from lxdgpu_reconcile.web.board import Observation

#: Anything that looks like the path of a certificate or key file, replaced in error texts.
_KEY_PATH = re.compile(r"[^\s'\"(),;:]*\.(?:crt|key|pem|p12|pfx)\b", re.IGNORECASE)
HIDDEN_PATH = "<certificate file>"


def page_data(fleet: Fleet, observation: Observation, *, interval: float) -> dict[str, Any]:
    """The page's data: ``status_json`` over the shown snapshots, plus the page's own fields."""
    views = observation.hosts
    snapshot = FleetSnapshot(hosts={name: view.shown for name, view in views.items()})
    data = status_json(fleet, snapshot)
    secrets = _secret_paths(fleet)
    changes = observation.changes.by_container if observation.changes is not None else {}
    for host in data["hosts"]:
        view = views[host["name"]]
        host["stale"] = view.stale
        host["read_at"] = _time(view.read_at)
        host["attempted_at"] = _time(view.attempted_at)
        host["memory_total"] = view.shown.memory_total
        host["memory_used"] = view.shown.memory_used
        if view.error is not None:
            host["reachable"] = False
            host["error"] = _error_json(view.error, secrets)
        holders = _gpu_holders(view.shown)
        for gpu in host["gpus"] or ():
            gpu["holders"] = sorted(holders.get(str(gpu["id"]), set()) | holders.get("*", set()))
    for container in data["containers"]:
        view = views[container["host"]]
        instance = view.shown.instances.get(container["name"])
        container["stale"] = view.stale
        container["description"] = instance.description if instance else ""
        container["gpus"] = _gpus_of(instance) if instance else []
        container["cuda"] = sorted(
            v for v in fleet.cuda if cuda_profile_name(v) in container["profiles"]
        )
        container["outdated"] = _outdated(fleet, view.shown, container)
        container["pending"] = list(changes.get((container["host"], container["name"]), ()))
    data["ok"] = all(host["reachable"] for host in data["hosts"])
    data["observed_at"] = _time(observation.finished_at)
    data["interval"] = interval
    data["round"] = observation.rounds
    planned = observation.changes
    error = planned.error if planned is not None else None
    data["pending_error"] = None if error is None else scrub(error, secrets)
    return data


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds")


def _secret_paths(fleet: Fleet) -> list[str]:
    paths = {
        str(value)
        for host in fleet.hosts.values()
        for value in (host.client_cert, host.client_key, host.server_cert)
        if value
    }
    return sorted(paths, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` without the fleet's certificate and key paths, nor anything like one."""
    for secret in secrets:
        text = text.replace(secret, HIDDEN_PATH)
    return _KEY_PATH.sub(HIDDEN_PATH, text)


def _error_json(error: HostError, secrets: list[str]) -> dict[str, str]:
    return {
        "kind": error.kind.value,
        "message": scrub(error.message, secrets),
        "hint": scrub(error.hint, secrets),
    }


def _gpu_devices(instance: InstanceObs) -> list[Mapping[str, str]]:
    devices = instance.expanded_devices or instance.devices
    return [devices[name] for name in sorted(devices) if devices[name].get("type") == "gpu"]


def _gpus_of(instance: InstanceObs) -> list[str]:
    """Each GPU device of the container: ``id=N``, ``pci=ADDR``, ``product=ID`` or ``all``."""
    shown = []
    for device in _gpu_devices(instance):
        selectors = [
            f"{key}={device[key]}" for key in ("id", "pci", "productid") if device.get(key)
        ]
        shown.append(" ".join(selectors) or "all")
    return shown


def _gpu_holders(host: HostSnapshot) -> dict[str, set[str]]:
    """Container names by the GPU id they select (``*``: every GPU of the host)."""
    by_pci = {gpu.pci_address: str(gpu.id) for gpu in host.gpus}
    holders: dict[str, set[str]] = {}
    for instance in host.instances.values():
        for device in _gpu_devices(instance):
            if device.get("id"):
                key = device["id"]
            elif device.get("pci"):
                key = by_pci.get(device["pci"], device["pci"])
            else:
                key = "*"
            holders.setdefault(key, set()).add(instance.name)
    return holders


def _outdated(fleet: Fleet, host: HostSnapshot, container: Mapping[str, Any]) -> bool | None:
    """Whether the container was made from an older image than its template's alias names now;
    None when that cannot be told."""
    template = fleet.templates.get(container["template"] or "")
    if template is None or not container["image_fingerprint"]:
        return None
    current = host.image_by_alias(template.alias)
    if current is None:
        return None
    return bool(current.fingerprint != container["image_fingerprint"])


def notes(container: Mapping[str, Any]) -> list[str]:
    """The Notes column of a container of ``page_data``: where a finished move took it, or that
    the tool does not manage it, then what a plan would change (``pending``)."""
    found: list[str] = []
    if container.get("moved_to"):
        found.append(f"moved to {container['moved_to']}")
    elif not container.get("managed") and container.get("state") not in (ABSENT, UNKNOWN):
        found.append("not managed")
    return found + list(container.get("pending") or ())


GIB = 1024**3


def memory_text(host: Mapping[str, Any]) -> str:
    """A host's memory of ``page_data`` as "12.3 / 31.2 GiB" (used / total), or "31.2 GiB"
    when only the total is known."""
    total = f"{host['memory_total'] / GIB:.1f} GiB"
    used = host.get("memory_used")
    return total if used is None else f"{used / GIB:.1f} / {total}"
