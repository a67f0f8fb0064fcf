"""Host actions: accounts, homes and id delegations on a host's own system. Does I/O.

Each action runs a few commands through the host's ``HostShell`` (OpenSSH, or this machine with
``--local``) as argument vectors: no value of the fleet file or the plan ever becomes shell
text (the two ledger scripts are fixed and take their values as arguments). Every value is
checked first (``execute.host_checks``), and every command's result is checked: a command that
fails fails the action with its own complaint and what to do.

=============  ==========  ========================================================================
kind           object      commands (as root on the host)
=============  ==========  ========================================================================
``create``     account     ``getent group GID`` (exit 2: no such group), then ``groupadd -g GID
                           NAME``; ``useradd -u UID -g GID -d HOME -s /usr/sbin/nologin
                           [-m -k /etc/skel | -M] NAME``; ``usermod -L NAME`` (locked, no
                           password); with ``-m`` the home's owner and mode as below.
``create``     home        ``mkdir -p -- HOME``, then as ``update``.
``update``     home        ``stat -c %F -- HOME`` (a directory, not a link), ``chown -h --
                           UID:GID HOME``, ``chmod -- MODE HOME``.
``create``     delegation  ``usermod --add-subuids ID-ID root`` (``--add-subgids``), then the
                           ledger line ``subuid:ID`` appended (once) to
                           ``/etc/lxdgpu-reconcile/delegations``.
``delete``     delegation  only with ``--prune``, and only when the ledger lists it: the line
                           ``root:ID:1`` (what ``usermod --add-subuids ID-ID root`` appended)
                           dropped from /etc/subuid (/etc/subgid) by a fixed script
                           (``SUBID_DROP``), then the ledger line dropped. Not ``usermod
                           --del-subuids``: it refuses a user with running processes, and root
                           always has some.
=============  ==========  ========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute import host_checks
from lxdgpu_reconcile.execute.invariants import Authority, NotAllowed
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.host_facts import LEDGER_DIR
from lxdgpu_reconcile.observe.hostshell import CommandResult, HostShell
from lxdgpu_reconcile.planning import model as plans
from lxdgpu_reconcile.planning.common import ObjectKind

#: The object kinds of host actions.
HOST_KINDS = frozenset({ObjectKind.ACCOUNT, ObjectKind.HOME, ObjectKind.DELEGATION})
#: Seconds one command may take.
COMMAND_TIMEOUT = 60.0
#: ``$0`` of the ledger scripts, as ``ps`` shows them on the host.
LEDGER_NAME = "lxdgpu-ledger"
#: Appends the line ``$2`` to ``$1/delegations`` unless it is there. The ledger scripts that
#: change it hold ``flock`` on ``$1/lock``: actions on one host run at once (a removed user's
#: subuid and subgid lines are dropped together).
LEDGER_ADD = (
    'mkdir -p -- "$1" && exec 9>>"$1/lock" && flock -w 60 9 && '
    '{ grep -qxF -- "$2" "$1/delegations" 2>/dev/null || '
    'printf \'%s\\n\' "$2" >> "$1/delegations"; }'
)
#: Exit 0 when ``$1/delegations`` has the line ``$2``, 1 when not.
LEDGER_HAS = '[ -f "$1/delegations" ] && grep -qxF -- "$2" "$1/delegations"'
#: Drops the line ``$2`` from ``$1/delegations`` (a new file of its own, renamed over it).
LEDGER_DROP = (
    'f="$1/delegations"; [ -f "$f" ] || exit 0; '
    'exec 9>>"$1/lock" && flock -w 60 9 && t=$(mktemp -- "$f.XXXXXX") || exit 1; '
    '{ grep -vxF -- "$2" "$f"; [ $? -le 1 ]; } > "$t" && chmod "$(stat -c %a -- "$f")" -- "$t" && '
    'mv -f -- "$t" "$f" || { rm -f -- "$t"; exit 1; }'
)
#: ``$0`` of the script that removes a delegation line.
SUBID_NAME = "lxdgpu-subid"
#: Removes the first line ``root:$2:1`` of ``$1`` (/etc/subuid or /etc/subgid), the line shape
#: ``usermod --add-subuids $2-$2 root`` appends. Under shadow's own lock (``$1.lock``, taken as
#: ``useradd`` and ``usermod`` take it: a file ``$1.PID`` holding the pid, linked to it), into a
#: new file in /etc with the old one's owner and mode, renamed over it. Exit 3 when there is no
#: such line (nothing changed), 75 when the file stayed locked for 15 s (shadow's own tools
#: try as long).
SUBID_DROP = r"""f="$1"; line="root:$2:1"
case "$f" in /etc/subuid|/etc/subgid) ;; *) echo "refusing to edit $f" >&2; exit 2;; esac
case "$2" in ""|*[!0-9]*) echo "not an id: $2" >&2; exit 2;; esac
[ -f "$f" ] && grep -qxF -- "$line" "$f" || exit 3
mine="$f.$$"; lock="$f.lock"
printf '%s\n' "$$" > "$mine" || exit 1
n=0
until ln -- "$mine" "$lock" 2>/dev/null; do
  n=$((n + 1))
  if [ "$n" -ge 15 ]; then
    rm -f -- "$mine"; echo "$f is locked ($lock): another program is changing it" >&2; exit 75
  fi
  sleep 1
done
tmp=""
trap 'rm -f -- "$mine" "$lock" ${tmp:+"$tmp"}' EXIT
trap "exit 1" HUP INT TERM
tmp=$(mktemp -- "$f.lxdgpu-XXXXXX") || exit 1
gone=0
while IFS= read -r l || [ -n "$l" ]; do
  if [ "$gone" = 0 ] && [ "$l" = "$line" ]; then gone=1; continue; fi
  printf '%s\n' "$l"
done < "$f" > "$tmp" || exit 1
chown "$(stat -c %u:%g -- "$f")" -- "$tmp" && chmod "$(stat -c %a -- "$f")" -- "$tmp" &&
sync -- "$tmp" && mv -f -- "$tmp" "$f"
"""
#: Exit statuses of ``SUBID_DROP``: the line was not there; the file is locked.
SUBID_ABSENT, SUBID_LOCKED = 3, 75
#: The files of delegations, per ledger kind.
SUBID_FILES = {"subuid": "/etc/subuid", "subgid": "/etc/subgid"}

#: ``usermod``'s options that add delegations of ids to root, per file.
_ADD = {"subuid": "--add-subuids", "subgid": "--add-subgids"}


class HostActionFailed(ToolError):
    """A command of a host action failed on the host; what it said, and what to do."""


def is_host_action(action: plans.Action) -> bool:
    return action.object.kind in HOST_KINDS


def perform(
    shell: HostShell | None, action: plans.Action, fleet: Fleet, authority: Authority
) -> str:
    """Do the host action ``action`` through ``shell``; a short note of what was done.
    Raises ``HostActionFailed``, ``invariants.NotAllowed`` or ``HostShellError``."""
    host_checks.check(action, fleet, authority)
    if shell is None:
        key = host_checks.ssh_key(action)
        raise HostActionFailed(
            f"{action.object} on {action.host}: the host's own system cannot be reached (the "
            f"fleet file gives no {key}); nothing was changed",
            hint=f"give {key} in the fleet file (or run the tool on the host "
            "itself with its local option), then plan and apply again",
        )
    body = action.body
    run = _Runner(shell, action)
    if isinstance(body, plans.AccountBody):
        return _account(run, body)
    if isinstance(body, plans.HomeBody):
        if action.kind is plans.ActionKind.CREATE:
            run(["mkdir", "-p", "--", body.path])
        _own(run, body.path, body.uid, body.gid, body.mode)
        return "created" if action.kind is plans.ActionKind.CREATE else "updated"
    if isinstance(body, plans.DelegationBody):
        if action.kind is plans.ActionKind.CREATE:
            return _delegate(run, body)
        return _undelegate(run, action, body)
    raise HostActionFailed(  # host_checks refuses any other body first
        f"{action.id}: the plan has no usable body for this action", hint="plan again"
    )


class _Runner:
    """Runs the commands of one action and fails it on the first command that fails."""

    def __init__(self, shell: HostShell, action: plans.Action) -> None:
        self.shell = shell
        self.action = action

    def __call__(self, argv: Sequence[str], *, allowed: Sequence[int] = (0,)) -> CommandResult:
        result = self.shell.run(list(argv), timeout=COMMAND_TIMEOUT)
        if result.returncode not in allowed:
            raise HostActionFailed(
                f"{self.action.object} on {self.action.host}: `{_shown(argv)}` failed "
                f"({self.shell.via}): {result.error_text()}",
                hint=_hint(argv[3] if argv[:2] == ["sh", "-c"] and len(argv) > 3 else argv[0]),
            )
        return result


def _account(run: _Runner, body: plans.AccountBody) -> str:
    gid, uid = str(body.gid), str(body.uid)
    group = run(["getent", "group", gid], allowed=(0, 2))
    if group.returncode == 2:
        run(["groupadd", "-g", gid, body.name])
    home = ["-m", "-k", "/etc/skel"] if body.create_home else ["-M"]
    run(["useradd", "-u", uid, "-g", gid, "-d", body.home, "-s", body.shell, *home, body.name])
    run(["usermod", "-L", body.name])
    if body.create_home:
        _own(run, body.home, body.uid, body.gid, body.home_mode)
    return f"created (uid {uid}, locked, {body.shell.rsplit('/', 1)[-1]})"


def _own(run: _Runner, path: str, uid: int, gid: int, mode: str) -> None:
    """Give the directory ``path`` its owner and mode; a link or a file is refused."""
    kind = run(["stat", "-c", "%F", "--", path]).stdout.decode(errors="replace").strip()
    if kind != "directory":
        raise HostActionFailed(
            f"{run.action.object} on {run.action.host}: {path} is a {kind or 'file'}, not a "
            "directory; its owner and mode were not changed",
            hint=f"move it away on {run.action.host} (links are not followed), then plan again",
        )
    run(["chown", "-h", "--", f"{uid}:{gid}", path])
    run(["chmod", "--", mode, path])


def _delegate(run: _Runner, body: plans.DelegationBody) -> str:
    ident = f"{body.id}-{body.id}"
    run(["usermod", _ADD[body.file], ident, "root"])
    run(["sh", "-c", LEDGER_ADD, LEDGER_NAME, LEDGER_DIR, f"{body.file}:{body.id}"])
    return f"root:{body.id}:1 added to /etc/{body.file}"


def _undelegate(run: _Runner, action: plans.Action, body: plans.DelegationBody) -> str:
    line = f"{body.file}:{body.id}"
    listed = run(["sh", "-c", LEDGER_HAS, LEDGER_NAME, LEDGER_DIR, line], allowed=(0, 1))
    if listed.returncode != 0:
        raise NotAllowed(
            f"{action.object} on {action.host}: lxdgpu-reconcile did not add it (its ledger "
            f"{LEDGER_DIR}/delegations does not list it), so it never removes it; nothing was "
            "changed",
            hint="remove the line by hand if it must go; plan again",
        )
    path = SUBID_FILES[body.file]
    dropped = run(
        ["sh", "-c", SUBID_DROP, SUBID_NAME, path, str(body.id)], allowed=(0, SUBID_ABSENT)
    )
    run(["sh", "-c", LEDGER_DROP, LEDGER_NAME, LEDGER_DIR, line])
    if dropped.returncode == SUBID_ABSENT:
        return f"root:{body.id}:1 was no longer in {path}; dropped from the ledger"
    return f"root:{body.id}:1 removed from {path}"


def _shown(argv: Sequence[str]) -> str:
    """A command as shown in a message (the ledger scripts by their name)."""
    if len(argv) > 3 and argv[:2] == ["sh", "-c"]:
        return " ".join([argv[3], *argv[4:]])
    return " ".join(argv)


def _hint(program: str) -> str:
    if program == SUBID_NAME:
        return (
            "a locked file is being changed by another program (useradd, usermod, vipw): apply "
            "again when it is done; a lock left by a program that died (its pid in the .lock "
            "file is gone) can be removed by hand"
        )
    if program in ("useradd", "groupadd", "usermod"):
        return (
            "the tool runs the host layer as root: check that the SSH user is root (hosts.NAME.ssh"
            ") and that the host has the shadow tools (passwd package), then plan again"
        )
    return "check the host's disk and that the SSH user is root, then plan and apply again"
