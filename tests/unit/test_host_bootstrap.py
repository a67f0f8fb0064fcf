"""``host bootstrap``: the sequence of ``lxc`` commands over a fake host shell, idempotency, the
refusals (another pinned certificate, a path outside the fleet's folder, no terminal to ask on),
and that no certificate or key ever travels in an argument vector."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile import service
from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.execute import bootstrap
from lxdgpu_reconcile.fleet.loading import load_fleet
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.connect import HostConnectError
from lxdgpu_reconcile.observe.hostshell import HostShell
from lxdgpu_reconcile.site import Site
from lxdgpu_reconcile.state import HostErrorKind
from tests.fakes.lxc_host import FakeLxcHost
from tests.helpers import fingerprint, self_signed

runner = CliRunner()

FLEET = """\
version: 1
hosts:
  server01:
    endpoint: {endpoint}
    client_cert: certs/admin.crt
    client_key: certs/admin.key
    server_cert: {server_cert}
    ssh: root@server01
  nossh:
    endpoint: https://192.0.2.12:8443
    client_cert: certs/admin.crt
    client_key: certs/admin.key
    server_cert: certs/nossh.crt
"""


class World:
    """A fleet folder with the admin's certificate, and one fake host."""

    def __init__(
        self,
        root: Path,
        *,
        endpoint: str = "https://192.0.2.11:8443",
        server_cert: str = "certs/server01.crt",
    ) -> None:
        self.dir = root / "fleet"
        (self.dir / "certs").mkdir(parents=True)
        self.client_cert, self.client_key = self_signed(self.dir / "certs", "admin")
        server_pem, _ = self_signed(root, "server01")
        self.server_pem = Path(server_pem).read_text()
        self.server_fp = fingerprint(server_pem)
        self.path = self.dir / "fleet.yaml"
        self.path.write_text(FLEET.format(endpoint=endpoint, server_cert=server_cert))
        self.host = FakeLxcHost(server_cert=self.server_pem)
        self.checked: list[str] = []

    @property
    def fleet(self) -> Fleet:
        loaded = load_fleet(self.path)
        assert loaded.fleet is not None, loaded.errors
        return loaded.fleet

    def opener(self, name: str) -> HostShell | None:
        return self.host if self.fleet.hosts[name].ssh else None

    def survey(self, **options: object) -> bootstrap.Pending:
        return bootstrap.survey_host(
            self.fleet,
            self.path,
            "server01",
            self.opener,
            **options,  # type: ignore[arg-type]
        )

    @property
    def pinned(self) -> Path:
        return self.dir / "certs" / "server01.crt"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    made = World(tmp_path)

    def check_https(name: str, host: object, *, timeout: float) -> str:
        made.checked.append(name)
        return "5.0.2"

    monkeypatch.setattr(bootstrap, "check_https", check_https)
    monkeypatch.setattr(service, "open_shell", lambda fleet, site: made.opener)
    return made


def test_a_fresh_host_listens_trusts_the_admin_and_its_certificate_is_pinned(world: World) -> None:
    pending = world.survey()

    assert pending.survey.new_address == "192.0.2.11:8443"
    assert pending.survey.trust and pending.survey.write_cert
    done, version = bootstrap.finish(pending, timeout=5)

    assert [c.argv for c in world.host.writes] == [
        ("lxc", "--force-local", "config", "set", "core.https_address", "192.0.2.11:8443"),
        ("lxc", "--force-local", "config", "trust", "add", "--name", "lxdgpu-reconcile", "-"),
    ]
    assert world.host.https_address == "192.0.2.11:8443"
    assert fingerprint(world.client_cert) in world.host.trusted
    assert fingerprint(str(world.pinned)) == world.server_fp
    assert len(done) == 3 and version == "5.0.2"
    assert world.checked == ["server01"]


def test_a_second_run_changes_nothing(world: World) -> None:
    bootstrap.finish(world.survey(), timeout=5)
    inode = world.pinned.stat().st_ino
    writes = len(world.host.writes)

    pending = world.survey()
    done, _ = bootstrap.finish(pending, timeout=5)

    assert not pending.survey.changes and done == ()
    assert len(world.host.writes) == writes
    assert world.pinned.stat().st_ino == inode  # not rewritten
    assert world.checked == ["server01", "server01"]  # checked over https each time


def test_no_certificate_or_key_is_ever_an_argument(world: World) -> None:
    # A client_cert file that also holds its key: only the certificate block is sent.
    key = Path(world.client_key).read_text()
    Path(world.client_cert).write_text(key + Path(world.client_cert).read_text())

    bootstrap.finish(world.survey(), timeout=5)

    trust_add = [c for c in world.host.calls if "trust" in c.argv]
    assert len(trust_add) == 1
    sent = trust_add[0].stdin.decode()
    assert "PRIVATE KEY" not in sent and sent.count("BEGIN CERTIFICATE") == 1
    secrets = [line for line in key.splitlines() if "-----" not in line]
    cert_lines = [line for line in sent.splitlines() if "-----" not in line]
    for call in world.host.calls:
        for arg in call.argv:
            assert not any(s in arg for s in secrets + cert_lines), arg


@pytest.mark.parametrize(
    ("current", "endpoint", "kept"),
    [
        ("[::]:8443", "https://192.0.2.11:8443", True),  # the guide's: every address
        ("0.0.0.0:8443", "https://192.0.2.11:8443", True),
        (":8443", "https://192.0.2.11:8443", True),
        ("192.0.2.11", "https://192.0.2.11:8443", True),  # LXD's port when none is written
        ("[::]:8444", "https://192.0.2.11:8443", False),
        ("127.0.0.1:8443", "https://192.0.2.11:8443", False),
        ("0.0.0.0:8443", "https://[2001:db8::1]:8443", False),
        ("[2001:db8:0::1]:8443", "https://[2001:db8::1]:8443", True),
        ("", "https://server01.example.org:8443", False),
    ],
)
def test_a_listen_address_that_answers_at_the_endpoint_is_kept(
    current: str, endpoint: str, kept: bool
) -> None:
    assert bootstrap.covers(current, *bootstrap.split_address(endpoint[8:])) is kept


def test_the_address_set_is_the_endpoints_or_every_address_for_a_name() -> None:
    assert bootstrap.listen_for("192.0.2.11", 8443) == "192.0.2.11:8443"
    assert bootstrap.listen_for("2001:db8::1", 8443) == "[2001:db8::1]:8443"
    assert bootstrap.listen_for("server01.example.org", 9443) == "[::]:9443"


def test_listen_sets_exactly_the_address_given(world: World) -> None:
    world.host.https_address = "192.0.2.11:8443"

    assert world.survey().survey.new_address is None
    assert world.survey(listen="[::]:8443").survey.new_address == "[::]:8443"
    with pytest.raises(bootstrap.BootstrapError, match="not an address"):
        world.survey(listen="$(reboot)")


def test_another_pinned_certificate_is_refused_with_both_fingerprints(world: World) -> None:
    other, _ = self_signed(world.dir, "other")
    world.pinned.write_text(Path(other).read_text())

    with pytest.raises(bootstrap.CertificateMismatch) as refused:
        world.survey()

    assert fingerprint(other) in refused.value.message
    assert world.server_fp in refused.value.message
    assert "--replace-cert" in refused.value.hint
    assert world.host.writes == []
    pending = world.survey(replace=True)
    bootstrap.finish(pending, timeout=5)
    assert fingerprint(str(world.pinned)) == world.server_fp


@pytest.mark.parametrize("server_cert", ["../outside.crt", "/etc/lxdgpu-server.crt", "link/s.crt"])
def test_a_server_cert_outside_the_fleets_folder_is_refused(
    tmp_path: Path, server_cert: str
) -> None:
    made = World(tmp_path, server_cert=server_cert)
    (made.dir / "link").symlink_to(tmp_path)

    with pytest.raises(bootstrap.BootstrapError, match="outside the fleet file's folder"):
        made.survey()

    assert made.host.calls == []
    assert not (tmp_path / "outside.crt").exists() and not (tmp_path / "s.crt").exists()


def test_a_unix_endpoint_has_nothing_to_bootstrap(tmp_path: Path) -> None:
    made = World(tmp_path, endpoint="unix:///var/lib/lxd/unix.socket")

    with pytest.raises(bootstrap.BootstrapError, match="not https"):
        made.survey()


@pytest.mark.parametrize(
    ("status", "stderr", "hint"),
    [
        (127, "bash: line 1: lxc: command not found", "install LXD"),
        (
            1,
            'Error: Get "http://unix.socket/1.0": dial unix /var/lib/lxd/unix.socket: connect: '
            "no such file or directory",
            "LXD is not running",
        ),
        (1, "Error: Get ... /var/lib/lxd/unix.socket: connect: permission denied", "root"),
    ],
)
def test_a_failing_lxc_says_what_to_do(world: World, status: int, stderr: str, hint: str) -> None:
    world.host.failures[("lxc",)] = (status, stderr)

    with pytest.raises(bootstrap.BootstrapError) as failed:
        world.survey()

    assert "server01" in failed.value.message and "ssh root@fake" in failed.value.message
    assert hint in failed.value.hint


def test_a_failed_https_check_says_what_was_done_and_what_to_do(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(name: str, host: object, *, timeout: float) -> str:
        raise HostConnectError(
            HostErrorKind.UNREACHABLE,
            f"host {name}: cannot connect to 192.0.2.11:8443: Connection refused",
            "is LXD running there?",
        )

    monkeypatch.setattr(bootstrap, "check_https", refused)

    with pytest.raises(bootstrap.BootstrapError) as failed:
        bootstrap.finish(world.survey(), timeout=5)

    assert failed.value.message == (
        "host server01: the changes are made, but the check over https failed: cannot connect "
        "to 192.0.2.11:8443: Connection refused"
    )
    assert "firewall" in failed.value.hint and "port 8443" in failed.value.hint
    assert fingerprint(str(world.pinned)) == world.server_fp  # what was done stays done


# --- the command ----------------------------------------------------------------------------------


def test_without_a_terminal_and_without_yes_nothing_changes(world: World) -> None:
    result = runner.invoke(app, ["host", "bootstrap", "server01", "-f", str(world.path)])

    assert result.exit_code == 1
    assert world.server_fp in result.stdout  # shown, to check on the server's console
    assert "run again with --yes" in result.stderr
    assert world.host.writes == [] and not world.pinned.exists()


def test_yes_bootstraps_and_a_second_run_says_nothing_changes(world: World) -> None:
    first = runner.invoke(app, ["host", "bootstrap", "server01", "-f", str(world.path), "--yes"])

    assert first.exit_code == 0, first.output
    assert "~ core.https_address (unset) -> 192.0.2.11:8443" in first.stdout
    assert f"server certificate SHA-256 fingerprint: {world.server_fp}" in first.stdout
    assert "checked: https://192.0.2.11:8443 answers over pinned https" in first.stdout

    again = runner.invoke(app, ["host", "bootstrap", "server01", "-f", str(world.path)])
    assert again.exit_code == 0, again.output  # nothing to ask about
    assert "host server01: nothing to change" in again.stdout
    assert "= certs/server01.crt is the server's certificate" in again.stdout


def test_a_host_without_ssh_needs_ssh_or_local(world: World) -> None:
    result = runner.invoke(app, ["host", "bootstrap", "nossh", "-f", str(world.path)])

    assert result.exit_code == 1
    assert "hosts.nossh.ssh" in result.stderr and "--local" in result.stderr


def test_local_runs_on_this_machine(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Site] = []

    def open_shell(fleet: Fleet, site: Site) -> object:
        seen.append(site)
        return lambda name: world.host

    monkeypatch.setattr(service, "open_shell", open_shell)
    result = runner.invoke(
        app, ["host", "bootstrap", "nossh", "-f", str(world.path), "--local", "--yes"]
    )

    assert result.exit_code == 0, result.output
    assert seen == [Site(local=True)]


def test_an_unknown_host_is_named(world: World) -> None:
    result = runner.invoke(app, ["host", "bootstrap", "server9", "-f", str(world.path)])

    assert result.exit_code == 1
    assert "declares no host 'server9'" in result.stderr
