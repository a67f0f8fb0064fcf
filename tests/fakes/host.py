"""``FakeHost``: a host's own system in memory, as a ``HostShell``. No I/O.

It holds what the host layer reads and changes (accounts, groups, directories and files,
/etc/subuid and /etc/subgid, the tool's ledger, network interfaces, ``nvidia-smi -L``) and
understands exactly the argument vectors ``execute.host_actions`` sends, refusing what the real
commands refuse (``useradd`` without its group, a taken name or uid, ``groupadd`` of a taken gid,
``mkdir`` over a file, ``usermod --del-subuids`` of root, who always has running processes).
Anything else exits 127. ``facts`` gives the ``state.HostFacts`` the facts reader
(``observe.host_facts``) would read for a fleet; ``from_facts`` builds a host from such facts.
``fail`` injects a failure of a program; ``commands`` records every argv run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile import state
from lxdgpu_reconcile.execute import host_actions
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.host_facts import FactsQuery
from lxdgpu_reconcile.observe.hostshell import CommandResult

_STANDARD_DIRS = ("/", "/home", "/etc", "/etc/skel", "/var", "/var/lib")


@dataclass
class Account:
    name: str
    uid: int
    gid: int
    home: str = ""
    shell: str = "/bin/sh"
    locked: bool = False


@dataclass
class Node:
    kind: str  # "directory" or "regular file"
    uid: int = 0
    gid: int = 0
    mode: int = 0o755


@dataclass
class FakeHost:
    """One host's own system; ``via`` as a real shell's."""

    name: str = "h1"
    #: The fleet host this system belongs to when it is a cluster member's (``name`` is then
    #: the member's); "" for a single server (``name`` is the host).
    host: str = ""
    accounts: dict[str, Account] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    subuid: list[tuple[str, int, int]] = field(default_factory=list)
    subgid: list[tuple[str, int, int]] = field(default_factory=list)
    ledger: list[str] = field(default_factory=list)
    nics: set[str] = field(default_factory=set)
    nvidia: tuple[str, ...] | None = None
    commands: list[tuple[str, ...]] = field(default_factory=list)
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.via = f"fake {self.name}"
        self._lock = threading.Lock()
        for path in _STANDARD_DIRS:
            self.nodes.setdefault(path, Node("directory"))

    # --- test controls -------------------------------------------------------------------------

    def fail(self, program: str, message: str, returncode: int = 1) -> None:
        """Make every later run of ``program`` (of a ``sh -c`` script: its ``$0``) fail with
        ``message`` on stderr."""
        self.failures[program] = (returncode, message)

    @classmethod
    def from_facts(cls, name: str, facts: state.HostFacts, *, host_of: str = "") -> FakeHost:
        """A host whose system is what ``facts`` says (what they do not say is absent);
        ``host_of``: the fleet host of a cluster member named ``name``."""
        host = cls(name=name, host=host_of, nvidia=facts.nvidia)
        for account in facts.accounts:
            host.accounts[account.name] = Account(
                account.name, account.uid, account.gid, account.home, account.shell
            )
        for group in facts.groups:
            host.groups[group.name] = group.gid
        for path, obs in facts.paths.items():
            if obs.exists:
                host.nodes[path] = Node(
                    obs.kind or "directory", obs.uid or 0, obs.gid or 0, int(obs.mode or "0", 8)
                )
            else:
                host.nodes.pop(path, None)
        host.subuid = [(line.owner, line.start, line.count) for line in facts.subuid]
        host.subgid = [(line.owner, line.start, line.count) for line in facts.subgid]
        host.ledger = list(facts.delegated)
        host.nics = {nic for nic, present in facts.nics.items() if present}
        return host

    def facts(self, fleet: Fleet, site: sites.Site) -> state.HostFacts:
        """What the facts reader reads of this host for ``fleet`` on ``site``."""
        query = FactsQuery.of(fleet, site, self.host or self.name)
        with self._lock:
            accounts = {}
            groups = {}
            for user in query.users:
                for account in self.accounts.values():
                    if account.name == user.name or account.uid == user.uid:
                        accounts[account.name] = state.AccountObs(
                            name=account.name,
                            uid=account.uid,
                            gid=account.gid,
                            home=account.home,
                            shell=account.shell,
                        )
                for group, gid in self.groups.items():
                    if group == user.name or gid == user.gid:
                        groups[group] = state.GroupObs(name=group, gid=gid)
            paths = {path: self._path(path) for path in query.paths}
            return state.HostFacts(
                via=self.via,
                accounts=tuple(accounts.values()),
                groups=tuple(groups.values()),
                paths=paths,
                subuid=tuple(state.SubId(owner=o, start=s, count=c) for o, s, c in self.subuid),
                subgid=tuple(state.SubId(owner=o, start=s, count=c) for o, s, c in self.subgid),
                delegated=tuple(dict.fromkeys(self.ledger)),
                nics={nic: nic in self.nics for nic in query.nics},
                nvidia=self.nvidia,
            )

    def delegated(self, file: str) -> Set[int]:
        """The ids root may map (a live view), for ``FakeLxd``'s idmap check."""
        return _Delegated(self, file)

    # --- the shell -----------------------------------------------------------------------------

    def run(
        self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60.0
    ) -> CommandResult:
        args = tuple(argv)
        with self._lock:
            self.commands.append(args)
            script = args[:2] == ("sh", "-c") and len(args) > 3
            failure = self.failures.get(args[3] if script else args[0] if args else "")
            if failure is not None:
                return CommandResult(args, failure[0], b"", failure[1].encode())
            code, out, err = self._run(list(args))
        return CommandResult(args, code, out.encode(), err.encode())

    def _run(self, a: list[str]) -> tuple[int, str, str]:
        match a:
            case ["getent", "group", key]:
                for group, gid in self.groups.items():
                    if key in (group, str(gid)):
                        return 0, f"{group}:x:{gid}:\n", ""
                return 2, "", ""
            case ["groupadd", "-g", gid, name]:
                if int(gid) in self.groups.values():
                    return 4, "", f"groupadd: GID '{gid}' already exists"
                if name in self.groups:
                    return 9, "", f"groupadd: group '{name}' already exists"
                self.groups[name] = int(gid)
                return 0, "", ""
            case ["useradd", "-u", uid, "-g", gid, "-d", home, "-s", shell, *rest, name]:
                return self._useradd(int(uid), int(gid), home, shell, rest, name)
            case ["usermod", "-L", name]:
                if name not in self.accounts:
                    return 6, "", f"usermod: user '{name}' does not exist"
                self.accounts[name].locked = True
                return 0, "", ""
            case ["usermod", option, ids, "root"] if option.startswith("--add-sub"):
                return self._subids(option, ids)
            case ["usermod", option, _, "root"] if option.startswith("--del-sub"):
                # shadow's usermod refuses this for a user with running processes: root has some
                return 8, "", "usermod: user root is currently used by process 1"
            case ["sh", "-c", host_actions.SUBID_DROP, host_actions.SUBID_NAME, path, ident]:
                return self._subid_drop(path, ident)
            case ["mkdir", "-p", "--", path]:
                for parent in _parents(path):
                    node = self.nodes.get(parent)
                    if node is not None and node.kind != "directory":
                        return 1, "", f"mkdir: cannot create directory '{path}': File exists"
                    self.nodes.setdefault(parent, Node("directory"))
                return 0, "", ""
            case ["stat", "-c", "%F", "--", path]:
                node = self.nodes.get(path)
                if node is None:
                    return 1, "", f"stat: cannot statx '{path}': No such file or directory"
                return 0, node.kind + "\n", ""
            case ["chown", "-h", "--", owner, path]:
                uid, _, gid = owner.partition(":")
                if path not in self.nodes:
                    return 1, "", f"chown: cannot access '{path}': No such file or directory"
                self.nodes[path].uid, self.nodes[path].gid = int(uid), int(gid)
                return 0, "", ""
            case ["chmod", "--", mode, path]:
                if path not in self.nodes:
                    return 1, "", f"chmod: cannot access '{path}': No such file or directory"
                self.nodes[path].mode = int(mode, 8)
                return 0, "", ""
            case ["sh", "-c", script, host_actions.LEDGER_NAME, _, line]:
                return self._ledger(script, line)
        return 127, "", f"fake host: unknown command {a!r}"

    def _useradd(
        self, uid: int, gid: int, home: str, shell: str, rest: list[str], name: str
    ) -> tuple[int, str, str]:
        if gid not in self.groups.values():
            return 6, "", f"useradd: group '{gid}' does not exist"
        if name in self.accounts:
            return 9, "", f"useradd: user '{name}' already exists"
        if any(account.uid == uid for account in self.accounts.values()):
            return 4, "", f"useradd: UID {uid} is not unique"
        if rest not in (["-m", "-k", "/etc/skel"], ["-M"]):
            return 2, "", f"useradd: unexpected options {rest}"
        if rest[0] == "-m":
            if home in self.nodes:
                return 12, "", f"useradd: home directory {home} exists"
            self.nodes[home] = Node("directory", uid, gid, 0o755)
        self.accounts[name] = Account(name, uid, gid, home, shell)
        return 0, "", ""

    def _subids(self, option: str, ids: str) -> tuple[int, str, str]:
        first, _, last = ids.partition("-")
        if first != last:
            return 2, "", "fake host: one id at a time"
        ident = int(first)
        lines = self.subuid if "subuid" in option else self.subgid
        if not any(o == "root" and s <= ident < s + c for o, s, c in lines):
            lines.append(("root", ident, 1))
        return 0, "", ""

    def _subid_drop(self, path: str, ident: str) -> tuple[int, str, str]:
        """``host_actions.SUBID_DROP``: the first line ``root:ID:1`` of the file goes."""
        files = {"/etc/subuid": self.subuid, "/etc/subgid": self.subgid}
        if path not in files or not ident.isdigit():
            return 2, "", f"refusing to edit {path}"
        lines = files[path]
        if ("root", int(ident), 1) not in lines:
            return host_actions.SUBID_ABSENT, "", ""
        lines.remove(("root", int(ident), 1))
        return 0, "", ""

    def _ledger(self, script: str, line: str) -> tuple[int, str, str]:
        if script == host_actions.LEDGER_ADD:
            if line not in self.ledger:
                self.ledger.append(line)
            return 0, "", ""
        if script == host_actions.LEDGER_HAS:
            return (0 if line in self.ledger else 1), "", ""
        if script == host_actions.LEDGER_DROP:
            self.ledger = [entry for entry in self.ledger if entry != line]
            return 0, "", ""
        return 127, "", "fake host: unknown script"

    def _path(self, path: str) -> state.PathObs:
        node = self.nodes.get(path)
        if node is None:
            return state.PathObs(path=path, exists=False)
        return state.PathObs(
            path=path,
            exists=True,
            kind=node.kind,
            uid=node.uid,
            gid=node.gid,
            mode=f"{node.mode:o}",
        )


class _Delegated(Set[int]):
    """The ids root may map in one of a ``FakeHost``'s files, as they are now."""

    def __init__(self, host: FakeHost, file: str) -> None:
        self.host, self.file = host, file

    def _lines(self) -> list[tuple[str, int, int]]:
        return self.host.subuid if self.file == "subuid" else self.host.subgid

    def __contains__(self, ident: object) -> bool:
        return isinstance(ident, int) and any(
            o == "root" and s <= ident < s + c for o, s, c in self._lines()
        )

    def __iter__(self) -> Iterator[int]:
        for owner, start, count in self._lines():
            if owner == "root":
                yield from range(start, start + count)

    def __len__(self) -> int:
        return sum(c for o, _, c in self._lines() if o == "root")


def _parents(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
