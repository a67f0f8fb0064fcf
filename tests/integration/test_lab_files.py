"""``lab up`` on a lab directory it cannot write: a one-line error naming the file and what to do,
never a traceback. The directory is made read-only with a read-only bind mount (``mount --bind``,
then ``mount -o remount,ro,bind``): the tests run as root, for whom ``chmod`` does not stop
writes. Needs root and ``mount``; lab-level (marker ``lxd``) because ``lab up`` checks the machine
(root, Debian's ``lxd``) before it writes."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lxdgpu_reconcile.cli import app
from tests.integration.conftest import LAB_FLEET, LAB_PARENT

pytestmark = pytest.mark.lxd
runner = CliRunner()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"a read-only directory cannot be made here: {reason}", pytrace=False)
    pytest.skip(f"a read-only directory cannot be made here: {reason}")


@pytest.fixture
def read_only_dir() -> Iterator[Path]:
    if os.geteuid() != 0:
        _unavailable("not root")
    path = Path(tempfile.mkdtemp(prefix="ro", dir=LAB_PARENT))
    path.chmod(0o755)
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if mounted.returncode != 0:
        path.rmdir()
        _unavailable(mounted.stderr.decode().strip())
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
        path.rmdir()


@pytest.mark.parametrize("below", [False, True])
def test_lab_up_in_a_read_only_directory_says_so(read_only_dir: Path, below: bool) -> None:
    lab_dir = read_only_dir / "lab" if below else read_only_dir
    result = runner.invoke(app, ["lab", "up", "-f", str(LAB_FLEET), "--dir", str(lab_dir)])
    assert result.exit_code == 1, result.output
    written = lab_dir if below else lab_dir / "lab.lock"
    assert f"cannot write {written}: the file system is read-only" in result.output
    assert "choose a writable --dir" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
