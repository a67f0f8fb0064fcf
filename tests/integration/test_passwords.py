"""Against real LXD: first passwords in the lab's busybox containers (``execute.passwords``).

One lab host, two users of a template that runs VNC: ``apply --target tom`` creates tom's
container, ``reconcile`` creates ann's. Each container's ``/etc/shadow`` then holds a SHA-512
hash for ``ubuntu`` with day 0 as its last change (expired), the credentials file (mode 0600 in
the lab's 0700 store) holds the password that hash verifies (checked with ``openssl passwd``,
the password on standard input), the VNC password file is the user's, 0600, and the pushed files
are gone. Neither password shows in the apply output, the reconcile log or metrics, ``plan
--format json`` or the container's recorded exec output, and a second apply keeps both. The lab
image's ``chpasswd`` and ``vncpasswd`` are stand-ins (``lab.stand_ins``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import LabHandle, output_of

pytestmark = pytest.mark.lxd

FLEET = """\
version: 1
defaults:
  profiles: [default]
  cpu: 1
hosts:
  pw01:
    endpoint: https://192.0.2.41:8443
    client_cert: certs/client.crt
    client_key: certs/client.key
    server_cert: certs/pw01.crt
image_servers:
  lab-images:
    url: https://images.example.net/
    protocol: simplestreams
profiles:
  default:
    devices:
      root: {type: disk, path: /, pool: default}
templates:
  desk:
    alias: template-desk
    base: lab-images:busybox
    build_host: pw01
    vnc: true
users:
  tom: {host: pw01, template: desk, uid: 1003, gid: 1003}
  ann: {host: pw01, template: desk, uid: 1004, gid: 1004}
"""


def _shadow_line(handle: LabHandle, container: str) -> list[str]:
    shadow = handle.lxc("pw01", "exec", container, "--", "cat", "/etc/shadow").stdout
    return next(line for line in shadow.splitlines() if line.startswith("ubuntu:")).split(":")


def _verifies(password: str, crypted: str) -> bool:
    """Whether ``crypted`` (``$6$SALT$HASH``) is the SHA-512 crypt of ``password``."""
    salt = crypted.split("$")[2]
    made = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip() == crypted


def test_first_passwords_are_set_expired_kept_private_and_never_shown(
    lab_factory: Callable[[str], LabHandle], tmp_path: Path
) -> None:
    handle = lab_factory(FLEET)
    plan_before = handle.cli("plan", "--format", "json")
    assert plan_before.exit_code == 0, output_of(plan_before)

    applied = handle.cli("apply", "--yes", "--target", "tom")
    assert applied.exit_code == 0, output_of(applied)
    log, metrics = tmp_path / "reconcile.jsonl", tmp_path / "metrics.prom"
    reconciled = handle.cli(
        "reconcile",
        "--log-file",
        str(log),
        "--metrics-file",
        str(metrics),
        "--lock-file",
        str(tmp_path / "lock"),
    )
    assert reconciled.exit_code in (0, 2), output_of(reconciled)

    store = handle.dir / "credentials"
    assert stat.S_IMODE(os.lstat(store).st_mode) == 0o700
    kept = {}
    for user in ("tom", "ann"):
        path = store / f"{user}.json"
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        kept[user] = json.loads(path.read_text())
        assert kept[user]["set_at"] and kept[user]["container_user"] == "ubuntu"
        container = f"{user}-container"
        line = _shadow_line(handle, container)
        assert line[1].startswith("$6$") and line[2] == "0", line
        assert _verifies(kept[user]["password"], line[1])
        vnc = handle.lxc(
            "pw01", "exec", container, "--", "stat", "-c", "%a %u", "/home/ubuntu/.vnc/passwd"
        ).stdout.split()
        assert vnc == ["600", "1000"]
        written = handle.lxc(
            "pw01", "exec", container, "--", "cat", "/home/ubuntu/.vnc/passwd"
        ).stdout.strip()
        assert written == hashlib.sha256(kept[user]["vnc_password"].encode()).hexdigest()
        left = handle.lxc("pw01", "exec", container, "--", "ls", "-a", "/root", check=False).stdout
        assert ".lxdgpu" not in left

    plan_after = handle.cli("plan", "--format", "json")
    assert plan_after.exit_code == 0, output_of(plan_after)
    again = handle.cli("apply", "--yes")
    assert again.exit_code == 0, output_of(again)
    for user in ("tom", "ann"):
        assert json.loads((store / f"{user}.json").read_text()) == kept[user]
        assert _verifies(kept[user]["password"], _shadow_line(handle, f"{user}-container")[1])

    shown = handle.cli("credentials", "tom")
    assert shown.exit_code == 0 and kept["tom"]["password"] in shown.stdout

    texts = {
        "plan before": plan_before.stdout,
        "apply": output_of(applied),
        "reconcile": output_of(reconciled),
        "reconcile log": log.read_text(),
        "metrics": metrics.read_text(),
        "plan after": plan_after.stdout,
        "second apply": output_of(again),
        "lxd log": _lxd_logs(handle),
    }
    secrets = [v for k in kept.values() for v in (k["password"], k["vnc_password"])]
    leaks = [name for name, text in texts.items() for s in secrets if s in text]
    assert leaks == []


def test_reset_password_sets_a_new_one_in_the_running_container(
    lab_factory: Callable[[str], LabHandle],
) -> None:
    handle = lab_factory(
        FLEET.replace("  ann: {host: pw01, template: desk, uid: 1004, gid: 1004}\n", "")
    )
    assert handle.cli("apply", "--yes").exit_code == 0
    store = handle.dir / "credentials"
    old = json.loads((store / "tom.json").read_text())
    reset = handle.cli("reset-password", "tom", "--yes")
    assert reset.exit_code == 0, output_of(reset)
    new = json.loads((store / "tom.json").read_text())
    assert new["password"] != old["password"]
    line = _shadow_line(handle, "tom-container")
    assert _verifies(new["password"], line[1]) and line[2] == "0"
    assert new["password"] not in output_of(reset)
    handle.lxc("pw01", "stop", "tom-container")
    stopped = handle.cli("reset-password", "tom", "--yes")
    assert stopped.exit_code == 1
    assert "is stopped" in output_of(stopped) and "lxc start" in output_of(stopped)
    assert json.loads((store / "tom.json").read_text()) == new


def _lxd_logs(handle: LabHandle) -> str:
    """The lab daemon's log and every container's recorded exec output."""
    lxd_dir = Path(handle.state.hosts["pw01"].lxd_dir)
    parts = []
    for path in [lxd_dir / "lxd.log", *lxd_dir.glob("logs/*/*"), handle.dir / "lxd.log"]:
        if path.is_file():
            parts.append(path.read_text(errors="replace"))
    return "\n".join(parts)
