"""First passwords and the credentials store, over in-memory LXD hosts (``tests.fakes.lxd``).

The container side of ``execute.passwords.SCRIPT`` is played by ``Container``: it reads the file
the executor pushed, keeps the password as ``chpasswd`` would, expires it, writes the VNC
password and removes the files, and records what the credentials store held at that moment. The
integration test (``tests/integration/test_passwords.py``) runs the real script in a real
container.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.cli.passwords import CREDENTIALS_ENV
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute import credentials as stored
from lxdgpu_reconcile.execute import executor, passwords
from lxdgpu_reconcile.execute.results import ActionResult, Outcome
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.lab import image
from lxdgpu_reconcile.observe import lxdapi
from lxdgpu_reconcile.observe.lxderrors import LxdError
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning import planner
from tests.fakes.fleet import FakeFleet
from tests.fakes.lxd import FakeLxd
from tests.unit.planning import support

TOM = {"tom": {"host": "h1", "template": "desk", "uid": 1003, "gid": 1003}}
FLEET = support.fleet_from({"users": TOM})
VNC_FLEET = support.fleet_from({"users": TOM, "templates": {"desk": {"vnc": True}}})
STOPPED = support.fleet_from({"users": {"tom": {**TOM["tom"], "state": "stopped"}}})
CREATE = "h1/instance/tom-container/create"
START = "h1/instance/tom-container/start"


class Container:
    """Plays ``passwords.SCRIPT`` in the fake containers of ``lxd``: ``shadow`` maps (instance,
    user) to the password in effect and its last change day (0: expired); ``vnc`` the VNC
    password written; ``seen`` what the credentials store held when the script ran."""

    def __init__(self, lxd: FakeLxd, store: stored.CredentialStore, code: int = 0) -> None:
        self.lxd = lxd
        self.store = store
        self.code = code
        self.shadow: dict[tuple[str, str], tuple[str, int]] = {}
        self.vnc: dict[tuple[str, str], str] = {}
        self.seen: list[dict[str, Any]] = []
        lxd.argv_handler = self

    def __call__(
        self, instance: str, argv: tuple[str, ...], environment: Mapping[str, str]
    ) -> tuple[int, bytes, bytes]:
        assert argv[:3] == ("/bin/sh", "-c", passwords.SCRIPT)
        user, file, vnc_file = argv[4:]
        path = self.store.path_of("tom")
        self.seen.append(
            {
                "dir_mode": stat.S_IMODE(os.lstat(self.store.directory).st_mode),
                "file_mode": stat.S_IMODE(os.lstat(path).st_mode),
                "stored": json.loads(path.read_text()),
                "pushed": dict(self.lxd.files[(instance, file)]),
            }
        )
        if self.code:
            return self.code, b"", b"chpasswd: something went wrong\n"
        name, _, password = self.lxd.files.pop((instance, file))["content"].decode().partition(":")
        assert name == user
        self.shadow[(instance, user)] = (password.rstrip("\n"), 0)
        if vnc_file:
            self.vnc[(instance, user)] = self.lxd.files.pop((instance, vnc_file))[
                "content"
            ].decode()
        return 0, b"", b""


def _plan(fleet: Fleet, observed: dict[str, Any] | None = None) -> tuple[plans.Plan, FakeFleet]:
    snapshot = support.snapshot_from(observed or {"h1": {}}, fleet, sites.REAL)
    return planner.make_plan(fleet, snapshot, sites.REAL), FakeFleet(snapshot)


def _apply(
    plan: plans.Plan, hosts: FakeFleet, fleet: Fleet, store: stored.CredentialStore | None
) -> dict[str, ActionResult]:
    report = executor.apply_plan(plan, fleet, timeout=5.0, connect=hosts.connect, credentials=store)
    return {result.id: result for result in report.results}


@pytest.fixture
def store(tmp_path: Path) -> stored.CredentialStore:
    return stored.CredentialStore(tmp_path / "state" / "credentials")


def test_the_plan_asks_a_first_password_for_the_container_user_of_a_create_only() -> None:
    plan, _ = _plan(VNC_FLEET)
    body = next(a.body for a in plan.actions if a.id == CREATE)
    assert isinstance(body, plans.CreateInstanceBody)
    assert (body.first_password, body.vnc) == ("ubuntu", True)
    plain, _ = _plan(FLEET)
    body = next(a.body for a in plain.actions if a.id == CREATE)
    assert isinstance(body, plans.CreateInstanceBody)
    assert (body.first_password, body.vnc) == ("ubuntu", False)
    assert passwords.wanted(plain)


def test_apply_sets_one_expired_password_written_0600_in_0700_before_the_exec(
    store: stored.CredentialStore,
) -> None:
    plan, hosts = _plan(FLEET)
    container = Container(hosts.hosts["h1"], store)
    results = _apply(plan, hosts, FLEET, store)
    assert results[START].outcome is Outcome.DONE, results[START]
    assert "first password for ubuntu set" in results[START].message
    assert len(container.seen) == 1
    seen = container.seen[0]
    # The credentials file existed, private, before the password reached the container.
    assert (seen["dir_mode"], seen["file_mode"]) == (0o700, 0o600)
    assert seen["stored"]["set_at"] is None
    assert seen["pushed"]["mode"] == "0600" and seen["pushed"]["uid"] == 0
    kept = store.read("tom")
    assert kept is not None and kept.set_at is not None
    assert (kept.host, kept.container, kept.container_user) == ("h1", "tom-container", "ubuntu")
    assert container.shadow[("tom-container", "ubuntu")] == (kept.password, 0)
    assert seen["stored"]["password"] == kept.password
    assert kept.vnc_password is None
    assert len(kept.password) >= 16
    assert stat.S_IMODE(os.stat(store.path_of("tom")).st_mode) == 0o600
    # The pushed files are gone once the script ran.
    assert not [path for inst, path in hosts.hosts["h1"].files if path.startswith("/root/.lxd")]


def test_the_password_is_in_no_argument_vector_result_or_plan(
    store: stored.CredentialStore,
) -> None:
    plan, hosts = _plan(VNC_FLEET)
    Container(hosts.hosts["h1"], store)
    results = _apply(plan, hosts, VNC_FLEET, store)
    kept = store.read("tom")
    assert kept is not None and kept.vnc_password is not None
    secrets = (kept.password, kept.vnc_password)
    argv = [arg for _, command in hosts.hosts["h1"].argv_executed for arg in command]
    assert passwords.VNC_FILE in argv
    texts = [
        *argv,
        *hosts.hosts["h1"].writes,
        *(r.message + r.hint for r in results.values()),
        json.dumps(plan.model_dump(mode="json")),
        repr(kept),
    ]
    assert not [text for text in texts for secret in secrets if secret in text]


def test_a_vnc_template_gets_a_vnc_password_too(store: stored.CredentialStore) -> None:
    plan, hosts = _plan(VNC_FLEET)
    container = Container(hosts.hosts["h1"], store)
    results = _apply(plan, hosts, VNC_FLEET, store)
    assert "and a VNC password" in results[START].message
    kept = store.read("tom")
    assert kept is not None and kept.vnc_password is not None
    assert container.vnc[("tom-container", "ubuntu")] == kept.vnc_password + "\n"
    assert len(kept.vnc_password) == passwords.VNC_PASSWORD_LENGTH


def test_a_second_apply_keeps_the_password(store: stored.CredentialStore) -> None:
    plan, hosts = _plan(FLEET)
    container = Container(hosts.hosts["h1"], store)
    _apply(plan, hosts, FLEET, store)
    first = store.path_of("tom").read_bytes()
    again = planner.make_plan(FLEET, hosts.snapshot(), sites.REAL)
    _apply(again, hosts, FLEET, store)
    assert not passwords.wanted(again)
    assert store.path_of("tom").read_bytes() == first
    assert len(container.seen) == 1


def test_reset_password_writes_a_new_one(store: stored.CredentialStore) -> None:
    plan, hosts = _plan(FLEET)
    container = Container(hosts.hosts["h1"], store)
    _apply(plan, hosts, FLEET, store)
    old = store.read("tom")
    done = passwords.reset_password(hosts.hosts["h1"], store, FLEET, "tom")
    new = store.read("tom")
    assert old is not None and new == done
    assert new.password != old.password
    assert container.shadow[("tom-container", "ubuntu")] == (new.password, 0)


def test_reset_password_needs_the_users_running_container(
    store: stored.CredentialStore,
) -> None:
    plan, hosts = _plan(STOPPED)
    Container(hosts.hosts["h1"], store)
    with pytest.raises(ToolError, match="tom-container is not on h1"):
        passwords.reset_password(hosts.hosts["h1"], store, STOPPED, "tom")
    _apply(plan, hosts, STOPPED, store)
    with pytest.raises(ToolError, match="is stopped") as stopped:
        passwords.reset_password(hosts.hosts["h1"], store, STOPPED, "tom")
    assert "reset-password tom" in stopped.value.hint
    with pytest.raises(ToolError, match="not in the fleet file"):
        passwords.reset_password(hosts.hosts["h1"], store, STOPPED, "ann")
    assert not store.path_of("tom").exists()


def test_a_container_created_stopped_gets_no_password_and_the_result_says_how(
    store: stored.CredentialStore,
) -> None:
    plan, hosts = _plan(STOPPED)
    container = Container(hosts.hosts["h1"], store)
    results = _apply(plan, hosts, STOPPED, store)
    assert results[CREATE].outcome is Outcome.DONE
    assert "reset-password tom" in results[CREATE].message
    assert container.seen == [] and not store.path_of("tom").exists()


def test_a_failed_password_fails_the_start_says_what_to_do_and_removes_the_files(
    store: stored.CredentialStore,
) -> None:
    plan, hosts = _plan(FLEET)
    container = Container(hosts.hosts["h1"], store, code=1)
    results = _apply(plan, hosts, FLEET, store)
    assert results[START].outcome is Outcome.FAILED
    assert results[START].message.startswith("started, but the password of ubuntu")
    assert "something went wrong" in results[START].message
    assert "reset-password tom" in results[START].hint
    kept = store.read("tom")
    assert kept is not None and kept.set_at is None
    assert kept.password not in results[START].message
    assert container.seen and not [p for _, p in hosts.hosts["h1"].files if "lxdgpu" in p]


def test_a_host_that_stops_answering_is_not_asked_again_to_remove_the_files(
    store: stored.CredentialStore,
) -> None:
    plan, hosts = _plan(FLEET)

    def silent(instance: str, argv: tuple[str, ...], env: Mapping[str, str]) -> Any:
        raise LxdError("set the password: the host did not answer within 5 s", unanswered=True)

    hosts.hosts["h1"].argv_handler = silent
    results = _apply(plan, hosts, FLEET, store)
    assert results[START].outcome is Outcome.FAILED
    assert "did not answer" in results[START].message
    # Each request to a silent host waits a whole timeout: the clean-up is not tried.
    assert not [w for w in hosts.hosts["h1"].writes if w.startswith("DELETE instances/")]


def test_a_reset_that_changed_nothing_keeps_the_stored_password(
    store: stored.CredentialStore,
) -> None:
    plan, hosts = _plan(FLEET)
    container = Container(hosts.hosts["h1"], store)
    _apply(plan, hosts, FLEET, store)
    before = store.path_of("tom").read_bytes()
    container.code = 2  # the script's checks: no such user, no chpasswd
    with pytest.raises(passwords.PasswordNotSet, match="nothing was changed") as failed:
        passwords.reset_password(hosts.hosts["h1"], store, FLEET, "tom")
    assert "reset-password tom" in failed.value.hint
    assert store.path_of("tom").read_bytes() == before


def test_without_a_store_no_password_is_set() -> None:
    plan, hosts = _plan(FLEET)
    results = _apply(plan, hosts, FLEET, None)
    assert results[START].message == "started"
    assert hosts.hosts["h1"].argv_executed == []


# --- the store ------------------------------------------------------------------------------------


def _creds(**fields: Any) -> stored.Credentials:
    base = {
        "user": "tom",
        "host": "h1",
        "container": "tom-container",
        "container_user": "ubuntu",
        "password": "pw",
    }
    return stored.Credentials(**{**base, **fields})


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o770])
def test_a_directory_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "creds"
    directory.mkdir(mode=0o700)
    directory.chmod(mode)
    with pytest.raises(stored.CredentialsError, match=f"mode is {mode:04o}") as refused:
        stored.CredentialStore(directory).write(_creds())
    assert f"chmod 700 {directory}" in refused.value.hint
    assert list(directory.iterdir()) == []


def test_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(stored.CredentialsError, match="symbolic link"):
        stored.CredentialStore(tmp_path / "link").write(_creds())
    assert list(real.iterdir()) == []


def test_an_unusable_store_stops_the_apply_before_anything_is_written(tmp_path: Path) -> None:
    directory = tmp_path / "creds"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    plan, _ = _plan(FLEET)
    with pytest.raises(stored.CredentialsError):
        passwords.store_for(plan, tmp_path / "fleet.yaml", directory, None)
    nothing = plans.Plan()
    assert passwords.store_for(nothing, tmp_path / "fleet.yaml", directory, None)


def test_the_default_directory_is_per_fleet_file_and_outside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    one = stored.default_directory(tmp_path / "a" / "fleet.yaml", env)
    two = stored.default_directory(tmp_path / "b" / "fleet.yaml", env)
    assert one != two
    assert one.parent == tmp_path / "state" / "lxdgpu-reconcile" / "credentials"
    assert one.name.startswith("fleet-")
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert stored.default_directory(Path("fleet.yaml"), env) == one
    relative = stored.default_directory(Path("fleet.yaml"), {"XDG_STATE_HOME": "rel"})
    assert relative.is_relative_to(Path.home() / ".local" / "state")
    lab = stored.directory_for(Path("fleet.yaml"), given=None, lab_dir="/var/tmp/lab1")
    assert lab == Path("/var/tmp/lab1/credentials")
    assert stored.directory_for(Path("f"), given=tmp_path, lab_dir="/l") == tmp_path


def test_user_names_that_are_not_a_fleets_are_refused(store: stored.CredentialStore) -> None:
    for name in ("../tom", "tom/x", ".tom", ""):
        with pytest.raises(stored.CredentialsError):
            store.path_of(name)


# --- the commands ---------------------------------------------------------------------------------


def test_credentials_shows_the_password_and_the_file(
    store: stored.CredentialStore, tmp_path: Path
) -> None:
    store.write(_creds(password="Secret123xyzABCD", vnc_password="vncpw123", set_at="2026-01-01"))
    runner = CliRunner()
    shown = runner.invoke(app, ["credentials", "tom", "--credentials-dir", str(store.directory)])
    assert shown.exit_code == 0, shown.output
    assert "Secret123xyzABCD" in shown.stdout and "vncpw123" in shown.stdout
    assert str(store.path_of("tom")) in shown.stdout
    assert "expired" in shown.stdout
    env = {CREDENTIALS_ENV: str(store.directory)}
    missing = runner.invoke(app, ["credentials", "ann"], env=env)
    assert missing.exit_code == 1
    assert "no password is stored for ann" in missing.output
    assert "reset-password ann" in missing.output


def test_credentials_says_when_a_password_was_not_confirmed(
    store: stored.CredentialStore,
) -> None:
    store.write(_creds())
    shown = CliRunner().invoke(
        app, ["credentials", "tom", "--credentials-dir", str(store.directory)]
    )
    assert "NOT CONFIRMED" in shown.stdout and "reset-password tom" in shown.stdout


def test_the_command_line_names_the_stores_environment_variable() -> None:
    assert CREDENTIALS_ENV == stored.ENV_VAR


# --- the seam: LxdApi.exec over pylxd -------------------------------------------------------------


class _Exec(lxdapi.PylxdApi):
    """``PylxdApi`` with LXD's answers to an exec played back: the operation ends with
    ``meta`` after ``polls`` polls; its recorded output files hold ``logs``."""

    def __init__(self, meta: dict[str, Any], polls: int = 1) -> None:
        self.meta, self.polls = meta, polls
        self.bodies: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.logs = {"exec_1.stdout": b"out\n", "exec_1.stderr": b"err\n"}

    def start_exec(self, instance: str, body: Mapping[str, Any], *, what: str = "") -> str:
        self.bodies.append(dict(body))
        return "1"

    def poll_operation(self, op_id: str, *, wait: int, what: str = "") -> dict[str, Any]:
        self.polls -= 1
        return self.meta if self.polls <= 0 else {"status_code": 103}

    def read_log(self, instance: str, name: str, *, offset: int, what: str = "") -> bytes:
        return self.logs[name][offset:]

    def _delete_log(self, instance: str, name: str) -> None:
        self.deleted.append(name)


DONE = {
    "status_code": 200,
    "metadata": {
        "return": 3,
        "output": {
            "1": "/1.0/instances/c/logs/exec_1.stdout",
            "2": "/1.0/instances/c/logs/exec_1.stderr",
        },
    },
}


def test_exec_is_non_interactive_without_websockets_and_reads_then_deletes_its_output() -> None:
    api = _Exec(DONE, polls=3)
    assert api.exec("c", ["/bin/sh", "-c", "x", "name", "arg"], timeout=30) == (
        3,
        b"out\n",
        b"err\n",
    )
    body = api.bodies[0]
    assert body["command"] == ["/bin/sh", "-c", "x", "name", "arg"]
    assert body["record-output"] is True
    assert body["wait-for-websocket"] is False and body["interactive"] is False
    assert body["environment"] == lxdapi.EXEC_ENVIRONMENT
    assert sorted(api.deleted) == ["exec_1.stderr", "exec_1.stdout"]


def test_exec_that_could_not_run_or_did_not_end_is_an_error() -> None:
    failed = _Exec({"status_code": 400, "err": "Instance is not running", "metadata": {}})
    with pytest.raises(lxdapi.LxdError, match="Instance is not running"):
        failed.exec("c", ["true"], timeout=30)
    endless = _Exec(DONE, polls=10**9)
    with pytest.raises(lxdapi.LxdError, match="not finished after 0s"):
        endless.exec("c", ["sleep", "9"], timeout=0)


# --- the lab image --------------------------------------------------------------------------------


def test_the_lab_image_has_what_the_password_script_needs() -> None:
    data = image.image_tarball(b"bb", ["bin/sh", "usr/sbin/chpasswd", "usr/bin/awk"], "x86_64", 7)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        members = {m.name: m for m in tar.getmembers()}
        shadow = tar.extractfile("rootfs/etc/shadow")
        chpasswd = tar.extractfile("rootfs/usr/sbin/chpasswd")
        assert shadow is not None and chpasswd is not None
        lines = shadow.read().decode().splitlines()
        script = chpasswd.read().decode()
    assert members["rootfs/etc/shadow"].mode == 0o600
    assert any(line.startswith("ubuntu:!:") for line in lines)
    # The stand-in replaces a link busybox might one day have; it is a file, not a link.
    assert members["rootfs/usr/sbin/chpasswd"].isfile()
    assert members["rootfs/usr/bin/vncpasswd"].mode == 0o755
    assert "mkpasswd -m sha512 -P 0" in script
