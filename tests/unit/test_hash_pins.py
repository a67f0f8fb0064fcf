"""The stored hashes keep their values across versions: recipe hash, spec hash, start hash.

Each hash is written onto an LXD object (an image's recipe property, a container's or profile's
``user.lxdgpu.spec-hash``, a container's ``user.lxdgpu.profile-start-hash``) and compared with a
freshly computed one on every plan. A change in how the input is serialised (key order,
separators, ASCII escaping, the order of profiles, devices or files) would make every template
rebuild or every container look changed after an upgrade, without anything in the fleet
changing. The inputs here are fixed literals, and so are the expected values: a test fails when
a hash changes, and a deliberate change must update the literal (and say so in the release
notes).
"""

from __future__ import annotations

from typing import Any

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.fleet.models import Fleet, Template, TemplateFile
from lxdgpu_reconcile.planning import desired, rules
from lxdgpu_reconcile.templates import recipe

# --- recipe hash (templates) ----------------------------------------------------------------------

BASE_FINGERPRINT = "0123456789abcdef" * 4

TEMPLATE = Template(
    alias="tpl-desk",
    base="images:ubuntu/22.04",
    build_host="server01",
    steps=(
        "apt-get update",
        "apt-get install -y build-essential",
        "echo 'Grüße, 你好' > /etc/issue.net",
    ),
    files=(
        TemplateFile(path="/etc/motd", content="hello\n"),
        TemplateFile(path="/usr/local/bin/start", content="#!/bin/sh\nexec true\n", mode="755"),
        TemplateFile(path="/etc/skel/.note", content="é\n", mode="0600"),
    ),
)

RECIPE_HASH = "sha256:3e351ee5148a5235acadcbcb868f87784da4652aa5aa11f225b777b41043f234"


def test_recipe_hash_is_pinned() -> None:
    contents = recipe.inline_contents(TEMPLATE)
    assert recipe.recipe_hash(TEMPLATE, BASE_FINGERPRINT, file_contents=contents) == RECIPE_HASH


def test_recipe_hash_ignores_what_is_not_the_recipe() -> None:
    moved = TEMPLATE.model_copy(
        update={"alias": "tpl-other", "build_host": "server02", "description": "another"}
    )
    contents = recipe.inline_contents(moved)
    assert recipe.recipe_hash(moved, BASE_FINGERPRINT, file_contents=contents) == RECIPE_HASH


# --- spec hash and start hash (containers and profiles) -------------------------------------------

FLEET: dict[str, Any] = {
    "version": 1,
    "defaults": {
        "container_uid": 1000,
        "home_source": "/home/{user}",
        "home_path": "/home/ubuntu/{user}",
        "profiles": ["default", "gpu-lab"],
        "cpu": "75%",
    },
    "hosts": {"h1": {"endpoint": "unix:///var/lib/lxd/unix.socket"}},
    "profiles": {
        "gpu-lab": {
            "description": "GPUs für alle, MATLAB read-only",
            "config": {"nvidia.runtime": "true", "boot.autostart": "true"},
            "devices": {
                "gpu": {"type": "gpu"},
                "matlab": {
                    "type": "disk",
                    "source": "/usr/local/MATLAB",
                    "path": "/usr/local/MATLAB",
                    "readonly": "true",
                },
            },
        },
    },
    "cuda": {"10.0": "/usr/local/cuda-10.0"},
    "templates": {"desk": {"alias": "tpl-desk", "base": "tpl-base", "build_host": "h1"}},
    "users": {
        "tom": {
            "host": "h1",
            "template": "desk",
            "uid": 1003,
            "gid": 1004,
            "cuda": ["10.0"],
            "gpus": [1, 2],
        },
        "ann": {"host": "h1", "template": "desk", "uid": 1005, "gid": 1005, "cpu": 8},
    },
}

SNAPSHOT = state.FleetSnapshot(
    hosts={
        "h1": state.HostSnapshot(
            host="h1",
            endpoint="unix:///var/lib/lxd/unix.socket",
            cpus=32,
            gpus=(state.GpuObs(id=1), state.GpuObs(id=2)),
        )
    }
)

#: ``user.lxdgpu.spec-hash`` of each expanded container and profile, by name.
SPEC_HASHES = {
    "tom-container": "sha256:15e04597f3d9d81674681a942206acb978b138c273c6c7ee80e9b0c43aca4edc",
    "ann-container": "sha256:4e0468143848e4fab8c0c45d4b30c183698e3a290e5be3fdcdf6afc6b8c64bf8",
    "gpu-lab": "sha256:de29309fce189c3269a5e8494f870e551de2501f3fc647ce742fa030b331973a",
    "cuda-10.0": "sha256:d7f11fe5aa2ada0682955c76e14af1c19ec1c006738caab22839c3b5911f4c9c",
}
#: ``user.lxdgpu.profile-start-hash`` of each container. Both get the same: the only part of their
#: managed profiles that applies at start is ``nvidia.runtime`` of ``gpu-lab`` (devices, and the
#: CUDA profile's disk, apply live).
START_HASHES = {
    "tom-container": "sha256:1e2d8daa09bdedbb39485ba75a0e0752b7cc4b2e7d51f0c042dc0601bdf4fa33",
    "ann-container": "sha256:1e2d8daa09bdedbb39485ba75a0e0752b7cc4b2e7d51f0c042dc0601bdf4fa33",
}
#: The start hash of profiles with nothing applied only at start.
START_HASH_OF_NOTHING = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"


def _expanded() -> desired.DesiredHost:
    fleet = Fleet.model_validate(FLEET)
    return desired.expand(fleet, SNAPSHOT, sites.REAL).hosts["h1"]


def test_spec_hashes_are_pinned() -> None:
    host = _expanded()
    found = {name: inst.spec_hash for name, inst in host.instances.items()}
    found |= {name: prof.config[state.TAG_SPEC_HASH] for name, prof in host.profiles.items()}
    assert found == SPEC_HASHES


def test_start_hashes_are_pinned() -> None:
    host = _expanded()
    found = {name: inst.config[rules.TAG_START_HASH] for name, inst in host.instances.items()}
    assert found == START_HASHES


def test_start_hash_of_profiles_without_start_time_keys_is_pinned() -> None:
    live = desired.DesiredProfile(
        host="h1",
        name="p",
        role="profile",
        config={"limits.memory": "4GiB"},
        devices={"d": {"type": "disk", "source": "/a", "path": "/a"}},
    )
    assert desired.start_hash(["p"], {"p": live}) == START_HASH_OF_NOTHING
    assert desired.start_hash([], {}) == START_HASH_OF_NOTHING


def test_spec_hash_of_a_literal_body_is_pinned() -> None:
    body = {
        "profiles": ["default", "gpu-lab"],
        "config": {
            "limits.cpu": "24",
            "raw.idmap": "uid 1003 1000\ngid 1004 1000",
            state.TAG_SPEC_HASH: "sha256:ignored",
        },
        "devices": {"home": {"type": "disk", "source": "/home/tom", "path": "/home/ubuntu/tom"}},
    }
    assert (
        desired.spec_hash(body)
        == "sha256:caea0d3b9ee9cb16310e69487b79a79835d45e5436d77538c6d566ee9263f697"
    )
