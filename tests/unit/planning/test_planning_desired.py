"""Expansion of the fleet into desired LXD objects: CPU shares, CUDA layout, GPU lists, paths."""

from __future__ import annotations

import pytest

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.planning import desired, rules
from tests.unit.planning import support


def _host(**kwargs: object) -> state.FleetSnapshot:
    snap = state.HostSnapshot.model_validate({"host": "h1", "endpoint": "unix:///x", **kwargs})
    return state.FleetSnapshot(hosts={"h1": snap})


# --- limits.cpu -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "cpus", "expected"),
    [
        pytest.param("75%", 32, "24", id="75%-of-32"),
        pytest.param("75%", 1, "1", id="75%-of-1-never-0"),
        pytest.param("75%", 2, "1", id="75%-of-2-rounds-down"),
        pytest.param("100%", 48, "48", id="100%"),
        pytest.param("1%", 8, "1", id="1%-of-8-at-least-1"),
        pytest.param(16, 32, "16", id="count"),
        pytest.param(64, 32, "32", id="count-capped-at-host"),
        pytest.param(16, 0, "16", id="count-on-unknown-host"),
        pytest.param("75%", 0, None, id="share-on-unknown-host"),
    ],
)
def test_resolve_cpu(limit: int | str, cpus: int, expected: str | None) -> None:
    assert desired.resolve_cpu(limit, cpus) == expected


def test_capped_count_is_noted() -> None:
    fleet = support.fleet_from(
        {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003, "cpu": 64}}}
    )
    want = desired.expand(fleet, _host(cpus=32), sites.REAL)
    assert want.hosts["h1"].instances["tom-container"].config["limits.cpu"] == "32"
    assert want.hosts["h1"].notes == (
        "h1: tom-container asks for 64 CPUs; the host has 32: limits.cpu is 32",
    )


def test_unreachable_host_expands_without_a_cpu_share() -> None:
    fleet = support.fleet_from(
        {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}}
    )
    down = _host(error={"kind": "unreachable", "message": "refused"})
    want = desired.expand(fleet, down, sites.REAL).hosts["h1"]
    assert "limits.cpu" not in want.instances["tom-container"].config
    assert want.errors == ()  # the plan reports the host itself


def test_reachable_host_without_cpu_count_is_an_error() -> None:
    fleet = support.fleet_from(
        {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}}
    )
    want = desired.expand(fleet, _host(cpus=0), sites.REAL).hosts["h1"]
    assert [e.code.value for e in want.errors] == ["cpu-count-unknown"]


# --- CUDA: one profile per version ----------------------------------------------------------------


def test_two_users_on_one_host_get_different_cuda_versions() -> None:
    fleet = support.fleet_from(
        {
            "users": {
                "tom": {
                    "host": "h1",
                    "template": "desk",
                    "uid": 1003,
                    "gid": 1003,
                    "cuda": ["10.0"],
                },
                "jerry": {
                    "host": "h1",
                    "template": "desk",
                    "uid": 1004,
                    "gid": 1004,
                    "cuda": ["9.0", "10.0"],
                    "profiles": [],
                },
            }
        }
    )
    want = desired.expand(fleet, _host(cpus=8), sites.REAL).hosts["h1"]
    assert sorted(want.profiles) == ["cuda-10.0", "cuda-9.0"]
    assert want.instances["tom-container"].profiles == ("default", "cuda-10.0")
    assert want.instances["jerry-container"].profiles == ("default", "cuda-9.0", "cuda-10.0")
    cuda = want.profiles["cuda-9.0"]
    assert cuda.devices == {
        "cuda-9.0": {
            "path": "/usr/local/cuda-9.0",
            "readonly": "true",
            "source": "/usr/local/cuda-9.0",
            "type": "disk",
        }
    }
    assert cuda.config[state.TAG_MANAGED] == "true"
    assert cuda.config[state.TAG_ROLE] == "cuda"


def test_cuda_profile_only_where_a_user_lists_the_version() -> None:
    fleet = support.fleet_from(
        {
            "hosts": {"h2": {"endpoint": "unix:///var/lib/lxd2/unix.socket"}},
            "users": {
                "tom": {
                    "host": "h1",
                    "template": "desk",
                    "uid": 1003,
                    "gid": 1003,
                    "cuda": ["10.0"],
                },
                "jerry": {"host": "h2", "template": "desk", "uid": 1004, "gid": 1004},
            },
        }
    )
    snapshot = state.FleetSnapshot(
        hosts={
            name: state.HostSnapshot(host=name, endpoint="unix:///x", cpus=4)
            for name in ("h1", "h2")
        }
    )
    want = desired.expand(fleet, snapshot, sites.REAL)
    assert list(want.hosts["h1"].profiles) == ["cuda-10.0"]
    assert list(want.hosts["h2"].profiles) == []


def test_declared_profile_named_like_a_cuda_profile_is_an_error() -> None:
    fleet = support.fleet_from(
        {
            "profiles": {"cuda-9.0": {}},
            "users": {
                "tom": {
                    "host": "h1",
                    "template": "desk",
                    "uid": 1003,
                    "gid": 1003,
                    "cuda": ["9.0"],
                    "profiles": ["cuda-9.0"],
                }
            },
        }
    )
    want = desired.expand(fleet, _host(cpus=4), sites.REAL).hosts["h1"]
    assert [e.code.value for e in want.errors] == ["profile-name-taken"]


# --- the container --------------------------------------------------------------------------------


def test_container_profiles_are_defaults_then_cuda_then_own() -> None:
    fleet = support.fleet_from(
        {
            "profiles": {"matlab": {}, "desktop": {}},
            "defaults": {"profiles": ["default", "matlab"]},
            "users": {
                "tom": {
                    "host": "h1",
                    "template": "desk",
                    "uid": 1003,
                    "gid": 1003,
                    "cuda": ["9.0"],
                    "profiles": ["desktop", "matlab"],
                }
            },
        }
    )
    want = desired.expand(fleet, _host(cpus=4), sites.REAL).hosts["h1"]
    assert want.instances["tom-container"].profiles == ("default", "matlab", "cuda-9.0", "desktop")


def test_container_config_and_tags() -> None:
    fleet = support.fleet_from(
        {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1005}}}
    )
    tom = desired.expand(fleet, _host(cpus=32), sites.REAL).hosts["h1"].instances["tom-container"]
    assert tom.alias == "tpl-desk"
    assert tom.config["raw.idmap"] == "uid 1003 1000\ngid 1005 1000"
    assert tom.config["limits.cpu"] == "24"
    assert tom.config["security.protection.delete"] == "true"
    assert tom.config[state.TAG_MANAGED] == "true"
    assert tom.config[state.TAG_USER] == "tom"
    assert tom.config[state.TAG_SPEC_HASH].startswith("sha256:")
    assert tom.devices == {
        "home": {"path": "/home/ubuntu/tom", "source": "/home/tom", "type": "disk"}
    }


def test_spec_hash_covers_the_spec_but_not_itself() -> None:
    def tom(cpu: int) -> desired.DesiredInstance:
        fleet = support.fleet_from(
            {
                "users": {
                    "tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003, "cpu": cpu}
                }
            }
        )
        return (
            desired.expand(fleet, _host(cpus=32), sites.REAL).hosts["h1"].instances["tom-container"]
        )

    assert tom(8).spec_hash == tom(8).spec_hash
    assert tom(8).spec_hash != tom(9).spec_hash
    body = {"profiles": list(tom(8).profiles), "config": tom(8).config, "devices": tom(8).devices}
    assert desired.spec_hash(body) == tom(8).spec_hash


def test_start_hash_ignores_what_applies_live() -> None:
    def start_hash(config: dict[str, str], devices: dict[str, dict[str, str]]) -> str:
        profile = desired.DesiredProfile(
            host="h1", name="p", role="profile", config=config, devices=devices
        )
        return desired.start_hash(["p"], {"p": profile})

    nothing = start_hash({}, {})
    assert start_hash({"limits.memory": "4GiB"}, {}) == nothing
    assert start_hash({}, {"d": {"type": "disk", "source": "/a", "path": "/a"}}) == nothing
    assert start_hash({"nvidia.runtime": "true"}, {}) != nothing
    assert start_hash({}, {"tpm": {"type": "tpm"}}) != nothing


# --- GPUs -----------------------------------------------------------------------------------------


def test_gpu_list_blocks_every_inherited_gpu_device() -> None:
    inherited = {
        "gpu": {"type": "gpu"},
        "gpu1": {"type": "gpu", "id": "1"},
        "root": {"type": "disk", "path": "/", "pool": "default"},
    }
    assert desired.gpu_devices([0, 1], inherited) == {
        "gpu": {"type": "none"},
        "gpu0": {"type": "gpu", "id": "0"},
        "gpu1": {"type": "gpu", "id": "1"},
    }


def test_gpu_list_sees_gpu_devices_of_undeclared_profiles_on_the_host() -> None:
    fleet = support.fleet_from(
        {
            "users": {
                "tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003, "gpus": [0]}
            }
        }
    )
    default = state.ProfileObs(name="default", devices={"all-gpus": {"type": "gpu"}})
    snapshot = _host(cpus=4, gpus=[{"id": 0}], profiles={"default": default})
    tom = desired.expand(fleet, snapshot, sites.REAL).hosts["h1"].instances["tom-container"]
    assert tom.devices["all-gpus"] == {"type": "none"}
    assert tom.devices["gpu0"] == {"id": "0", "type": "gpu"}


def test_gpus_all_adds_nothing() -> None:
    fleet = support.fleet_from(
        {"users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}}
    )
    tom = desired.expand(fleet, _host(cpus=4), sites.REAL).hosts["h1"].instances["tom-container"]
    assert list(tom.devices) == ["home"]


# --- the lab --------------------------------------------------------------------------------------


def test_lab_moves_host_paths_and_leaves_gpus_out() -> None:
    fleet = support.fleet_from(
        {
            "profiles": {
                "default": {
                    "config": {"nvidia.runtime": "true", "nvidia.driver.capabilities": "all"},
                    "devices": {
                        "gpu": {"type": "gpu"},
                        "matlab": {
                            "type": "disk",
                            "source": "/usr/local/MATLAB",
                            "path": "/usr/local/MATLAB",
                        },
                        "root": {"type": "disk", "path": "/", "pool": "default"},
                    },
                }
            },
            "users": {
                "tom": {
                    "host": "h1",
                    "template": "desk",
                    "uid": 1003,
                    "gid": 1003,
                    "gpus": [0],
                    "cuda": ["9.0"],
                }
            },
        }
    )
    lab = sites.Site(host_root="/lab/", attach_gpus=False, lab_dir="/lab")
    want = desired.expand(fleet, _host(cpus=2), lab)
    h1 = want.hosts["h1"]
    default = h1.profiles["default"]
    assert not any(key.startswith("nvidia.") for key in default.config)
    assert sorted(default.devices) == ["matlab", "root"]
    assert default.devices["matlab"]["source"] == "/lab/usr/local/MATLAB"
    assert default.devices["matlab"]["path"] == "/usr/local/MATLAB"
    assert default.devices["root"] == {"path": "/", "pool": "default", "type": "disk"}
    assert h1.profiles["cuda-9.0"].devices["cuda-9.0"]["source"] == "/lab/usr/local/cuda-9.0"
    assert h1.profiles["cuda-9.0"].devices["cuda-9.0"]["path"] == "/usr/local/cuda-9.0"
    tom = h1.instances["tom-container"]
    assert tom.devices == {
        "home": {"path": "/home/ubuntu/tom", "source": "/lab/home/tom", "type": "disk"}
    }
    assert h1.errors == ()  # GPU ids are not checked where GPUs are not attached
    assert want.notes == (
        "lab: GPUs are not attached (planned, not written: profile default: devices.gpu, "
        "config.nvidia.runtime, config.nvidia.driver.capabilities; tom-container: gpu0)",
    )
    assert want.preserve == rules.preserve_for(attach_gpus=False)


# --- targets --------------------------------------------------------------------------------------


def test_unknown_target_is_an_error() -> None:
    fleet = support.fleet_from({})
    want = desired.expand(fleet, _host(cpus=4), sites.REAL, targets=["nobody"])
    assert [e.code.value for e in want.errors] == ["unknown-target"]
    assert want.hosts == {}


def test_host_target_selects_the_whole_host() -> None:
    fleet = support.fleet_from(
        {
            "hosts": {"h2": {"endpoint": "unix:///var/lib/lxd2/unix.socket"}},
            "users": {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}},
        }
    )
    want = desired.expand(fleet, _host(cpus=4), sites.REAL, targets=["h1"])
    assert list(want.hosts) == ["h1"]
    assert want.hosts["h1"].prune.whole_host
