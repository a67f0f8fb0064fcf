"""Hand-built fleets and snapshots for the web page's unit tests (no LXD)."""

from __future__ import annotations

from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.state import (
    Address,
    FleetSnapshot,
    GpuObs,
    HostError,
    HostErrorKind,
    HostSnapshot,
    ImageObs,
    InstanceObs,
)

OLD_FP, NEW_FP = "a" * 64, "b" * 64
XSS = "<script>alert('x')</script><img src=x onerror=alert(1)>"
#: Paths that must never reach a page: the fleet's certificate and key files.
CLIENT_CERT, CLIENT_KEY = "/etc/lxdgpu/secret-admin.crt", "/etc/lxdgpu/secret-admin.key"

FLEET = Fleet.model_validate(
    {
        "version": 1,
        "hosts": {
            "server01": {
                "endpoint": "https://192.0.2.11:8443",
                "client_cert": CLIENT_CERT,
                "client_key": CLIENT_KEY,
                "server_cert": "/etc/lxdgpu/server01.crt",
                "gpus": 2,
            },
            "server02": {
                "endpoint": "https://192.0.2.12:8443",
                "client_cert": CLIENT_CERT,
                "client_key": CLIENT_KEY,
                "server_cert": "/etc/lxdgpu/server02.crt",
            },
        },
        "cuda": {"10.0": "/usr/local/cuda-10.0", "11.8": "/usr/local/cuda-11.8"},
        "templates": {
            "desk": {"alias": "template-desk", "base": "busybox", "build_host": "server01"},
        },
        "users": {
            "alice": {"host": "server01", "template": "desk", "uid": 1001, "gid": 1001},
            "bob": {"host": "server02", "template": "desk", "uid": 1002, "gid": 1002},
        },
    }
)

ALICE = InstanceObs(
    name="alice-container",
    status="Running",
    description=XSS,
    profiles=("default", "cuda-10.0"),
    config={
        "user.lxdgpu.managed": "true",
        "user.lxdgpu.user": "alice",
        "volatile.base_image": OLD_FP,
    },
    expanded_config={"limits.cpu": "8"},
    expanded_devices={"gpu0": {"type": "gpu", "id": "1"}},
    addresses=(
        Address(interface="eth0", family="inet", address="192.0.2.10", scope="global"),
        Address(interface="eth0", family="inet6", address="2001:db8::10", scope="global"),
    ),
)
HAND_MADE = InstanceObs(
    name="scratch",
    status="Stopped",
    config={"user.lxdgpu.user": XSS, "image.description": XSS},
)
SERVER01 = HostSnapshot(
    host="server01",
    endpoint="https://192.0.2.11:8443",
    server_version="5.0.2",
    cpus=32,
    gpus=(GpuObs(id=0, product="RTX 3090"), GpuObs(id=1, product="RTX 3090")),
    instances={ALICE.name: ALICE, HAND_MADE.name: HAND_MADE},
    images=(
        ImageObs(fingerprint=OLD_FP),
        ImageObs(fingerprint=NEW_FP, aliases=("template-desk",)),
    ),
)
BOB = InstanceObs(
    name="bob-container",
    status="Running",
    config={"user.lxdgpu.managed": "true", "volatile.base_image": NEW_FP},
    addresses=(Address(interface="eth0", family="inet", address="192.0.2.20", scope="global"),),
)
SERVER02 = HostSnapshot(
    host="server02",
    endpoint="https://192.0.2.12:8443",
    server_version="5.21.1",
    cpus=16,
    instances={BOB.name: BOB},
    images=(ImageObs(fingerprint=NEW_FP, aliases=("template-desk",)),),
)
DOWN = HostError(
    kind=HostErrorKind.CONFIG,
    message=f"host server02: cannot read {CLIENT_KEY}: Permission denied",
    hint=f"fix the path, or put the file there ({CLIENT_CERT}, other.pem)",
)
SERVER02_DOWN = HostSnapshot(host="server02", endpoint="https://192.0.2.12:8443", error=DOWN)

BOTH_UP = FleetSnapshot(hosts={"server01": SERVER01, "server02": SERVER02})
ONE_DOWN = FleetSnapshot(hosts={"server01": SERVER01, "server02": SERVER02_DOWN})
