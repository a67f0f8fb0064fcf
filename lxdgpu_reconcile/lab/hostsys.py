"""Each lab host's own system: a copy of this machine's ``/etc`` and a ``/home`` of its own.

Does I/O. A lab host's LXD daemon runs in a mount namespace of its own (``unshare --mount``) in
which the host's system directory's ``etc`` and ``home`` are bound over ``/etc`` and ``/home``.
Everything started in that namespace (the daemon, its containers, the host's sshd, ``lab
exec``) sees the host's own accounts, id delegations (``/etc/subuid``, ``/etc/subgid``), homes
and the tool's ledger of the delegations it added (``/etc/lxdgpu-reconcile``); this machine's
are never written. Whole directories are bound, never single files: ``useradd`` replaces
``/etc/passwd`` by renaming ``/etc/passwd+`` over it, which would reach this machine's directory
through a file bound on its own.

``start_daemon`` starts one daemon in a namespace of its own given its directories (the lab's
hosts use it; so can a lab cluster's members). ``namespace_of``, ``sees_system`` and
``processes_in`` tell which processes live where, so that nothing is ever entered or killed in
this machine's own namespace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from lxdgpu_reconcile.lab import idmap
from lxdgpu_reconcile.lab.faults import LabError
from lxdgpu_reconcile.lab.system import pid_gone, run

MACHINE_ETC = Path("/etc")
#: The tool's own directory on this machine (the lab's registry, the default lab directory).
TOOL_STATE = Path("/var/lib/lxdgpu-reconcile")
#: This machine's directories that each lab host has one of its own of, bound over them in its
#: namespace: a copy of /etc, an empty /home.
OWN_DIRS = {"etc": MACHINE_ETC, "home": Path("/home")}

#: Runs in the new namespace: make every mount private (nothing propagates back to this
#: machine's namespace), bind the host's own directories, then become the daemon (same pid).
_NAMESPACE_SCRIPT = (
    'mount --make-rprivate / && mount --bind "$1" /etc && mount --bind "$2" /home && '
    'shift 2 && exec "$@"'
)
#: Starts the namespace detached (not a child of this process) and prints its pid, which stays
#: the daemon's pid: ``unshare`` and the script each exec the next program.
_DETACH_SCRIPT = 'out="$1"; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'


def etc_of(system: Path) -> Path:
    return system / "etc"


def home_of(system: Path) -> Path:
    return system / "home"


def make_system(system: Path) -> bool:
    """``system/etc`` (a copy of this machine's ``/etc``, made once) and ``system/home`` (empty,
    made once), with a base id range for root's containers in the copy's subuid and subgid.
    True when the copy was made now."""
    system.mkdir(parents=True, exist_ok=True)
    system.chmod(0o755)
    etc = etc_of(system)
    made = False
    if not etc.is_dir():
        partial = system / "etc.partial"
        if partial.exists():
            run(["rm", "-rf", "--one-file-system", "--", str(partial)], what=f"rm {partial}")
        # cp -a keeps owners, modes and links (/etc/shadow stays root:shadow 0640).
        run(["cp", "-a", "--", str(MACHINE_ETC), str(partial)], what=f"copy /etc to {partial}")
        partial.rename(etc)
        made = True
    home = home_of(system)
    if not home.is_dir():
        home.mkdir()
        home.chmod(0o755)
    for name in ("subuid", "subgid"):
        idmap.add_lines(etc / name, ())
    return made


def start_daemon(
    lxd_dir: Path,
    system: Path,
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start an LXD daemon for ``lxd_dir`` in a mount namespace of its own where ``system``'s
    ``etc`` and ``home`` are /etc and /home; detached, logging to ``log``. ``lxd_dir``,
    ``system`` and ``log`` stay where they are in the namespace. Returns the daemon's pid (the
    namespace's first process). Does not wait until it is ready."""
    for directory in (etc_of(system), home_of(system)):
        if not directory.is_dir():
            raise LabError(f"{directory} is missing; run `lxdgpu-reconcile lab up` again")
    daemon = ["lxd", "--group", "root", "--logfile", str(log)]
    argv = [
        "sh", "-c", _DETACH_SCRIPT, "lab-detach", f"{log}.out",
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", _NAMESPACE_SCRIPT, "lab-namespace",
        str(etc_of(system)), str(home_of(system)), *daemon,
    ]  # fmt: skip
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**os.environ, "LXD_DIR": str(lxd_dir), **(env or {})},
        start_new_session=True,
        check=False,
    )
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise LabError(f"could not start lxd for {lxd_dir}: {out.stderr.strip()}; see {log}.out")
    return int(out.stdout.strip())


def namespace_of(pid: int | None) -> str | None:
    """The mount namespace of ``pid`` (``mnt:[4026532...]``); None when it is gone."""
    if not pid or pid_gone(pid):
        return None
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


@contextmanager
def holding(pids: Iterable[int | None]) -> Iterator[set[str]]:
    """The mount namespaces of the live ``pids``, held open until the block ends: a namespace
    whose processes all end meanwhile is not freed, so its number cannot be reused by another
    namespace (of another lab) that ``end_namespace`` would then stop by mistake."""
    held: dict[str, int] = {}
    try:
        for pid in pids:
            if not pid or pid_gone(pid):
                continue
            try:
                fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
            except OSError:
                continue
            namespace = os.readlink(f"/proc/self/fd/{fd}")
            if namespace in held or namespace == own_namespace():
                os.close(fd)
                continue
            held[namespace] = fd
        yield set(held)
    finally:
        for fd in held.values():
            os.close(fd)


def own_namespace() -> str:
    return os.readlink("/proc/self/ns/mnt")


def _same_file(one: str | Path, two: str | Path) -> bool:
    try:
        a, b = os.stat(one), os.stat(two)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def sees_system(pid: int | None, system: Path) -> bool:
    """Whether ``pid`` lives in a namespace of its own, not this machine's, where /etc and
    /home are ``system``'s."""
    ns = namespace_of(pid)
    if ns is None or ns == own_namespace():
        return False
    root = f"/proc/{pid}/root"
    return all(_same_file(f"{root}{machine}", system / own) for own, machine in OWN_DIRS.items())


def processes_in(namespace: str) -> list[int]:
    """Pids of the processes in mount namespace ``namespace``; never this machine's own
    namespace (empty then)."""
    if namespace == own_namespace():
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.readlink(entry / "ns" / "mnt") == namespace:
                found.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in found if not pid_gone(pid)]


def _wait_gone(pids: Iterable[int], seconds: float) -> list[int]:
    left = list(pids)
    deadline = time.monotonic() + seconds
    while left and time.monotonic() < deadline:
        left = [pid for pid in left if not pid_gone(pid)]
        if left:
            time.sleep(0.1)
    return [pid for pid in left if not pid_gone(pid)]


def end_namespace(namespace: str | None) -> None:
    """Stop every process still in ``namespace`` (TERM, then KILL); the namespace and its
    mounts go with its last process (and the last hold on it, see ``holding``). This machine's
    own namespace is never touched."""
    if namespace is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_in(namespace)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
        if not _wait_gone(pids, 5):
            return
    left = processes_in(namespace)
    if left:
        raise LabError(
            f"processes {', '.join(map(str, left))} of a lab host's namespace do not stop; "
            "stop them by hand, then run `lxdgpu-reconcile lab down` again"
        )


def enter_argv(pid: int, argv: Sequence[str]) -> list[str]:
    """``argv`` run in the mount namespace of ``pid``."""
    return ["nsenter", "--target", str(pid), "--mount", "--", *argv]
