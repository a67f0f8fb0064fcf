"""The machine the lab runs on: commands, Debian packages, processes and mounts.

Does I/O (runs commands, reads ``/proc``). Every failure is a ``LabError`` that says what to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lxdgpu_reconcile.lab.faults import LabError, LabPrerequisiteError

#: Debian packages the lab needs, and a command each provides.
PACKAGES: Mapping[str, str] = {
    "lxd": "/usr/bin/lxd",
    "lxd-client": "/usr/bin/lxc",
    "busybox-static": "/bin/busybox",
    "iproute2": "/usr/sbin/ip",
    "uidmap": "/usr/bin/newuidmap",
    # Each lab host's own system is reached over SSH, as real hosts are.
    "openssh-server": "/usr/sbin/sshd",
    "openssh-client": "/usr/bin/ssh",
}

Progress = Callable[[str], None]


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120.0,
    what: str = "",
) -> str:
    """Run ``argv``; its stdout, or a ``LabError`` with its stderr."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            env=None if env is None else {**os.environ, **env},
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{what or argv[0]} failed: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise LabError(
            f"{what or ' '.join(argv)} failed: {detail[-1] if detail else done.returncode}"
        )
    return done.stdout


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabPrerequisiteError(
            "the lab needs root (it starts LXD daemons and sshds in namespaces of their own and "
            "creates veths); run it as root, e.g. with sudo"
        )


def _installed(package: str) -> bool:
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return Path(PACKAGES[package]).exists()
    return done.returncode == 0 and done.stdout.strip().endswith(" installed")


def missing_packages() -> tuple[str, ...]:
    return tuple(p for p in PACKAGES if not (_installed(p) and Path(PACKAGES[p]).exists()))


def ensure_packages(say: Progress) -> None:
    """Install the packages the lab needs with apt-get when any is missing."""
    missing = missing_packages()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise LabPrerequisiteError(
            f"the lab needs Debian's {', '.join(missing)} and there is no apt-get here; "
            "install them by hand"
        )
    say(f"installing {' '.join(missing)} with apt-get")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", *missing]
    try:
        run(install, env=env, timeout=900, what="apt-get install")
    except LabError:
        run(["apt-get", "update"], env=env, timeout=900, what="apt-get update")
        try:
            run(install, env=env, timeout=900, what="apt-get install")
        except LabError as exc:
            raise LabPrerequisiteError(
                f"cannot install {' '.join(missing)}: {exc}; install them by hand and retry"
            ) from None
    still = missing_packages()
    if still:
        raise LabPrerequisiteError(f"apt-get did not provide {' '.join(still)}; install by hand")


def is_lxd_of(pid: int | None, lxd_dir: str) -> bool:
    """Whether ``pid`` is a live LXD daemon serving ``lxd_dir``."""
    if not pid:
        return False
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        argv = (proc / "cmdline").read_bytes().split(b"\0")
        environ = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    if os.path.basename(argv[0].decode(errors="replace")) != "lxd" or len(argv) < 2:
        return False
    return f"LXD_DIR={lxd_dir}".encode() in environ


def pid_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def processes_under(path: str) -> list[int]:
    """Pids of LXD processes (``lxd``, ``[lxc monitor]``) whose command line is below ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        first = argv[0].decode(errors="replace")
        is_lxd = os.path.basename(first) == "lxd" or first.startswith("[lxc monitor]")
        inside = (path.rstrip("/") + "/").encode()
        if is_lxd and any(inside in arg for arg in argv) and not pid_gone(int(entry.name)):
            found.append(int(entry.name))
    return found


def _unescape(field: str) -> str:
    """A mountinfo path field: ``\\040`` style octal escapes decoded."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    root = str(path).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == root or point.startswith(root + "/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_under(path: Path) -> None:
    """Unmount everything the lab's daemons left mounted below ``path``."""
    for point in mounts_under(path):
        run(["umount", "-l", point], what=f"umount {point}")
    left = mounts_under(path)
    if left:
        raise LabError(f"{left[0]} is still mounted; unmount it by hand, then run `lab down` again")
