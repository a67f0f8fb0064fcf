"""``use_lab``: a fleet pointed at its lab from the lab's record (no daemon)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.lab import (
    HostLab,
    LabMissingError,
    LabState,
    lab_env,
    load_lab,
    site_for,
    use_lab,
)
from lxdgpu_reconcile.lab.record import save_lab
from lxdgpu_reconcile.site import REAL

FLEET = Fleet.model_validate(
    {
        "version": 1,
        "hosts": {
            "server01": {
                "endpoint": "https://192.0.2.11:8443",
                "client_cert": "/etc/fleet/admin.crt",
                "client_key": "/etc/fleet/admin.key",
                "server_cert": "/etc/fleet/server01.crt",
                "gpus": 4,
            },
            "server02": {"endpoint": "https://192.0.2.12:8443"},
        },
    }
)


def _state(lab: Path, hosts: tuple[str, ...] = ("server01", "server02")) -> LabState:
    state = LabState(
        dir=str(lab),
        client_cert=f"{lab}/lxc/client.crt",
        client_key=f"{lab}/lxc/client.key",
        lxc_conf=f"{lab}/lxc",
        host_root=f"{lab}/root",
        hosts={
            name: HostLab(
                name=name,
                lxd_dir=f"{lab}/hosts/{name}",
                port=40000 + i,
                endpoint=f"https://127.0.0.1:{40000 + i}",
                pid=None,
                server_cert=f"{lab}/hosts/{name}/server.crt",
            )
            for i, name in enumerate(hosts)
        },
    )
    save_lab(state)
    return state


def test_every_host_is_reached_through_its_lab_daemon(tmp_path: Path) -> None:
    _state(tmp_path)
    fleet, _ = use_lab(FLEET, tmp_path)
    one = fleet.hosts["server01"]
    assert one.endpoint == "https://127.0.0.1:40000"
    assert one.client_cert == f"{tmp_path}/lxc/client.crt"
    assert one.client_key == f"{tmp_path}/lxc/client.key"
    assert one.server_cert == f"{tmp_path}/hosts/server01/server.crt"
    assert one.gpus == 4
    assert fleet.hosts["server02"].endpoint == "https://127.0.0.1:40001"
    assert FLEET.hosts["server01"].endpoint == "https://192.0.2.11:8443"


def test_the_site_roots_host_paths_in_the_lab_and_attaches_no_gpu(tmp_path: Path) -> None:
    _state(tmp_path)
    _, site = use_lab(FLEET, tmp_path)
    assert site.attach_gpus is False
    assert site.lab_dir == str(tmp_path)
    assert site.host_path("/usr/local/MATLAB") == f"{tmp_path}/root/usr/local/MATLAB"
    assert site.host_path("/home/tom") == f"{tmp_path}/root/home/tom"


def test_a_missing_lab_says_to_bring_it_up(tmp_path: Path) -> None:
    with pytest.raises(LabMissingError, match=r"lxdgpu-reconcile lab up -f FLEET --dir"):
        use_lab(FLEET, tmp_path / "nothing")


def test_a_lab_without_a_host_of_the_fleet_says_to_bring_it_up(tmp_path: Path) -> None:
    _state(tmp_path, hosts=("server01",))
    with pytest.raises(LabMissingError, match=r"no host server02.*lab up -f FLEET --dir"):
        use_lab(FLEET, tmp_path)


def test_site_for_without_a_lab_is_the_real_fleet() -> None:
    assert site_for(FLEET, None) == (FLEET, REAL)


def test_the_record_round_trips(tmp_path: Path) -> None:
    state = _state(tmp_path)
    assert load_lab(tmp_path) == state


def test_lab_env_exports_the_hosts_lxd_dir(tmp_path: Path) -> None:
    _state(tmp_path)
    text = lab_env(tmp_path, "server02")
    assert f"export LXD_DIR={tmp_path}/hosts/server02\n" in text
    assert f"export LXD_CONF={tmp_path}/lxc\n" in text
    with pytest.raises(LabMissingError, match="no host 'nope'"):
        lab_env(tmp_path, "nope")
