"""Bring the local lab up and down, and tell an admin how to reach one of its hosts.

Does I/O throughout: installs packages, starts LXD daemons, creates veths, edits
``/etc/subuid`` and ``/etc/subgid``, writes under the lab directory. Every step is recorded in
``<lab>/lab.json`` as soon as it is done, so ``lab up`` can be re-run and ``lab down`` removes
exactly what the lab made, even after an interrupted ``lab up``. Veths and delegation lines are
shared with the other labs on the machine and counted in ``lab.shared``'s registry: the last lab
that uses one removes it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shlex
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.lab import daemon, idmap, netdev, shared
from lxdgpu_reconcile.lab.certs import ensure_client_cert, write_lxc_config
from lxdgpu_reconcile.lab.faults import LabError
from lxdgpu_reconcile.lab.image import build_images, import_images
from lxdgpu_reconcile.lab.needs import LabNeeds, needs_of
from lxdgpu_reconcile.lab.record import (
    STATE_FILE,
    HostLab,
    LabState,
    Veth,
    load_lab,
    save_lab,
    state_path,
)
from lxdgpu_reconcile.lab.sock import LxdSocket
from lxdgpu_reconcile.lab.system import ensure_packages, require_root, unmount_under

DEFAULT_LAB_DIR = Path("/var/lib/lxdgpu-reconcile/lab")
#: Unix socket paths are limited to 108 bytes; the longest LXD makes is ``seccomp.socket``.
SOCKET_PATH_MAX = 107
LOCK_FILE = "lab.lock"
#: Entries of the lab directory that the lab makes (and ``lab down`` removes).
MADE = ("hosts", "root", "lxc", "image", STATE_FILE, "lab.tmp")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def lab_up(fleet: Fleet, lab_dir: Path, *, progress: Progress | None = None) -> LabState:
    """Start (or reuse) one LXD daemon per fleet host in ``lab_dir`` and prepare the machine."""
    say = progress or _quiet
    lab_dir = Path(os.path.abspath(lab_dir))
    needs = needs_of(fleet)
    require_root()
    check_lab_dir(lab_dir, needs.hosts)
    ensure_packages(say)
    _mkdirs(lab_dir)
    with _locked(lab_dir):
        try:
            state = _load_or_new(lab_dir)
            save_lab(state)
            state = _ensure_veths(state, needs, say)
            state, delegated = _ensure_idmap(state, needs, say)
            _make_host_tree(Path(state.host_root), needs)
            tarballs = build_images(lab_dir / "image", needs.image_aliases)
            for name in needs.hosts:
                state = _ensure_host(state, name, tarballs, restart=delegated, say=say)
            _write_lxc_config(state)
        except OSError as exc:  # a file of the lab that cannot be written: no traceback
            if exc.filename is None or exc.errno not in _WRITE_ERRORS:
                raise
            raise _unwritable(Path(exc.filename), exc) from None
    return state


def lab_down(lab_dir: Path, *, progress: Progress | None = None) -> bool:
    """Stop the lab's daemons and remove what it made; False when there was no lab."""
    say = progress or _quiet
    lab_dir = Path(os.path.abspath(lab_dir))
    if not state_path(lab_dir).exists():
        say(f"no lab in {lab_dir}; nothing to do")
        return False
    require_root()
    with _locked(lab_dir):
        state = load_lab(lab_dir)
        for host in state.hosts.values():
            say(f"{host.name}: stopping LXD (pid {host.pid})")
            daemon.stop(host)
        state = state.model_copy(
            update={
                "hosts": {n: h.model_copy(update={"pid": None}) for n, h in state.hosts.items()}
            }
        )
        save_lab(state)
        state = _release_machine_changes(state, say)
        unmount_under(lab_dir)
        for entry in MADE:
            _remove(lab_dir / entry)
        (lab_dir / LOCK_FILE).unlink(missing_ok=True)
    _rmdir_if_empty(lab_dir)
    say(f"removed the lab in {lab_dir}")
    return True


def lab_env(lab_dir: Path, host: str) -> str:
    """Shell lines that point plain ``lxc`` at ``host``'s lab daemon."""
    state = load_lab(Path(os.path.abspath(lab_dir)))
    lab = state.host(host)
    lines = [
        f"export LXD_DIR={shlex.quote(lab.lxd_dir)}",
        f"export LXD_CONF={shlex.quote(state.lxc_conf)}",
    ]
    if not daemon.running(lab):
        lines.append(f"# {host}'s lab daemon is not running: run `lxdgpu-reconcile lab up` again")
    return "\n".join(lines) + "\n"


def check_lab_dir(lab_dir: Path, hosts: tuple[str, ...]) -> None:
    """Refuse directories that would break LXD or that hold something else."""
    longest = max((len(str(_lxd_dir(lab_dir, h))) for h in hosts), default=0)
    if longest + len("/seccomp.socket") > SOCKET_PATH_MAX:
        raise LabError(
            f"{lab_dir} is too long for LXD's unix sockets (108 bytes at most); "
            "choose a shorter --dir, e.g. /var/tmp/lab"
        )
    for parent in reversed(lab_dir.parents):
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise LabError(
                f"{parent} is not searchable by other users, so unprivileged containers under "
                f"it cannot start; choose a --dir outside it, e.g. /var/tmp/lab"
            )
    if lab_dir.exists() and not state_path(lab_dir).exists() and any(lab_dir.iterdir()):
        raise LabError(f"{lab_dir} exists and holds something else; choose a new or empty --dir")
    if lab_dir.exists() and not lab_dir.stat().st_mode & 0o001:
        raise LabError(f"{lab_dir} is not searchable by other users; run `chmod 755 {lab_dir}`")


def _lxd_dir(lab_dir: Path, host: str) -> Path:
    return lab_dir / "hosts" / host


def _mkdirs(path: Path, mode: int = 0o755) -> None:
    """Create ``path`` and its missing parents with ``mode``, whatever the umask."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(exist_ok=True)
            directory.chmod(mode)
        except OSError as exc:
            raise _unwritable(directory, exc) from None


#: What ``lab up`` reports as a lab file it cannot write rather than as a failure of its own.
_WRITE_ERRORS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM})


def _unwritable(path: Path, exc: OSError) -> LabError:
    """The error for a lab file or directory that cannot be made or written."""
    return LabError(
        f"cannot write {path}: {fileio.reason_of(exc)}; the lab needs a directory it can write",
        "choose a writable --dir (e.g. /var/tmp/lab), or make this one writable, and run "
        "`lxdgpu-reconcile lab up` again",
    )


@contextmanager
def _locked(lab_dir: Path) -> Iterator[None]:
    path = lab_dir / LOCK_FILE
    try:
        handle = path.open("a")
    except OSError as exc:
        raise _unwritable(path, exc) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _load_or_new(lab_dir: Path) -> LabState:
    if state_path(lab_dir).exists():
        state = load_lab(lab_dir)
        if Path(state.dir) != lab_dir:
            raise LabError(
                f"the lab in {lab_dir} was made in {state.dir} and cannot be moved; "
                f"run `lxdgpu-reconcile lab down --dir {lab_dir}` and bring it up again"
            )
        return state
    conf = lab_dir / "lxc"
    cert, key = ensure_client_cert(conf)
    return LabState(
        dir=str(lab_dir),
        client_cert=str(cert),
        client_key=str(key),
        lxc_conf=str(conf),
        host_root=str(lab_dir / "root"),
    )


def _ensure_veths(state: LabState, needs: LabNeeds, say: Progress) -> LabState:
    """A veth for each NIC parent that is missing; this lab counted as a user of each veth that
    a lab made. An interface that existed before any lab is used as it is."""
    recorded = {v.name: v for v in state.veths}
    with shared.open_registry() as registry:
        for parent in needs.nic_parents:
            known = registry.get(shared.veth_key(parent))
            peer = known.peer if known else recorded[parent].peer if parent in recorded else None
            if peer is None and netdev.exists(parent):
                continue
            if not netdev.exists(parent):
                say(f"creating veth {parent} as a macvlan parent")
                made = netdev.create_veth(parent)
                if made is None:
                    continue
                peer = made.peer
            elif parent not in recorded:
                say(f"using veth {parent}, which another lab made")
            registry.claim(shared.veth(parent, peer or ""), state.dir)
            if parent not in recorded:
                veth = Veth(name=parent, peer=peer or "")
                state = state.model_copy(update={"veths": (*state.veths, veth)})
                save_lab(state)
    return state


def _ensure_idmap(state: LabState, needs: LabNeeds, say: Progress) -> tuple[LabState, bool]:
    """Delegate to root the ids the fleet maps; this lab counted as a user of every delegation
    line a lab added that serves it. True when the lab uses lines its daemons may not have
    read yet."""
    grew = False
    with shared.open_registry() as registry:
        for path, ids, field in (
            (idmap.SUBUID, needs.uids, "subuid_lines"),
            (idmap.SUBGID, needs.gids, "subgid_lines"),
        ):
            recorded: tuple[str, ...] = getattr(state, field)
            added = idmap.add_lines(path, ids)
            if added:
                say(f"added to {path}: {', '.join(added)}")
            reused = tuple(
                r.name
                for r in registry.of_kind("subid", path)
                if r.name not in added and idmap.serves(r.name, ids)
            )
            new = tuple(line for line in (*added, *reused) if line not in recorded)
            if set(new) - set(added):
                lines = ", ".join(line for line in new if line not in added)
                say(f"using in {path}, added by another lab: {lines}")
            for line in (*recorded, *new):
                registry.claim(shared.subid_line(path, line), state.dir)
            state = state.model_copy(update={field: (*recorded, *new)})
            save_lab(state)
            grew = grew or bool(new)
    return state, grew


def _release_machine_changes(state: LabState, say: Progress) -> LabState:
    """Remove the veths and delegation lines this lab used that no other lab still uses."""
    lab = state.dir
    with shared.open_registry() as registry:
        # What the lab recorded counts even when the registry lost it (removed by hand).
        for recorded in state.veths:
            registry.claim(shared.veth(recorded.name, recorded.peer), lab)
        for path, lines in ((idmap.SUBUID, state.subuid_lines), (idmap.SUBGID, state.subgid_lines)):
            for line in lines:
                registry.claim(shared.subid_line(path, line), lab)
        release = registry.release(lab, alive=shared.lab_alive)
        for resource, users in release.keep:
            say(f"leaving {resource} for {shared.users_text(users)}")
        removed_lines: dict[str, list[str]] = {}
        for resource in release.remove:
            if resource.kind == "veth":
                say(f"deleting veth {resource.name}")
                netdev.delete_veth(Veth(name=resource.name, peer=resource.peer))
            else:
                removed_lines.setdefault(resource.file, []).append(resource.name)
        for file, gone in sorted(removed_lines.items()):
            say(f"removing from {file}: {', '.join(gone)}")
            idmap.remove_lines(Path(file), gone)
    state = state.model_copy(update={"veths": (), "subuid_lines": (), "subgid_lines": ()})
    save_lab(state)
    return state


def _under(root: Path, host_path: str) -> Path:
    return root / host_path.lstrip("/")


def _make_host_tree(root: Path, needs: LabNeeds) -> None:
    """Host directories for disk devices, CUDA trees and homes, inside the lab."""
    _mkdirs(root)
    for path in needs.host_dirs:
        _mkdirs(_under(root, path))
    for home in needs.homes:
        directory = _under(root, home.path)
        _mkdirs(directory)
        os.chown(directory, home.uid, home.gid)


def _new_host(state: LabState, name: str) -> HostLab:
    lxd_dir = _lxd_dir(Path(state.dir), name)
    port = daemon.free_port(h.port for h in state.hosts.values())
    return HostLab(
        name=name,
        lxd_dir=str(lxd_dir),
        port=port,
        endpoint=f"https://127.0.0.1:{port}",
        server_cert=str(lxd_dir / "server.crt"),
    )


def _with_host(state: LabState, host: HostLab) -> LabState:
    state = state.model_copy(update={"hosts": {**state.hosts, host.name: host}})
    save_lab(state)
    return state


def _ensure_host(
    state: LabState, name: str, tarballs: Mapping[str, Path], *, restart: bool, say: Progress
) -> LabState:
    """Start, restart or reuse ``name``'s daemon, then trust the tool and import the stand-in
    image of each alias (``tarballs``: alias -> tarball)."""
    host = state.hosts.get(name) or _new_host(state, name)
    if daemon.running(host) and not restart:
        say(f"{name}: reusing LXD (pid {host.pid}) at {host.endpoint}")
    else:
        if daemon.running(host):
            say(f"{name}: restarting LXD so it reads the new id delegations")
            daemon.stop(host)
        _mkdirs(Path(host.lxd_dir), 0o711)
        say(f"{name}: starting LXD at {host.endpoint}")
        host = daemon.start(host)
        state = _with_host(state, host)
    if not host.initialised:
        daemon.initialise(host)
        host = host.model_copy(update={"initialised": True})
        state = _with_host(state, host)
    daemon.check_listening(host)
    daemon.trust(host, Path(state.client_cert))
    added = import_images(LxdSocket(host.socket), tarballs)
    if added:
        say(f"{name}: imported a busybox stand-in image for each of {', '.join(added)}")
        host = host.model_copy(update={"images": (*host.images, *added)})
    return _with_host(state, host)


def _write_lxc_config(state: LabState) -> None:
    write_lxc_config(
        Path(state.lxc_conf),
        {name: host.endpoint for name, host in state.hosts.items()},
        {name: Path(host.server_cert) for name, host in state.hosts.items()},
    )


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError as exc:
        if path.exists() and any(path.iterdir()):
            raise LabError(f"{path} still holds files the lab did not make; left it") from exc
