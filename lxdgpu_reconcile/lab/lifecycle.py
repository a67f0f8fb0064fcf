"""Bring the local lab up and down, and tell an admin how to reach one of its hosts.

Does I/O throughout: installs packages, starts LXD daemons and sshds, creates veths, writes
under the lab directory. Each lab host has a system of its own (a copy of this machine's /etc
and a /home of its own, ``lab.hostsys``) that its daemon and its sshd (``lab.hostssh``) see in a
mount namespace of their own; this machine's /etc is never written. Accounts, homes and id
delegations are the tool's apply's to make, over SSH, as on real hosts. Every step is recorded
in ``<lab>/lab.json`` as soon as it is done, so ``lab up`` can be re-run and ``lab down`` removes
exactly what the lab made, even after an interrupted ``lab up``. Veths (and the delegation lines
that labs made in this machine's /etc before hosts had systems of their own) are shared with the
other labs on the machine and counted in ``lab.shared``'s registry: the last lab that uses one
removes it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.lab import cluster, daemon, hostssh, hostsys, idmap, netdev, shared
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
# "credentials": the first passwords apply set in the lab's containers (execute.credentials).
MADE = ("hosts", "sys", "ssh", "root", "lxc", "image", STATE_FILE, "lab.tmp", "credentials")
#: What a lab directory's path may hold: it is written into sshd and ssh configuration files.
_SAFE_DIR = re.compile(r"^/[A-Za-z0-9._+/-]*$")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def lab_up(fleet: Fleet, lab_dir: Path, *, progress: Progress | None = None) -> LabState:
    """Start (or reuse) one LXD daemon per fleet host in ``lab_dir`` and prepare the machine."""
    say = progress or _quiet
    lab_dir = Path(os.path.abspath(lab_dir))
    needs = needs_of(fleet)
    require_root()
    check_lab_dir(lab_dir, needs.daemons)
    ensure_packages(say)
    _mkdirs(lab_dir)
    with _locked(lab_dir):
        try:
            state = _load_or_new(lab_dir)
            save_lab(state)
            state = _ensure_veths(state, needs, say)
            _make_host_tree(Path(state.host_root), needs)
            tarballs = build_images(lab_dir / "image", needs.image_aliases)
            state = _ensure_ssh_key(state)
            for name in needs.hosts:
                if name in needs.clusters:
                    state = _ensure_cluster(state, name, needs.clusters[name], tarballs, say=say)
                else:
                    state = _ensure_host(state, name, tarballs, say=say)
            _write_lxc_config(state)
            _write_ssh_config(state)
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
        # Last first: a cluster's other members leave before the one that bootstrapped it.
        for host in reversed(state.hosts.values()):
            _stop_host(host, say)
        state = state.model_copy(
            update={
                "hosts": {
                    n: h.model_copy(update={"pid": None, "sshd_pid": None})
                    for n, h in state.hosts.items()
                }
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
    if lab.ssh_port is not None and state.ssh_config is not None:
        lines.append(
            f"# ssh: ssh -F {shlex.quote(state.ssh_config)} {lab.ssh_alias or host} "
            f"(sshd on 127.0.0.1:{lab.ssh_port}); or: lxdgpu-reconcile lab exec {host} -- CMD"
        )
    if not daemon.running(lab):
        lines.append(f"# {host}'s lab daemon is not running: run `lxdgpu-reconcile lab up` again")
    return "\n".join(lines) + "\n"


def lab_exec(lab_dir: Path, host: str, command: Sequence[str]) -> int:
    """Run ``command`` on lab host ``host``: in its daemon's mount namespace (the host's own
    /etc and /home), with ``LXD_DIR`` set to its daemon; standard streams are this process's.
    Returns the command's exit status (128 + N when killed by signal N)."""
    if not command:
        raise LabError("no command given; e.g. `lxdgpu-reconcile lab exec HOST -- getent passwd`")
    state = load_lab(Path(os.path.abspath(lab_dir)))
    lab = state.host(host)
    require_root()
    if not daemon.in_own_system(lab) or lab.pid is None:
        raise LabError(
            f"{host}'s lab daemon is not running in a system of its own; "
            f"run `lxdgpu-reconcile lab up -f FLEET --dir {state.dir}` again"
        )
    try:
        done = subprocess.run(
            hostsys.enter_argv(lab.pid, command),
            env={**os.environ, "LXD_DIR": lab.lxd_dir},
            check=False,
        )
    except OSError as exc:
        raise LabError(f"cannot run nsenter: {exc}; install util-linux") from None
    return done.returncode if done.returncode >= 0 else 128 - done.returncode


def check_lab_dir(lab_dir: Path, hosts: tuple[str, ...]) -> None:
    """Refuse directories that would break LXD or sshd, or that hold something else."""
    if not _SAFE_DIR.match(str(lab_dir)):
        raise LabError(
            f"{lab_dir} has characters the lab cannot write into its sshd and ssh "
            "configuration; choose a --dir of letters, digits and . _ + - /, e.g. /var/tmp/lab"
        )
    for own in (hostsys.MACHINE_ETC, Path("/home"), hostsys.TOOL_STATE):
        if lab_dir == own or (lab_dir.is_relative_to(own) and own != hostsys.TOOL_STATE):
            raise LabError(
                f"{lab_dir} is {own} or below it, which each lab host has one of its own of; "
                "choose another --dir, e.g. /var/tmp/lab"
            )
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
    """Host directories for disk devices and CUDA trees, inside the lab, shared by its hosts.
    Homes are not made here: each host has a /home of its own, where the tool's apply makes
    them."""
    _mkdirs(root)
    for path in needs.host_dirs:
        _mkdirs(_under(root, path))


def _taken_ports(state: LabState) -> set[int]:
    return {p for h in state.hosts.values() for p in (h.port, h.ssh_port) if p is not None}


def _new_host(state: LabState, name: str) -> HostLab:
    lxd_dir = _lxd_dir(Path(state.dir), name)
    port = daemon.free_port(_taken_ports(state))
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


def _ensure_cluster(
    state: LabState,
    name: str,
    members: tuple[str, ...],
    tarballs: Mapping[str, Path],
    *,
    say: Progress,
) -> LabState:
    """Start, restart or reuse each member of cluster ``name`` as a lab host of its own (the
    first bootstraps the cluster, the others join it), then wait until all are online."""
    state = cluster.add_members(state, name, members, taken=_taken_ports(state))
    for key in state.clusters[name]:
        init = cluster.initialiser(state, name, key)
        state = _ensure_host(state, key, tarballs, say=say, init=init)
    cluster.wait_online(state, name, say=say)
    return state


def _ensure_host(
    state: LabState,
    name: str,
    tarballs: Mapping[str, Path],
    *,
    say: Progress,
    init: Callable[[HostLab], None] = daemon.initialise,
) -> LabState:
    """Make ``name``'s own system, start, restart or reuse its daemon in it (``init``
    configures a fresh one), trust the tool, import the stand-in image of each alias
    (``tarballs``: alias -> tarball), then start or reuse its sshd. A cluster's trust store
    and images are shared: its later members find them there."""
    host = state.hosts.get(name) or _new_host(state, name)
    system = Path(state.dir) / "sys" / name
    _mkdirs(system)
    if hostsys.make_system(system):
        say(f"{name}: copied /etc to {system / 'etc'} (the host's own /etc)")
    host = host.model_copy(update={"system": str(system)})
    state = _with_host(state, host)
    if daemon.in_own_system(host):
        say(f"{name}: reusing LXD (pid {host.pid}) at {host.endpoint}")
    else:
        if daemon.running(host):
            say(f"{name}: restarting LXD in a namespace of its own, with the host's own /etc")
        _stop_host(host, say=_quiet)
        _mkdirs(Path(host.lxd_dir), 0o711)
        say(f"{name}: starting LXD at {host.endpoint}")
        host = daemon.start(host)
        state = _with_host(state, host)
    if not host.initialised:
        init(host)
        host = host.model_copy(update={"initialised": True})
        state = _with_host(state, host)
    daemon.check_listening(host)
    daemon.trust(host, Path(state.client_cert))
    added = import_images(LxdSocket(host.socket), tarballs)
    if added:
        say(f"{name}: imported a busybox stand-in image for each of {', '.join(added)}")
        host = host.model_copy(update={"images": (*host.images, *added)})
    state = _with_host(state, host)
    return _with_host(state, _ensure_sshd(state, host, say))


def _sshd_files(host: HostLab) -> hostssh.SshdFiles:
    return hostssh.SshdFiles(Path(host.system or host.lxd_dir) / "sshd")


def _ensure_sshd(state: LabState, host: HostLab, say: Progress) -> HostLab:
    """Start (or reuse) ``host``'s sshd in its daemon's namespace."""
    system, daemon_pid, key = host.system, host.pid, state.ssh_key
    if system is None or daemon_pid is None or key is None:
        raise LabError(f"{host.name}: its lab daemon is not up; run `lxdgpu-reconcile lab up`")
    port = host.ssh_port or daemon.free_port(_taken_ports(state))
    alias = hostssh.alias_of(f"{host.cluster}-{host.member}" if host.cluster else host.name)
    host = host.model_copy(update={"ssh_port": port, "ssh_alias": alias})
    _with_host(state, host)
    files = _sshd_files(host)
    client_key = Path(key).with_name(Path(key).name + ".pub").read_text().strip()
    changed = hostssh.write_files(files, port=port, lxd_dir=host.lxd_dir, client_key=client_key)
    if not changed and hostssh.running(host.sshd_pid, files, daemon_pid):
        say(f"{host.name}: reusing sshd (pid {host.sshd_pid}) on 127.0.0.1:{port}")
        return host
    hostssh.stop(host.sshd_pid, files)
    say(f"{host.name}: starting sshd on 127.0.0.1:{port} in the host's namespace")
    pid = hostssh.start(
        files, port=port, daemon_pid=daemon_pid, system=Path(system), name=host.name
    )
    return host.model_copy(update={"sshd_pid": pid})


def _stop_host(host: HostLab, say: Progress) -> None:
    """Stop ``host``'s sshd, its daemon (and its containers), and every other process left in
    its namespace; this machine's own namespace is never touched."""
    files = _sshd_files(host)
    sshd_pid = host.sshd_pid if hostssh.is_sshd_of(host.sshd_pid, files) else None
    daemon_pid = host.pid if daemon.running(host) else None
    with hostsys.holding((daemon_pid, sshd_pid)) as namespaces:
        if sshd_pid is not None:
            say(f"{host.name}: stopping sshd (pid {sshd_pid})")
        hostssh.stop(host.sshd_pid, files)
        if daemon_pid is not None:
            say(f"{host.name}: stopping LXD (pid {daemon_pid})")
        daemon.stop(host)
        for namespace in namespaces:
            hostsys.end_namespace(namespace)


def _ensure_ssh_key(state: LabState) -> LabState:
    """The key the lab's ssh client configuration logs in to every lab host with."""
    ssh_dir = Path(state.dir) / "ssh"
    _mkdirs(ssh_dir, 0o700)
    key = ssh_dir / "id_ed25519"
    hostssh.ensure_key(key, "lxdgpu-reconcile lab client")
    state = state.model_copy(update={"ssh_key": str(key), "ssh_config": str(ssh_dir / "config")})
    save_lab(state)
    return state


def _write_ssh_config(state: LabState) -> None:
    """``<lab>/ssh/config`` and ``<lab>/ssh/known_hosts`` for every lab host with an sshd."""
    if state.ssh_config is None or state.ssh_key is None:
        return
    entries = [
        hostssh.ClientEntry(
            alias=host.ssh_alias or hostssh.alias_of(host.name),
            port=host.ssh_port,
            host_key=_sshd_files(host).host_key.with_suffix(".pub").read_text(),
        )
        for host in state.hosts.values()
        if host.ssh_port is not None and host.system is not None
    ]
    known = Path(state.ssh_config).with_name("known_hosts")
    fileio.write_atomic(known, hostssh.known_hosts(entries))
    fileio.write_atomic(
        Path(state.ssh_config),
        hostssh.client_config(entries, identity=Path(state.ssh_key), known_hosts=known),
    )


def _write_lxc_config(state: LabState) -> None:
    """A remote per lab host; a cluster is one remote (its first member)."""
    remotes = {n: h for n, h in state.hosts.items() if h.cluster is None}
    remotes.update({name: state.host(name) for name in state.clusters})
    write_lxc_config(
        Path(state.lxc_conf),
        {name: host.endpoint for name, host in remotes.items()},
        {name: Path(host.server_cert) for name, host in remotes.items()},
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
