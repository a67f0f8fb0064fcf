"""Helpers for the planner tests: fleets and snapshots from YAML data, and a pure "apply".

``simulate_apply`` performs a plan's non-pending actions on a snapshot the way LXD would (using
the action bodies exactly as the executor must: ``request()``, ``create_request()`` and
``put_request``; a template build or copy leaves an image of the body's recipe under the alias),
adds the keys LXD adds on its own (``volatile.*``, ``image.*``) and refuses what
LXD or the executor refuses: deleting a running or protected container or a profile in use, an
action whose dependency has not run, a write to an object that is no longer what the plan saw
(``Action.observed``) or that is untagged without ``Action.adopt``. Planning again on the result
is the idempotency check.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import requests
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.planning import desired as desiring
from lxdgpu_reconcile.planning import fingerprint as fingerprints
from lxdgpu_reconcile.planning import model as planning
from lxdgpu_reconcile.planning import planner
from lxdgpu_reconcile.planning.common import ObjectKind
from lxdgpu_reconcile.templates import recipe

#: What every case starts from; a case's ``fleet`` is merged onto it key by key.
BASE_FLEET: dict[str, Any] = {
    "version": 1,
    "hosts": {"h1": {"endpoint": "unix:///var/lib/lxd/unix.socket"}},
    "templates": {"desk": {"alias": "tpl-desk", "base": "tpl-base", "build_host": "h1"}},
    "cuda": {"9.0": "/usr/local/cuda-9.0", "10.0": "/usr/local/cuda-10.0"},
}

#: The default profile of a fresh host, as ``lxd init`` leaves it.
FRESH_DEFAULT: dict[str, Any] = {
    "devices": {
        "root": {"type": "disk", "path": "/", "pool": "default"},
        "eth0": {"type": "nic", "nictype": "macvlan", "parent": "eno1", "name": "eth0"},
    }
}

#: Keys LXD writes into a container's local config when it creates it from an image.
LXD_ADDED = {
    "volatile.base_image": "0123abcd",
    "volatile.idmap.base": "0",
    "volatile.idmap.next": "[]",
    "volatile.last_state.idmap": "[]",
    "volatile.uuid": "5e1f0000-0000-4000-8000-000000000000",
    "image.os": "Ubuntu",
    "image.release": "bionic",
}


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, mappings key by key; a ``None`` value deletes."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fleet_from(data: Mapping[str, Any] | str | None) -> Fleet:
    extra: Mapping[str, Any] = yaml.safe_load(data) if isinstance(data, str) else data or {}
    return Fleet.model_validate(merge(BASE_FLEET, extra))


def site_from(data: Mapping[str, Any] | None) -> sites.Site:
    return sites.Site.model_validate(data or {})


# --- snapshots from case data ---------------------------------------------------------------------


def snapshot_from(
    observed: Mapping[str, Any], fleet: Fleet, site: sites.Site
) -> state.FleetSnapshot:
    """A snapshot from a case's ``observed`` mapping (host -> description).

    Per host: ``cpus`` (32), ``gpus`` (ids, none), ``images`` (aliases, ``[tpl-desk]``),
    ``unreachable`` (a message), ``profiles`` (``{default: FRESH_DEFAULT}`` when absent) and
    ``instances``. A profile or instance with ``as_desired: true`` starts from what the plan
    would write (for an instance: plus what LXD adds itself); ``config``/``devices`` entries are
    then merged onto it (``null`` removes), ``untag: true`` drops every ``user.lxdgpu.*`` key.
    """
    first = state.FleetSnapshot(
        hosts={name: _host(name, data, {}) for name, data in observed.items()}
    )
    want = desiring.expand(fleet, first, site)
    return state.FleetSnapshot(
        hosts={name: _host(name, data, _desired_of(want, name)) for name, data in observed.items()}
    )


def _desired_of(want: desiring.DesiredState, host: str) -> dict[str, Any]:
    found = want.hosts.get(host)
    if found is None:
        return {}
    return {"profiles": found.profiles, "instances": found.instances}


def _host(name: str, data: Mapping[str, Any] | None, want: Mapping[str, Any]) -> state.HostSnapshot:
    data = data or {}
    if "unreachable" in data:
        return state.HostSnapshot(
            host=name,
            endpoint="unix:///x",
            error=state.HostError(
                kind=state.HostErrorKind.UNREACHABLE,
                message=data["unreachable"],
                hint=f"start LXD on {name}",
            ),
        )
    profiles = {
        pname: _profile(pname, pdata or {}, want.get("profiles", {}))
        for pname, pdata in (data.get("profiles") or {"default": FRESH_DEFAULT}).items()
    }
    instances = {
        iname: _instance(iname, idata or {}, want.get("instances", {}), profiles)
        for iname, idata in (data.get("instances") or {}).items()
        if not (idata or {}).get("as_desired") or want
    }
    return state.HostSnapshot(
        host=name,
        endpoint="unix:///x",
        cpus=data.get("cpus", 32),
        gpus=tuple(state.GpuObs(id=i) for i in data.get("gpus", ())),
        images=tuple(
            state.ImageObs(fingerprint=f"fp-{alias}", aliases=(alias,))
            for alias in data.get("images", ["tpl-desk"])
        ),
        profiles=profiles,
        instances=instances,
    )


def _profile(
    name: str, data: Mapping[str, Any], want: Mapping[str, desiring.DesiredProfile]
) -> state.ProfileObs:
    base: dict[str, Any] = {"description": "", "config": {}, "devices": {}}
    if data.get("as_desired") and name in want:
        base = want[name].model_dump(include={"description", "config", "devices"})
    body = _overlay(base, data)
    return state.ProfileObs(name=name, **body)


def _instance(
    name: str,
    data: Mapping[str, Any],
    want: Mapping[str, desiring.DesiredInstance],
    profiles: Mapping[str, state.ProfileObs],
) -> state.InstanceObs:
    base: dict[str, Any] = {"profiles": ["default"], "config": dict(LXD_ADDED), "devices": {}}
    if data.get("as_desired") and name in want:
        found = want[name]
        base = {
            "profiles": list(found.profiles),
            "config": {**found.config, **LXD_ADDED},
            "devices": found.devices,
        }
    body = _overlay(base, data)
    return expanded(
        state.InstanceObs(
            name=name,
            type=data.get("type", "container"),
            status=data.get("status", "Running"),
            profiles=tuple(data.get("profiles", body["profiles"])),
            config=body["config"],
            devices=body["devices"],
        ),
        profiles,
    )


def _overlay(base: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key in ("config", "devices"):
        out[key] = merge(out.get(key) or {}, data.get(key) or {})
    if "description" in data:
        out["description"] = data["description"]
    if data.get("untag"):
        out["config"] = {k: v for k, v in out["config"].items() if not k.startswith("user.lxdgpu.")}
    return out


def expanded(obs: state.InstanceObs, profiles: Mapping[str, state.ProfileObs]) -> state.InstanceObs:
    """``obs`` with ``expanded_config``/``expanded_devices`` as LXD computes them."""
    config: dict[str, str] = {}
    devices: dict[str, dict[str, str]] = {}
    for name in obs.profiles:
        if name in profiles:
            config.update(profiles[name].config)
            devices.update(profiles[name].devices)
    config.update(obs.config)
    devices.update(obs.devices)
    return obs.model_copy(update={"expanded_config": config, "expanded_devices": devices})


# --- a pure "apply" -------------------------------------------------------------------------------


class Refused(AssertionError):
    """What LXD would refuse, or an action out of order."""


def simulate_apply(p: planning.Plan, snapshot: state.FleetSnapshot) -> state.FleetSnapshot:
    """``snapshot`` after the executor performed ``p``'s non-pending actions."""
    hosts = dict(snapshot.hosts)
    done: set[str] = set()
    for host_plan in p.hosts:
        if not host_plan.applyable:
            continue
        hosts[host_plan.host] = _apply_host(host_plan, hosts[host_plan.host], done)
    return state.FleetSnapshot(hosts=hosts)


def _apply_host(
    host_plan: planning.HostPlan, snap: state.HostSnapshot, done: set[str]
) -> state.HostSnapshot:
    """``snap`` after ``host_plan``; ``done`` holds the ids performed so far on every host."""
    instances = dict(snap.instances)
    profiles = dict(snap.profiles)
    images = list(snap.images)
    for action in host_plan.actions:
        if action.pending is not None:
            continue
        missing = [dep for dep in action.depends_on if dep not in done]
        if missing:
            raise Refused(f"{action.id} runs before {missing}")
        if action.kind in (planning.ActionKind.UPDATE, planning.ActionKind.DELETE):
            _check_unchanged(action, profiles, instances)
        if action.object.kind is ObjectKind.PROFILE:
            _apply_profile(action, profiles, instances)
        elif action.object.kind is ObjectKind.TEMPLATE:
            images = _apply_template(action, images)
        else:
            _apply_instance(action, instances, profiles)
        done.add(action.id)
    instances = {name: expanded(obs, profiles) for name, obs in instances.items()}
    return snap.model_copy(
        update={"instances": instances, "profiles": profiles, "images": tuple(images)}
    )


def _apply_template(action: planning.Action, images: list[state.ImageObs]) -> list[state.ImageObs]:
    """A build or copy: a tagged image of the body's recipe, and the alias moved onto it."""
    body = action.body
    if isinstance(body, planning.BuildTemplateBody):
        alias = body.spec.alias
    elif isinstance(body, planning.CopyTemplateBody):
        alias = body.alias
    else:
        raise Refused(f"{action.id}: {action.kind} of a template without its body")
    image = state.ImageObs(
        fingerprint="img-" + body.recipe_hash.removeprefix("sha256:"),
        aliases=(alias,),
        properties={
            state.TAG_MANAGED: "true",
            recipe.PROP_TEMPLATE: body.template,
            recipe.PROP_RECIPE_HASH: body.recipe_hash,
        },
    )
    moved = [
        i.model_copy(update={"aliases": tuple(a for a in i.aliases if a != alias)}) for i in images
    ]
    return [*moved, image]


def _check_unchanged(
    action: planning.Action,
    profiles: Mapping[str, state.ProfileObs],
    instances: Mapping[str, state.InstanceObs],
) -> None:
    """What the executor checks before an update or a delete."""
    body = action.body
    keep = body.preserve if isinstance(body, planning.InstanceBody | planning.ProfileBody) else None
    current: state.ProfileObs | state.InstanceObs
    if action.object.kind is ObjectKind.PROFILE:
        current = profiles[action.object.name]
        now = fingerprints.profile(current, keep)
    else:
        current = instances[action.object.name]
        now = fingerprints.instance(current, keep)
    if now != action.observed:
        raise Refused(f"{action.id}: the object is not what the plan saw")
    if not current.managed and not action.adopt:
        raise Refused(f"{action.id}: untagged, and the action does not adopt it")


def _apply_profile(
    action: planning.Action,
    profiles: dict[str, state.ProfileObs],
    instances: Mapping[str, state.InstanceObs],
) -> None:
    name = action.object.name
    body = action.body
    if action.kind is planning.ActionKind.CREATE:
        assert isinstance(body, planning.ProfileBody)
        if name in profiles:
            raise Refused(f"profile {name} already exists")
        profiles[name] = state.ProfileObs(**requests.create_profile_request(body))
    elif action.kind is planning.ActionKind.UPDATE:
        assert isinstance(body, planning.ProfileBody)
        current = profiles[name].model_dump()
        profiles[name] = state.ProfileObs(name=name, **requests.put_request(body, current))
    elif action.kind is planning.ActionKind.DELETE:
        users = [i.name for i in instances.values() if name in i.profiles]
        if users:
            raise Refused(f"profile {name} is in use by {users}")
        del profiles[name]
    else:
        raise Refused(f"{action.kind} of a profile")


def _apply_instance(
    action: planning.Action,
    instances: dict[str, state.InstanceObs],
    profiles: Mapping[str, state.ProfileObs],
) -> None:
    name = action.object.name
    body = action.body
    kind = action.kind
    if kind is planning.ActionKind.CREATE:
        assert isinstance(body, planning.CreateInstanceBody)
        request = requests.create_instance_request(body)
        missing = [p for p in request["profiles"] if p not in profiles]
        if name in instances or missing:
            raise Refused(f"create {name}: exists or missing profiles {missing}")
        instances[name] = state.InstanceObs(
            name=name,
            status="Stopped",
            profiles=tuple(request["profiles"]),
            config={**request["config"], **LXD_ADDED},
            devices=request["devices"],
        )
    elif kind is planning.ActionKind.UPDATE:
        assert isinstance(body, planning.InstanceBody)
        current = instances[name]
        request = requests.put_request(body, current.model_dump())
        if any(k.startswith("volatile.idmap") for k in current.config) and not any(
            k.startswith("volatile.idmap") for k in request["config"]
        ):
            raise Refused("Volatile idmap keys can't be deleted by the user")
        instances[name] = current.model_copy(
            update={
                "profiles": tuple(request["profiles"]),
                "config": request["config"],
                "devices": request["devices"],
            }
        )
    elif kind is planning.ActionKind.START:
        instances[name] = instances[name].model_copy(update={"status": "Running"})
    elif kind is planning.ActionKind.STOP:
        instances[name] = instances[name].model_copy(update={"status": "Stopped"})
    elif kind is planning.ActionKind.DELETE:
        current = expanded(instances[name], profiles)
        if current.running:
            raise Refused(f"{name}: Instance is running")
        if current.expanded_config.get("security.protection.delete") == "true":
            raise Refused(f"{name}: Instance is protected")
        del instances[name]


# --- scenarios and golden files -------------------------------------------------------------------


def plan_scenario(scenario: Mapping[str, Any], **options: Any) -> planning.Plan:
    """The plan of a scenario (``fleet``, ``observed`` and an optional ``site``)."""
    fleet = fleet_from(scenario["fleet"])
    site = site_from(scenario.get("site"))
    snapshot = snapshot_from(scenario["observed"], fleet, site)
    return planner.make_plan(fleet, snapshot, site, **options)


def check_golden(path: Path, text: str) -> None:
    """``text`` equals the golden file at ``path`` (rewritten instead with ``UPDATE_GOLDEN=1``)."""
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()
