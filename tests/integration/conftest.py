"""Fixtures for tests against real LXD daemons: the local lab.

``lab`` (session-scoped) brings up a lab for ``fleet-lab.yaml`` in a fresh short directory under
/var/tmp and brings it down at the end of the session; ``lab_factory`` brings up labs for other
fleet texts and brings each down after its test. Both need root and Debian's ``lxd`` package
(installed when missing). In CI (``CI=true``) a machine that cannot run the lab fails these tests
with the reason; elsewhere they are skipped.

Tests that use them are marked ``pytest.mark.lxd``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from lxdgpu_reconcile.cli import app
from lxdgpu_reconcile.fleet.loading import load_fleet
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.lab import (
    LabError,
    LabPrerequisiteError,
    LabState,
    lab_down,
    lab_up,
    use_lab,
)
from lxdgpu_reconcile.site import Site

HERE = Path(__file__).parent
LAB_FLEET = HERE / "fleet-lab.yaml"
#: Labs live here: short paths (unix sockets) whose parents every user can search.
LAB_PARENT = Path("/var/tmp")


@dataclass(frozen=True)
class LabHandle:
    """A running lab: the fleet pointed at it, its site, its record and a way to run ``lxc``."""

    dir: Path
    #: The fleet after ``use_lab``: endpoints and certificates are the lab daemons'.
    fleet: Fleet
    site: Site
    state: LabState
    #: The fleet as the file says it (what ``lab_up`` takes).
    spec: Fleet
    fleet_path: Path

    def env(self, host: str) -> dict[str, str]:
        """Environment for plain ``lxc`` against ``host``'s lab daemon."""
        return {
            **os.environ,
            "LXD_DIR": self.state.hosts[host].lxd_dir,
            "LXD_CONF": self.state.lxc_conf,
        }

    def cli(self, *args: str) -> Result:
        """``lxdgpu-reconcile ARGS -f FLEET --lab DIR``, run in this process (typer's runner)."""
        argv = [*args, "-f", str(self.fleet_path), "--lab", str(self.dir)]
        return CliRunner().invoke(app, argv, catch_exceptions=False)

    def lxc(
        self, host: str, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``lxc ARGS`` against ``host``'s daemon; with ``check``, fail the test on error."""
        done = subprocess.run(
            ["lxc", *args],
            env=self.env(host),
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"lxc {' '.join(args)} on {host} failed: {done.stderr.strip()}")
        return done

    def exec(
        self, host: str, *command: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``lxdgpu-reconcile lab exec HOST -- COMMAND``: a command on lab host ``host``'s own
        system; with ``check``, fail the test when it fails."""
        done = subprocess.run(
            [sys.executable, "-m", "lxdgpu_reconcile", "lab", "exec", "--dir", str(self.dir),
             host, "--", *command],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            pytest.fail(f"lab exec {host} -- {' '.join(command)} failed: {done.stderr.strip()}")
        return done


def output_of(result: Result) -> str:
    """What a command run by ``LabHandle.cli`` printed, standard error included."""
    try:
        return result.output + result.stderr
    except ValueError:  # stderr not captured apart
        return result.output


def cannot_run(reason: str) -> None:
    """Fail in CI, skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the LXD lab cannot run here: {reason}", pytrace=False)
    pytest.skip(f"the LXD lab cannot run here: {reason}")


def new_lab_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="lxlab-", dir=LAB_PARENT))
    path.chmod(0o755)
    return path


def bring_up(fleet_path: Path, lab_dir: Path) -> LabHandle:
    """``lab up`` for the fleet file at ``fleet_path`` in ``lab_dir``."""
    if os.geteuid() != 0:
        cannot_run(f"the tests run as uid {os.geteuid()}, the lab needs root")
    loaded = load_fleet(fleet_path)
    if not loaded.ok or loaded.fleet is None:
        pytest.fail(f"{fleet_path} has errors: " + "; ".join(map(str, loaded.errors)))
    try:
        state = lab_up(loaded.fleet, lab_dir)
    except LabPrerequisiteError as exc:
        cannot_run(str(exc))
    fleet, site = use_lab(loaded.fleet, lab_dir)
    return LabHandle(
        dir=lab_dir, fleet=fleet, site=site, state=state, spec=loaded.fleet, fleet_path=fleet_path
    )


def bring_down(lab_dir: Path) -> None:
    """``lab down``; also removes the directory when the lab never came up in it."""
    try:
        lab_down(lab_dir)
    except LabError as exc:
        pytest.fail(f"lab down in {lab_dir} failed: {exc}")
    if lab_dir.exists() and not any(lab_dir.iterdir()):
        lab_dir.rmdir()


@pytest.fixture(scope="session")
def lab() -> Iterator[LabHandle]:
    """The session's lab for ``fleet-lab.yaml`` (hosts server01 and server02)."""
    lab_dir = new_lab_dir()
    try:
        yield bring_up(LAB_FLEET, lab_dir)
    finally:
        bring_down(lab_dir)


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[[str], LabHandle]]:
    """``make(fleet_text)`` brings up a lab for that fleet; each is brought down after the test."""
    made: list[Path] = []

    def make(fleet_text: str) -> LabHandle:
        fleet_path = tmp_path / f"fleet-{len(made)}.yaml"
        fleet_path.write_text(fleet_text)
        made.append(new_lab_dir())
        return bring_up(fleet_path, made[-1])

    try:
        yield make
    finally:
        for lab_dir in made:
            if lab_dir.exists():
                bring_down(lab_dir)
