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


def _state(
    lab: Path, hosts: tuple[str, ...] = ("server01", "server02"), *, ssh: bool = True
) -> LabState:
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
                system=f"{lab}/sys/{name}" if ssh else None,
                ssh_port=41000 + i if ssh else None,
                ssh_alias=name if ssh else None,
            )
            for i, name in enumerate(hosts)
        },
        ssh_config=f"{lab}/ssh/config" if ssh else None,
        ssh_key=f"{lab}/ssh/id_ed25519" if ssh else None,
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


def test_homes_are_each_lab_hosts_own_and_reached_over_the_labs_ssh(tmp_path: Path) -> None:
    _state(tmp_path)
    fleet, site = use_lab(FLEET, tmp_path)
    # Every lab host has a /home of its own (in its namespace): homes are not moved.
    assert site.home_dir("/home/tom") == "/home/tom"
    # A home outside /home is not in that /home: it stays in the lab's shared tree.
    assert site.home_dir("/srv/homes/tom") == f"{tmp_path}/root/srv/homes/tom"
    assert site.ssh_config == f"{tmp_path}/ssh/config"
    assert {name: host.ssh for name, host in fleet.hosts.items()} == {
        "server01": "server01",
        "server02": "server02",
    }


def test_a_lab_without_sshds_leaves_the_host_layer_alone(tmp_path: Path) -> None:
    # A lab made before hosts had systems of their own: never reach the real hosts over SSH.
    with_ssh = FLEET.model_copy(
        update={
            "hosts": {
                n: h.model_copy(update={"ssh": f"root@{n}.example.org"})
                for n, h in FLEET.hosts.items()
            }
        }
    )
    _state(tmp_path, ssh=False)
    fleet, site = use_lab(with_ssh, tmp_path)
    assert [host.ssh for host in fleet.hosts.values()] == [None, None]
    assert site.ssh_config is None
    assert site.home_dir("/home/tom") == f"{tmp_path}/root/home/tom"


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
    assert f"# ssh: ssh -F {tmp_path}/ssh/config server02 (sshd on 127.0.0.1:41001)" in text
    with pytest.raises(LabMissingError, match="no host 'nope'"):
        lab_env(tmp_path, "nope")


def test_a_cluster_host_is_reached_through_its_first_member_with_the_others_as_fallbacks(
    tmp_path: Path,
) -> None:
    from lxdgpu_reconcile.lab import rebase_fleet

    fleet = Fleet.model_validate(
        {
            "version": 1,
            "hosts": {
                "dept": {
                    "endpoint": "https://192.0.2.21:8443",
                    "server_cert": "/etc/fleet/dept.crt",
                    "cluster": {"members": ["node1", "node2"]},
                }
            },
        }
    )
    lab = tmp_path
    members = {
        f"dept/{m}": HostLab(
            name=f"dept/{m}",
            lxd_dir=f"{lab}/hosts/dept/{m}",
            port=40000 + i,
            endpoint=f"https://127.0.0.{i + 1}:{40000 + i}",
            server_cert=f"{lab}/hosts/dept/{m}/cluster.crt",
            system=f"{lab}/sys/dept/{m}",
            ssh_port=41000 + i,
            ssh_alias=f"dept-{m}",
            address=f"127.0.0.{i + 1}",
            cluster="dept",
            member=m,
        )
        for i, m in enumerate(("node1", "node2"))
    }
    state = LabState(
        dir=str(lab),
        client_cert=f"{lab}/lxc/client.crt",
        client_key=f"{lab}/lxc/client.key",
        lxc_conf=f"{lab}/lxc",
        host_root=f"{lab}/root",
        hosts=members,
        ssh_config=f"{lab}/ssh/config",
        ssh_key=f"{lab}/ssh/id_ed25519",
        clusters={"dept": ("dept/node1", "dept/node2")},
    )
    dept = rebase_fleet(fleet, state).hosts["dept"]
    assert dept.endpoint == "https://127.0.0.1:40000"
    assert dept.server_cert == f"{lab}/hosts/dept/node1/cluster.crt"
    assert dept.ssh is None
    assert dept.cluster is not None
    assert dept.cluster.members == ("node1", "node2")
    assert dept.cluster.endpoints == ("https://127.0.0.2:40001",)
    assert dept.cluster.ssh == {"node1": "dept-node1", "node2": "dept-node2"}
    assert state.host("dept").name == "dept/node1"  # lab env / lab exec dept: the first
    assert state.host("dept/node2").member == "node2"
