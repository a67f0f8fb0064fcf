"""What the lab prepares for a fleet, and the pure pieces it hands to LXD (no daemon)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import yaml

from lxdgpu_reconcile.fleet.models import Cluster, Fleet
from lxdgpu_reconcile.lab import daemon, image, needs_of
from lxdgpu_reconcile.lab.certs import lxc_config
from lxdgpu_reconcile.lab.needs import base_alias
from lxdgpu_reconcile.lab.netdev import IFNAME_MAX, peer_name

ROOT = Path(__file__).resolve().parents[2]

FLEET = Fleet.model_validate(
    {
        "version": 1,
        "defaults": {"home_source": "/srv/homes/{user}"},
        "hosts": {
            "server01": {"endpoint": "https://192.0.2.11:8443"},
            "server02": {"endpoint": "https://192.0.2.12:8443"},
        },
        "image_servers": {"tuna": {"url": "https://images.example.net/"}},
        "profiles": {
            "default": {
                "devices": {
                    "gpu": {"type": "gpu"},
                    "matlab": {"type": "disk", "source": "/usr/local/MATLAB", "path": "/m"},
                    "eth0": {"type": "nic", "nictype": "macvlan", "parent": "eno1"},
                    "root": {"type": "disk", "path": "/", "pool": "default"},
                }
            },
            "lan2": {
                "devices": {
                    "eth1": {"type": "nic", "nictype": "macvlan", "parent": "eno2"},
                    "br": {"type": "nic", "nictype": "bridged", "parent": "br0"},
                    "vol": {"type": "disk", "pool": "default", "source": "data", "path": "/d"},
                }
            },
        },
        "cuda": {"9.0": "/usr/local/cuda-9.0", "10.0": "/usr/local/cuda-10.0"},
        "templates": {
            "desk": {"alias": "tpl-desk", "base": "tuna:ubuntu/18.04", "build_host": "server01"},
            "bare": {"alias": "tpl-bare", "base": "tuna:ubuntu/18.04", "build_host": "server01"},
            "chain": {"alias": "tpl-chain", "base": "tpl-bare", "build_host": "server02"},
        },
        "users": {
            "tom": {"host": "server01", "template": "desk", "uid": 1003, "gid": 1013},
            "ann": {"host": "server02", "template": "bare", "uid": 1004, "gid": 1013},
        },
    }
)


def test_needs_of_a_fleet() -> None:
    needs = needs_of(FLEET)
    assert needs.hosts == ("server01", "server02")
    assert needs.nic_parents == ("eno1", "eno2")
    assert needs.host_dirs == ("/usr/local/MATLAB", "/usr/local/cuda-10.0", "/usr/local/cuda-9.0")
    assert needs.image_aliases == ("ubuntu/18.04", "tpl-desk", "tpl-bare", "tpl-chain")


def test_base_alias_drops_the_image_server() -> None:
    assert base_alias("tuna:ubuntu/18.04") == "ubuntu/18.04"
    assert base_alias("local-alias") == "local-alias"


def test_the_lab_makes_no_homes_accounts_or_delegations() -> None:
    # Each lab host has a system of its own, where the tool's apply makes them.
    fields = set(needs_of(FLEET).__dataclass_fields__)
    assert fields == {"hosts", "nic_parents", "host_dirs", "image_aliases", "clusters"}


def test_preseed_listens_on_loopback_with_a_dir_pool_and_a_root_disk() -> None:
    doc = yaml.safe_load(daemon.preseed(18443))
    assert doc["config"] == {"core.https_address": "127.0.0.1:18443"}
    assert doc["storage_pools"][0]["name"] == "default"
    assert doc["storage_pools"][0]["driver"] == "dir"
    assert doc["profiles"][0]["devices"] == {
        "root": {"type": "disk", "path": "/", "pool": "default"}
    }
    assert "networks" not in doc
    other = yaml.safe_load(daemon.preseed(18443, "127.0.0.2"))
    assert other["config"] == {"core.https_address": "127.0.0.2:18443"}


def test_free_ports_avoid_those_taken() -> None:
    port = daemon.free_port()
    assert 0 < port < 65536
    assert daemon.free_port([port]) != port


def test_veth_peer_names_fit_the_kernel_limit() -> None:
    for parent in ("eno1", "enp129s0f1np1", "x" * 15):
        assert len(peer_name(parent)) <= IFNAME_MAX
    assert peer_name("eno1") == peer_name("eno1") != peer_name("eno2")


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_the_image_tarball_is_a_bootable_busybox_rootfs() -> None:
    data = image.image_tarball(b"\x7fELF fake", ["bin/sh", "sbin/init", "usr/bin/env"], "x86_64", 7)
    members = _members(data)
    assert members["rootfs/bin/busybox"].mode == 0o755
    assert members["rootfs/bin/sh"].issym() and members["rootfs/bin/sh"].linkname == "/bin/busybox"
    assert members["rootfs/sbin/init"].isfile()
    assert members["rootfs/home/ubuntu"].uid == 1000
    assert members["rootfs/tmp"].mode == 0o1777
    for path in ("dev", "proc", "sys", "root", "etc/passwd", "etc/group"):
        assert f"rootfs/{path}" in members
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        meta_file = tar.extractfile("metadata.yaml")
        passwd_file = tar.extractfile("rootfs/etc/passwd")
        assert meta_file is not None and passwd_file is not None
        meta = yaml.safe_load(meta_file.read())
        passwd = passwd_file.read().decode()
    assert meta["architecture"] == "x86_64" and meta["creation_date"] == 7
    assert "ubuntu:x:1000:1000:" in passwd


def test_the_image_tarball_is_deterministic() -> None:
    one = image.image_tarball(b"bb", ["bin/sh"], "x86_64", 7)
    two = image.image_tarball(b"bb", ["bin/sh"], "x86_64", 7)
    assert hashlib.sha256(one).digest() == hashlib.sha256(two).digest()


def test_each_alias_gets_a_stand_in_of_its_own() -> None:
    made = {
        alias: image.image_tarball(b"bb", ["bin/sh"], "x86_64", 7, alias=alias)
        for alias in ("ubuntu/18.04", "template-desk", "template-plain")
    }
    assert len({hashlib.sha256(data).hexdigest() for data in made.values()}) == 3
    for alias, data in made.items():
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
            named = tar.extractfile("rootfs/etc/lab-image")
            assert named is not None and named.read().decode() == f"{alias}\n"
    again = image.image_tarball(b"bb", ["bin/sh"], "x86_64", 7, alias="template-desk")
    assert again == made["template-desk"]


def test_the_stand_ins_are_written_once_per_alias(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_text("#!/bin/sh\necho bin/sh\n")
    busybox.chmod(0o755)
    written = image.build_images(tmp_path / "image", ["ubuntu/18.04", "template-desk"], busybox)
    assert list(written) == ["ubuntu/18.04", "template-desk"]
    assert len({path.name for path in written.values()}) == 2
    assert all(path.parent == tmp_path / "image" for path in written.values())


def test_lxc_config_has_every_host_as_an_https_remote() -> None:
    doc = yaml.safe_load(lxc_config({"server02": "https://127.0.0.1:2", "s1": "https://x:1"}))
    assert doc["default-remote"] == "local"
    assert doc["remotes"]["local"]["addr"] == "unix://"
    assert doc["remotes"]["server02"] == {
        "addr": "https://127.0.0.1:2",
        "auth_type": "tls",
        "protocol": "lxd",
        "public": False,
    }


def test_the_example_fleet_needs_what_the_lab_provides() -> None:
    from lxdgpu_reconcile.fleet.loading import load_fleet

    example = ROOT / "fleet.example.yaml"
    loaded = load_fleet(example)
    assert loaded.fleet is not None
    needs = needs_of(loaded.fleet)
    assert "eno1" in needs.nic_parents
    assert "/usr/local/MATLAB" in needs.host_dirs
    assert needs.image_aliases[0] == "ubuntu/18.04"


def test_a_cluster_host_needs_a_daemon_per_member_node1_node2_when_none_are_listed() -> None:
    fleet = FLEET.model_copy(
        update={
            "hosts": {
                **FLEET.hosts,
                "dept": FLEET.hosts["server01"].model_copy(update={"cluster": Cluster()}),
                "lab2": FLEET.hosts["server01"].model_copy(
                    update={"cluster": Cluster(members=("a", "b", "c"))}
                ),
            }
        }
    )
    fleet = Fleet.model_validate(fleet.model_dump())
    needs = needs_of(fleet)
    assert dict(needs.clusters) == {"dept": ("node1", "node2"), "lab2": ("a", "b", "c")}
    assert needs.daemons == (
        "server01", "server02", "dept/node1", "dept/node2", "lab2/a", "lab2/b", "lab2/c",
    )  # fmt: skip


def test_cluster_preseeds_bootstrap_on_the_first_address_and_join_with_the_token() -> None:
    from lxdgpu_reconcile.lab import cluster
    from lxdgpu_reconcile.lab.record import HostLab

    def member(name: str, index: int) -> HostLab:
        address = cluster.address_of(index)
        return HostLab(
            name=f"dept/{name}", lxd_dir="/x", port=18443 + index, endpoint="",
            server_cert="/x/cluster.crt", address=address, cluster="dept", member=name,
        )  # fmt: skip

    one, two = member("node1", 0), member("node2", 1)
    boot = yaml.safe_load(cluster.bootstrap_preseed(one))
    assert boot["config"] == {
        "core.https_address": "127.0.0.1:18443",
        "cluster.https_address": "127.0.0.1:18443",
    }
    assert boot["cluster"] == {"server_name": "node1", "enabled": True}
    assert boot["storage_pools"][0]["driver"] == "dir"
    join = yaml.safe_load(cluster.join_preseed(two, one, "TOKEN"))
    assert join["config"] == {"core.https_address": "127.0.0.2:18444"}
    assert join["cluster"]["server_name"] == "node2"
    assert join["cluster"]["server_address"] == "127.0.0.2:18444"
    assert join["cluster"]["cluster_address"] == "127.0.0.1:18443"
    assert join["cluster"]["cluster_token"] == "TOKEN"
    assert join["cluster"]["member_config"] == [
        {"entity": "storage-pool", "name": "default", "key": "source", "value": ""}
    ]
    assert "storage_pools" not in join and "profiles" not in join  # the cluster's
