"""Bring the local lab up and down, and tell an admin how to reach one of its hosts.

Does I/O throughout: installs packages, starts LXD daemons, creates veths, edits
``/etc/subuid`` and ``/etc/subgid``, writes under the lab directory. Every step is recorded in
``<lab>/lab.json`` as soon as it is done, so ``lab up`` can be re-run and ``lab down`` removes
exactly what the lab made, even after an interrupted ``lab up``.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lxdgpu_reconcile.lab import daemon, idmap, netdev
from lxdgpu_reconcile.lab.certs import ensure_client_cert, write_lxc_config
from lxdgpu_reconcile.lab.errors import LabError
from lxdgpu_reconcile.lab.image import build_image, import_image
from lxdgpu_reconcile.lab.needs import LabNeeds, needs_of
from lxdgpu_reconcile.lab.sock import LxdSocket
from lxdgpu_reconcile.lab.state import (
    STATE_FILE,
    HostLab,
    LabState,
    load_lab,
    save_lab,
    state_path,
)
from lxdgpu_reconcile.lab.system import ensure_packages, require_root, unmount_under
from lxdgpu_reconcile.spec.models import Fleet

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
        state = _load_or_new(lab_dir)
        save_lab(state)
        state = _ensure_veths(state, needs, say)
        state, delegated = _ensure_idmap(state, needs, say)
        _make_host_tree(Path(state.host_root), needs)
        tarball = build_image(lab_dir / "image")
        for name in needs.hosts:
            state = _ensure_host(state, name, needs, tarball, restart=delegated, say=say)
        _write_lxc_config(state)
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
        state = _undo_machine_changes(state, say)
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
        directory.mkdir(exist_ok=True)
        directory.chmod(mode)


@contextmanager
def _locked(lab_dir: Path) -> Iterator[None]:
    with (lab_dir / LOCK_FILE).open("a") as handle:
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
    ours = {v.name for v in state.veths}
    for parent in needs.nic_parents:
        if parent in ours or netdev.exists(parent):
            continue
        say(f"creating veth {parent} as a macvlan parent")
        veth = netdev.create_veth(parent)
        if veth is not None:
            state = state.model_copy(update={"veths": (*state.veths, veth)})
            save_lab(state)
    return state


def _ensure_idmap(state: LabState, needs: LabNeeds, say: Progress) -> tuple[LabState, bool]:
    uid_lines = idmap.add_lines(idmap.SUBUID, needs.uids)
    state = state.model_copy(update={"subuid_lines": (*state.subuid_lines, *uid_lines)})
    save_lab(state)
    gid_lines = idmap.add_lines(idmap.SUBGID, needs.gids)
    state = state.model_copy(update={"subgid_lines": (*state.subgid_lines, *gid_lines)})
    save_lab(state)
    for path, lines in ((idmap.SUBUID, uid_lines), (idmap.SUBGID, gid_lines)):
        if lines:
            say(f"added to {path}: {', '.join(lines)}")
    return state, bool(uid_lines or gid_lines)


def _undo_machine_changes(state: LabState, say: Progress) -> LabState:
    for veth in state.veths:
        say(f"deleting veth {veth.name}")
        netdev.delete_veth(veth)
    state = state.model_copy(update={"veths": ()})
    save_lab(state)
    for path, lines in ((idmap.SUBUID, state.subuid_lines), (idmap.SUBGID, state.subgid_lines)):
        if lines:
            say(f"removing from {path}: {', '.join(lines)}")
            idmap.remove_lines(path, lines)
    state = state.model_copy(update={"subuid_lines": (), "subgid_lines": ()})
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
    state: LabState, name: str, needs: LabNeeds, tarball: Path, *, restart: bool, say: Progress
) -> LabState:
    """Start, restart or reuse ``name``'s daemon, then trust the tool and import the image."""
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
    added = import_image(LxdSocket(host.socket), tarball, needs.image_aliases)
    if added:
        say(f"{name}: imported the busybox image as {', '.join(added)}")
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
