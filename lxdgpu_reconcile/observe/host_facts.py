"""A host's own facts (accounts, homes, paths, delegations, NICs, NVIDIA): what to ask, the one
fixed read-only script that asks it, and its answer as ``state.HostFacts``.

``FactsQuery.of`` (pure) says what to ask a host, from the fleet file: the users whose
containers live there (names, uids, gids), every path the host must have (the users' homes, the
trees of the CUDA versions they use, the disk sources of the profiles their containers use,
moved onto the site with ``site.host_path``) and the parents of the macvlan/ipvlan NICs of
those profiles.

``SCRIPT`` is the one script that reads them, run once per host (one round trip) as::

    sh -c SCRIPT lxdgpu-facts NUSERS NAME UID GID ... NPATHS PATH ... LEDGER NIC ...

The fleet's values travel only as positional arguments: they never become script text. The
script reads only (``getent``, ``stat``, ``cat``-like reads, ``test``, ``nvidia-smi -L`` when
installed) and runs under any POSIX ``sh`` (dash). Its output is one record per line, tagged;
paths and NICs are named by their index in the query, never echoed, so that no value can
break a line::

    V 1                             the format
    A tom:x:1003:1003:,,,:/home/tom:/usr/sbin/nologin     getent passwd (by name, by uid)
    G tom:x:1003:                   getent group (by gid, by name)
    P 0 1003 1003 750 directory     stat -L of path 0: uid, gid, mode, kind
    P 1 -                           path 1 does not exist
    SU root:100000:65536            a line of /etc/subuid (SG: /etc/subgid)
    L subuid:1003                   a line of the tool's ledger
    N 0 1                           NIC 0 exists (0: it does not)
    GPU                             nvidia-smi is installed; its -L lines follow as
    GL GPU 0: ... (UUID: GPU-...)
    E                               the end: the answer is whole

``parse_facts`` (pure) turns that output into ``HostFacts``; ``read_facts`` runs the script
through a ``HostShell`` and never raises: a host that cannot be reached, or an answer that
cannot be read, is ``HostFacts(error=...)`` saying what to do.
"""

from __future__ import annotations

from collections.abc import Iterable

from lxdgpu_reconcile import site as sites
from lxdgpu_reconcile.fleet import host_needs
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.hostshell import HostShell, HostShellError
from lxdgpu_reconcile.state import (
    AccountObs,
    Frozen,
    GroupObs,
    HostError,
    HostErrorKind,
    HostFacts,
    PathObs,
    SubId,
)

#: Where the tool keeps, on each host, the delegations it added itself (one line each, such as
#: ``subuid:1003``): the only ones it may remove. Beside /etc/subuid and /etc/subgid, which it
#: annotates, so that a restored /etc restores both together.
LEDGER_DIR = "/etc/lxdgpu-reconcile"
LEDGER = LEDGER_DIR + "/delegations"
#: ``$0`` of the script, as ``ps`` shows it on the host.
SCRIPT_NAME = "lxdgpu-facts"
#: Seconds the script may take on one host.
DEFAULT_TIMEOUT = 30.0

#: The one script that reads a host's facts. Read-only; arguments as in the module docstring.
SCRIPT = r"""
LC_ALL=C; export LC_ALL
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH
tag() { while IFS= read -r line || [ -n "$line" ]; do printf '%s %s\n' "$1" "$line"; done; }
echo 'V 1'
n=$1; shift
while [ "$n" -gt 0 ]; do
  getent passwd "$1" | tag A
  getent passwd "$2" | tag A
  getent group "$3" | tag G
  getent group "$1" | tag G
  shift 3; n=$((n - 1))
done
n=$1; shift; i=0
while [ "$i" -lt "$n" ]; do
  if found=$(stat -L -c '%u %g %a %F' -- "$1" 2>/dev/null); then
    printf 'P %s %s\n' "$i" "$found"
  else
    printf 'P %s -\n' "$i"
  fi
  shift; i=$((i + 1))
done
if [ -r /etc/subuid ]; then tag SU < /etc/subuid; fi
if [ -r /etc/subgid ]; then tag SG < /etc/subgid; fi
if [ -r "$1" ]; then tag L < "$1"; fi
shift; i=0
for nic in "$@"; do
  case $nic in
    ''|.|..|*/*) printf 'N %s 0\n' "$i" ;;
    *) if [ -e "/sys/class/net/$nic" ]; then found=1; else found=0; fi
       printf 'N %s %s\n' "$i" "$found" ;;
  esac
  i=$((i + 1))
done
if command -v nvidia-smi >/dev/null 2>&1; then
  echo GPU
  if command -v timeout >/dev/null 2>&1; then
    timeout 20 nvidia-smi -L 2>/dev/null | tag GL
  else
    nvidia-smi -L 2>/dev/null | tag GL
  fi
fi
echo E
"""


class UserQuery(Frozen):
    """A fleet user whose account, group and delegations a host is asked about."""

    name: str
    uid: int
    gid: int


class FactsQuery(Frozen):
    """What to ask one host about its own system (pure data, from the fleet file)."""

    host: str
    #: On a cluster host: the member asked (its users are the whole cluster's, as placement is
    #: not known while the facts are read); "" for a single server.
    member: str = ""
    users: tuple[UserQuery, ...] = ()
    #: Every host path to stat (homes, CUDA trees, disk sources), on the site, without repeats.
    paths: tuple[str, ...] = ()
    #: Of ``paths``, the users' homes.
    homes: tuple[str, ...] = ()
    #: Parents of the macvlan/ipvlan NIC devices of the profiles the host's containers use.
    nics: tuple[str, ...] = ()
    ledger: str = LEDGER

    @classmethod
    def of(cls, fleet: Fleet, site: sites.Site, host: str) -> FactsQuery:
        """What ``host`` is asked: about the users whose containers live there, their homes,
        the CUDA trees and disk sources of the profiles they use, and those profiles' NIC
        parents."""
        users = tuple(fleet.users_on(host))
        homes = [site.home_dir(host_needs.home_source(fleet.defaults, user)) for user in users]
        sources: list[str] = []
        nics: list[str] = []
        for name in host_needs.profiles_on(fleet, host, users, whole_host=True):
            profile = fleet.profiles.get(name)
            for device in profile.devices.values() if profile is not None else ():
                source = host_needs.disk_source(device)
                if source is not None:
                    sources.append(site.host_path(source))
                parent = host_needs.nic_parent(device)
                if parent is not None:
                    nics.append(parent)
        versions = sorted({v for user in users for v in fleet.users[user].cuda})
        sources += [site.host_path(fleet.cuda[v]) for v in versions if v in fleet.cuda]
        return cls(
            host=host,
            users=tuple(
                UserQuery(name=u, uid=fleet.users[u].uid, gid=fleet.users[u].gid) for u in users
            ),
            paths=_unique([*homes, *sources]),
            homes=_unique(homes),
            nics=_unique(nics),
        )

    def argv(self) -> list[str]:
        """The command that asks the host: ``sh -c SCRIPT lxdgpu-facts ARGS``."""
        args = [str(len(self.users))]
        for user in self.users:
            args += [user.name, str(user.uid), str(user.gid)]
        args += [str(len(self.paths)), *self.paths, self.ledger, *self.nics]
        return ["sh", "-c", SCRIPT, SCRIPT_NAME, *args]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


class FactsParseError(ValueError):
    """The script's output is not what it prints: cut short, or something else answered."""


def parse_facts(output: bytes, query: FactsQuery, *, via: str) -> HostFacts:
    """The facts in the script's ``output`` for ``query``; raises ``FactsParseError``.

    Lines before ``V 1`` are skipped (a login shell's greeting); the answer must end with
    ``E``. Every path and NIC of the query is in the result, found or not."""
    lines = output.decode(errors="replace").splitlines()
    try:
        start = lines.index("V 1")
    except ValueError:
        raise FactsParseError("the answer does not start as the facts script's does") from None
    accounts: dict[tuple[str, int], AccountObs] = {}
    groups: dict[tuple[str, int], GroupObs] = {}
    paths = {path: PathObs(path=path, exists=False) for path in query.paths}
    subuid: list[SubId] = []
    subgid: list[SubId] = []
    ledger: list[str] = []
    nics = dict.fromkeys(query.nics, False)
    nvidia: list[str] | None = None
    ended = False
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
        tag, _, rest = line.partition(" ")
        if ended:
            raise FactsParseError(f"line {number}: output after the end")
        try:
            if tag == "A":
                account = parse_passwd(rest)
                accounts[(account.name, account.uid)] = account
            elif tag == "G":
                group = parse_group(rest)
                groups[(group.name, group.gid)] = group
            elif tag == "P":
                path = _indexed(query.paths, rest)
                paths[path] = parse_stat(path, rest.partition(" ")[2])
            elif tag in ("SU", "SG"):
                found = parse_subid(rest)
                if found is not None:
                    (subuid if tag == "SU" else subgid).append(found)
            elif tag == "L":
                if rest.strip():
                    ledger.append(rest.strip())
            elif tag == "N":
                nics[_indexed(query.nics, rest)] = rest.partition(" ")[2] == "1"
            elif tag == "GPU":
                nvidia = []
            elif tag == "GL":
                if nvidia is None:
                    raise ValueError("nvidia-smi output without nvidia-smi")
                if rest.strip():
                    nvidia.append(rest.strip())
            elif tag == "E":
                ended = True
            else:
                raise ValueError(f"unknown record {tag!r}")
        except ValueError as exc:
            raise FactsParseError(f"line {number}: {exc}") from None
    if not ended:
        raise FactsParseError("the answer was cut short (no end line)")
    return HostFacts(
        via=via,
        accounts=tuple(sorted(accounts.values(), key=lambda a: (a.uid, a.name))),
        groups=tuple(sorted(groups.values(), key=lambda g: (g.gid, g.name))),
        paths=paths,
        subuid=tuple(subuid),
        subgid=tuple(subgid),
        delegated=tuple(dict.fromkeys(ledger)),
        nics=nics,
        nvidia=None if nvidia is None else tuple(nvidia),
    )


def parse_passwd(line: str) -> AccountObs:
    """An account from a ``getent passwd`` line ``name:pw:uid:gid:gecos:home:shell``."""
    fields = line.split(":")
    if len(fields) != 7:
        raise ValueError(f"not a passwd entry: {line!r}")
    return AccountObs(
        name=fields[0], uid=int(fields[2]), gid=int(fields[3]), home=fields[5], shell=fields[6]
    )


def parse_group(line: str) -> GroupObs:
    """A group from a ``getent group`` line ``name:pw:gid:members``."""
    fields = line.split(":")
    if len(fields) != 4:
        raise ValueError(f"not a group entry: {line!r}")
    return GroupObs(name=fields[0], gid=int(fields[2]))


def parse_stat(path: str, found: str) -> PathObs:
    """``path`` from the script's ``UID GID MODE KIND`` (``stat -c '%u %g %a %F'``) or ``-``."""
    if found == "-":
        return PathObs(path=path, exists=False)
    uid, gid, mode, kind = found.split(" ", 3)
    if not mode or any(c not in "01234567" for c in mode):
        raise ValueError(f"not a mode: {mode!r}")
    return PathObs(path=path, exists=True, kind=kind, uid=int(uid), gid=int(gid), mode=mode)


def parse_subid(line: str) -> SubId | None:
    """A line of /etc/subuid or /etc/subgid (``owner:start:count``); None for a blank line, a
    comment or a line the shadow tools would not use either."""
    fields = line.strip().split(":")
    if len(fields) != 3 or line.lstrip().startswith("#"):
        return None
    owner, start, count = fields
    if not (owner and start.isdigit() and count.isdigit()):
        return None
    return SubId(owner=owner, start=int(start), count=int(count))


def _indexed(items: tuple[str, ...], rest: str) -> str:
    index = rest.partition(" ")[0]
    if not index.isdigit() or int(index) >= len(items):
        raise ValueError(f"no item {index!r} was asked about")
    return items[int(index)]


def read_facts(
    shell: HostShell, query: FactsQuery, *, timeout: float = DEFAULT_TIMEOUT
) -> HostFacts:
    """The facts of ``query.host`` through ``shell``, in one command. Never raises: a host that
    cannot be reached, a failed script or an unreadable answer is ``HostFacts.error``."""
    host = f"{query.host}, member {query.member}" if query.member else query.host
    try:
        result = shell.run(query.argv(), timeout=timeout)
    except HostShellError as exc:
        return _failed(
            shell, HostError(kind=exc.kind, message=f"host {host}: {exc}", hint=exc.hint)
        )
    except OSError as exc:
        return _failed(
            shell,
            HostError(
                kind=HostErrorKind.ERROR,
                message=f"host {host}: cannot read its own system ({shell.via}): "
                f"{exc.strerror or exc}",
                hint="check that this machine can start processes",
            ),
        )
    if not result.ok:
        return _failed(
            shell,
            HostError(
                kind=HostErrorKind.ERROR,
                message=f"host {host}: reading its accounts and paths ({shell.via}) failed: "
                f"{result.error_text()}",
                hint=f"check that {shell.via} gives a POSIX shell (sh) with getent and stat, "
                "as root",
            ),
        )
    try:
        return parse_facts(result.stdout, query, via=shell.via)
    except FactsParseError as exc:
        return _failed(
            shell,
            HostError(
                kind=HostErrorKind.ERROR,
                message=f"host {host}: the answer about its accounts and paths ({shell.via}) "
                f"cannot be read: {exc}",
                hint="check that nothing in the login of that account prints to standard "
                "output (~/.bashrc), and that its shell is a POSIX one",
            ),
        )


def _failed(shell: HostShell, error: HostError) -> HostFacts:
    return HostFacts(via=shell.via, error=error)
