"""Classification of changes: live, only at start, or stored (from LXD's documentation)."""

from __future__ import annotations

import pytest

from lxdgpu_reconcile.planning import rules

LIVE, AT_START, STORED = rules.Timing.LIVE, rules.Timing.AT_START, rules.Timing.STORED


@pytest.mark.parametrize(
    ("key", "timing"),
    [
        ("limits.cpu", LIVE),
        ("limits.memory", LIVE),
        ("limits.processes", LIVE),
        ("environment.http_proxy", LIVE),
        ("security.nesting", LIVE),
        ("security.protection.delete", LIVE),
        ("raw.apparmor", LIVE),  # "yes" in the Live update column
        ("security.syscalls.intercept.mount.allowed", LIVE),
        ("raw.idmap", AT_START),
        ("raw.lxc", AT_START),
        ("raw.seccomp", AT_START),
        ("security.privileged", AT_START),
        ("security.idmap.isolated", AT_START),
        ("security.syscalls.intercept.mount", AT_START),
        ("nvidia.runtime", AT_START),
        ("nvidia.driver.capabilities", AT_START),
        ("linux.sysctl.net.core.somaxconn", AT_START),
        ("limits.kernel.nofile", AT_START),
        ("some.future.key", AT_START),
        ("boot.autostart", STORED),
        ("boot.autostart.priority", STORED),
        ("user.lxdgpu.managed", STORED),
        ("user.comment", STORED),
        (rules.TAG_START_HASH, AT_START),
    ],
)
def test_config_key_timing(key: str, timing: rules.Timing) -> None:
    assert rules.config_key_timing(key) is timing


def test_start_hash_written_for_the_first_time_needs_no_restart() -> None:
    assert rules.config_change_timing(rules.TAG_START_HASH, None, "sha256:a") is STORED
    assert rules.config_change_timing(rules.TAG_START_HASH, "sha256:a", "sha256:b") is AT_START


@pytest.mark.parametrize(
    ("device", "timing"),
    [
        ({"type": "disk", "source": "/home/tom", "path": "/home/ubuntu/tom"}, LIVE),
        ({"type": "disk", "path": "/", "pool": "default"}, AT_START),
        ({"type": "gpu"}, LIVE),
        ({"type": "gpu", "id": "0"}, LIVE),
        ({"type": "gpu", "gputype": "mig"}, AT_START),
        ({"type": "nic", "nictype": "macvlan", "parent": "eno1"}, LIVE),
        ({"type": "nic", "nictype": "ipvlan", "parent": "eno1"}, AT_START),
        ({"type": "none"}, LIVE),
        ({"type": "proxy"}, LIVE),
        ({"type": "tpm"}, AT_START),
        ({"type": "bogus"}, AT_START),
    ],
)
def test_device_timing(device: dict[str, str], timing: rules.Timing) -> None:
    assert rules.device_timing(device) is timing


def test_device_change_is_at_start_if_either_side_is() -> None:
    tpm = {"type": "tpm"}
    disk = {"type": "disk", "source": "/a", "path": "/a"}
    assert rules.device_change_timing(None, disk) is LIVE
    assert rules.device_change_timing(tpm, None) is AT_START
    assert rules.device_change_timing(disk, tpm) is AT_START


def test_preserve_real_and_lab() -> None:
    real = rules.preserve_for(attach_gpus=True)
    lab = rules.preserve_for(attach_gpus=False)
    for keep in (real, lab):
        assert keep.keeps_key("volatile.idmap.current")
        assert keep.keeps_key("image.os")
        assert not keep.keeps_key("limits.cpu")
    assert not real.keeps_key("nvidia.runtime")
    assert lab.keeps_key("nvidia.runtime")
    assert not real.keeps_device({"type": "gpu"})
    assert lab.keeps_device({"type": "gpu"})
    assert not lab.keeps_device({"type": "none"})
