"""First passwords: a random password for the container user of a new container, expired so that
the first login must change it, and a VNC password where the template runs VNC. Does I/O,
through ``observe.lxdapi.LxdApi`` and the admin's credentials store (``execute.credentials``).

The order keeps a password from ever being lost: the credentials file is written first (its
``set_at`` empty), then the password goes into a file pushed into the container (mode 0600,
root's), one fixed script (``SCRIPT``, run as ``sh -c SCRIPT NAME USER FILE VNCFILE``: the user
name and the file paths are arguments, never script text) feeds it to ``chpasswd``, removes the
files, expires the password (``chage -d 0``, else ``passwd -e``, else day 0 in the user's
``/etc/shadow`` line) and writes the VNC password with ``vncpasswd -f`` into ``~USER/.vnc/passwd``
(0600, the user's); last the credentials file gets ``set_at``. No password is ever part of a
command line, a request other than the file push, a message or a log line.

The executor sets a first password once a container it created has started (the create's start
step). ``reset_password`` (``lxdgpu-reconcile reset-password USER``) sets a new one on request,
in a running container.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from lxdgpu_reconcile import state
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.execute.credentials import Credentials, CredentialStore, directory_for
from lxdgpu_reconcile.fleet.models import Fleet
from lxdgpu_reconcile.observe.lxdapi import LxdApi
from lxdgpu_reconcile.observe.lxderrors import LxdError
from lxdgpu_reconcile.planning import model as plans

#: Where the password files are pushed in the container (root's home, mode 0600; removed).
PASSWORD_FILE = "/root/.lxdgpu-first-password"
VNC_FILE = "/root/.lxdgpu-vnc-password"
#: ``$0`` of the script (shows in ``ps`` while it runs).
SCRIPT_NAME = "lxdgpu-first-password"
#: Seconds the script may take.
SCRIPT_TIMEOUT = 60.0
#: Characters of a password: letters and digits that cannot be mistaken for one another.
ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")
PASSWORD_LENGTH = 16
#: VNC reads the first 8 characters of a password, and no more.
VNC_PASSWORD_LENGTH = 8
#: A container user the scripts accept (the POSIX portable user names shadow-utils accept).
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

SCRIPT = r"""set -u
user=$1 file=$2 vncfile=$3
cleanup() { rm -f -- "$file"; if [ -n "$vncfile" ]; then rm -f -- "$vncfile"; fi; }
trap cleanup EXIT
fail() { echo "$*" >&2; exit 1; }
unchanged() { echo "$*" >&2; exit 2; }
id "$user" >/dev/null 2>&1 || unchanged "there is no user $user in the container"
command -v chpasswd >/dev/null 2>&1 || unchanged "chpasswd is not installed in the container"
if [ -n "$vncfile" ] && ! command -v vncpasswd >/dev/null 2>&1; then
    unchanged "vncpasswd is not installed in the container"
fi
chpasswd < "$file" || fail "chpasswd could not set the password of $user"
rm -f -- "$file"
if command -v chage >/dev/null 2>&1; then
    chage -d 0 "$user" || fail "chage -d 0 $user failed: the password is set but not expired"
elif passwd -e "$user" >/dev/null 2>&1; then
    :
else
    new=/etc/shadow.lxdgpu-new
    if ! LXDGPU_USER=$user awk -F: -v OFS=: '
        $1 == ENVIRON["LXDGPU_USER"] { $3 = 0; found = 1 }
        { print }
        END { exit found ? 0 : 3 }' /etc/shadow > "$new"; then
        rm -f "$new"
        fail "cannot expire the password of $user: no line for $user in /etc/shadow"
    fi
    cat "$new" > /etc/shadow || fail "cannot write /etc/shadow: the password is set but not expired"
    rm -f "$new"
fi
[ -n "$vncfile" ] || exit 0
home=$(LXDGPU_USER=$user awk -F: '$1 == ENVIRON["LXDGPU_USER"] { print $6; exit }' /etc/passwd)
if [ -z "$home" ] && command -v getent >/dev/null 2>&1; then
    home=$(getent passwd "$user" | cut -d: -f6)
fi
[ -n "$home" ] && [ -d "$home" ] || fail "the home of $user ($home) is not a directory"
[ ! -L "$home/.vnc" ] || fail "$home/.vnc is a symbolic link: not followed"
ids=$(id -u "$user"):$(id -g "$user") || fail "cannot read the ids of $user"
umask 077
mkdir -p "$home/.vnc" && chown "$ids" "$home/.vnc" && chmod 0700 "$home/.vnc" ||
    fail "cannot make $home/.vnc"
vncpasswd -f < "$vncfile" > "$home/.vnc/passwd.lxdgpu-new" || fail "vncpasswd -f failed"
chown "$ids" "$home/.vnc/passwd.lxdgpu-new" && chmod 0600 "$home/.vnc/passwd.lxdgpu-new" &&
    mv -f "$home/.vnc/passwd.lxdgpu-new" "$home/.vnc/passwd" ||
    fail "cannot write $home/.vnc/passwd"
"""


class PasswordNotSet(LxdError):
    """A first password (or a reset) that could not be set; says what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message, hint=hint)


class _Unchanged(LxdError):
    """An attempt that failed before anything changed in the container (a push refused, or
    the script's checks: exit status 2)."""


def new_password(length: int = PASSWORD_LENGTH) -> str:
    """A random password (``secrets``), letters and digits."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def set_password(
    client: LxdApi,
    store: CredentialStore,
    *,
    user: str,
    host: str,
    container: str,
    container_user: str,
    vnc: bool,
    timeout: float = SCRIPT_TIMEOUT,
    now: Callable[[], str] = _now,
) -> Credentials:
    """Set a new random, expired password for ``container_user`` in the running ``container``
    (and a VNC password with ``vnc``), fleet user ``user``'s on ``host``; the credentials as
    stored. Raises ``PasswordNotSet`` with what to do."""
    again = f"then run `lxdgpu-reconcile reset-password {user}`"
    where = f"{container} on {host}"
    if not _USER_RE.match(container_user):
        raise PasswordNotSet(
            f"no first password for {where}: the container user {container_user!r} is not a "
            "user name chpasswd accepts",
            f"set defaults.container_user to a user name such as ubuntu, {again}",
        )
    previous = _previous(store, user)
    made = Credentials(
        user=user,
        host=host,
        container=container,
        container_user=container_user,
        password=new_password(),
        vnc_password=new_password(VNC_PASSWORD_LENGTH) if vnc else None,
    )
    try:
        path = store.write(made)
    except ToolError as exc:
        raise PasswordNotSet(
            f"no password was set for {container_user} in {where}: {exc.message}",
            f"{exc.hint}; {again}" if exc.hint else again,
        ) from None
    try:
        _push_and_run(client, made, timeout=timeout)
    except LxdError as exc:
        if not exc.unanswered:  # a host that gave no answer is not asked again (a timeout each)
            _remove_files(client, container)
        message = _scrubbed(exc.message, made)
        if isinstance(exc, _Unchanged):
            _restore(store, user, previous)
            message += "; nothing was changed, and the stored credentials are as they were"
        else:
            message += f" ({path} holds a new password that may not be in effect)"
        raise PasswordNotSet(
            f"the password of {container_user} in {where} was not set: {message}",
            f"{exc.hint + '; ' if exc.hint else ''}fix that in the container, {again}",
        ) from None
    done = made.confirmed(now())
    try:
        store.write(done)
    except ToolError as exc:
        raise PasswordNotSet(
            f"the password of {container_user} in {where} was set, and {path} holds it, but it "
            f"could not be marked as set: {exc.message}",
            f"{exc.hint}; `lxdgpu-reconcile credentials {user}` shows it",
        ) from None
    return done


def _push_and_run(client: LxdApi, made: Credentials, *, timeout: float) -> None:
    what = f"push a password file into {made.container}"
    content = f"{made.container_user}:{made.password}\n".encode()
    vnc_file = ""
    try:
        client.push_file(
            made.container, PASSWORD_FILE, content, mode="0600", uid=0, gid=0, what=what
        )
        if made.vnc_password is not None:
            vnc = f"{made.vnc_password}\n".encode()
            client.push_file(made.container, VNC_FILE, vnc, mode="0600", uid=0, gid=0, what=what)
            vnc_file = VNC_FILE
    except LxdError as exc:
        raise _Unchanged(
            exc.message, status=exc.status, hint=exc.hint, unanswered=exc.unanswered
        ) from None
    argv = ["/bin/sh", "-c", SCRIPT, SCRIPT_NAME, made.container_user, PASSWORD_FILE, vnc_file]
    code, _, err = client.exec(
        made.container, argv, timeout=timeout, what=f"set the password in {made.container}"
    )
    if code != 0:
        words = err.decode("utf-8", errors="replace").strip().splitlines()
        said = words[-1] if words else f"the password script exited with status {code}"
        raise (_Unchanged if code == 2 else LxdError)(said)


def _previous(store: CredentialStore, user: str) -> Credentials | None:
    """The user's stored credentials before this attempt (None: none, or unreadable)."""
    try:
        return store.read(user)
    except ToolError:
        return None


def _restore(store: CredentialStore, user: str, previous: Credentials | None) -> None:
    """Put back what the store held before an attempt that changed nothing."""
    try:
        if previous is None:
            store.remove(user)
        else:
            store.write(previous)
    except ToolError:
        return


def _remove_files(client: LxdApi, container: str) -> None:
    """Remove what a failed attempt may have left in the container (the script removes the
    files itself; a push that worked before the command failed leaves them)."""
    for path in (PASSWORD_FILE, VNC_FILE):
        try:
            client.delete_file(container, path, what=f"remove {path} in {container}")
        except LxdError as exc:
            if exc.unanswered:
                return


def _scrubbed(text: str, made: Credentials) -> str:
    """``text`` without either password in it (a tool in the container could echo it)."""
    for secret in (made.password, made.vnc_password):
        if secret:
            text = text.replace(secret, "(password)")
    return text


# --- reset-password -------------------------------------------------------------------------------


def target_of(fleet: Fleet, user: str) -> tuple[str, str]:
    """The host and the container of fleet user ``user``; ``ToolError`` when not in the fleet."""
    if user not in fleet.users:
        raise ToolError(
            f"user {user} is not in the fleet file",
            "give the name of a user under `users:` (`lxdgpu-reconcile status` lists them)",
        )
    return fleet.users[user].host, fleet.container_of(user)


def reset_password(
    client: LxdApi,
    store: CredentialStore,
    fleet: Fleet,
    user: str,
    *,
    timeout: float = SCRIPT_TIMEOUT,
) -> Credentials:
    """Set a new first password in ``user``'s container, which must be the tool's, the user's
    and running (``client``: its host's API). Raises ``ToolError``."""
    host, container = target_of(fleet, user)
    where = f"{host}:{container}"
    try:
        current, _ = client.get("instances", container, what=f"read instance {container}")
    except LxdError as exc:
        if exc.status == 404:
            raise ToolError(
                f"{user}'s container {container} is not on {host}",
                "create it first: `lxdgpu-reconcile apply` (it sets a first password when it "
                "starts the new container)",
            ) from None
        raise
    config = current.get("config") or {}
    if config.get(state.TAG_MANAGED) != "true" or config.get(state.TAG_USER) != user:
        raise ToolError(
            f"container {where} is not lxdgpu-reconcile's container of user {user} (its "
            f"{state.TAG_MANAGED} and {state.TAG_USER} tags say otherwise): its password is "
            "not changed",
            f"set it by hand: `lxc exec {where} -- passwd {fleet.defaults.container_user}`",
        )
    if current.get("status") != "Running":
        raise ToolError(
            f"container {where} is {str(current.get('status', 'not running')).lower()}: a "
            "password is set in a running container only",
            f"start it (`lxc start {where}`, or state: running for {user} and apply), then run "
            f"`lxdgpu-reconcile reset-password {user}` again",
        )
    template = fleet.templates.get(fleet.users[user].template)
    return set_password(
        client,
        store,
        user=user,
        host=host,
        container=container,
        container_user=fleet.defaults.container_user,
        vnc=template is not None and template.vnc,
        timeout=timeout,
    )


# --- in an apply ----------------------------------------------------------------------------------


def store_for(
    plan: plans.Plan, fleet_path: Path, given: Path | None, lab_dir: str | None
) -> CredentialStore:
    """The credentials store of an apply of ``plan`` (``credentials.directory_for``), checked
    (made when missing) when the plan sets first passwords: an unusable one raises
    ``credentials.CredentialsError`` before anything is applied."""
    store = CredentialStore(directory_for(fleet_path, given=given, lab_dir=lab_dir))
    if wanted(plan):
        store.ready()
    return store


def wanted(plan: plans.Plan) -> bool:
    """Whether applying ``plan`` sets a first password (a create that has one, and its start)."""
    creates = {
        action.id
        for action in plan.actions
        if isinstance(action.body, plans.CreateInstanceBody)
        and action.body.first_password is not None
        and action.pending is None
    }
    return any(
        action.kind is plans.ActionKind.START and action.part_of in creates
        for action in plan.actions
    )


def after_start(
    client: LxdApi,
    action: plans.Action,
    owner: plans.Action | None,
    store: CredentialStore | None,
    done: str,
) -> str:
    """``done`` (what the start ``action`` did), after setting the first password of the
    container when ``action`` is the start of a create (``owner``) that asks for one; raises
    ``PasswordNotSet`` saying the container started. Without a ``store`` no password is set."""
    body = owner.body if owner is not None else None
    if (
        store is None
        or owner is None
        or owner.kind is not plans.ActionKind.CREATE
        or not isinstance(body, plans.CreateInstanceBody)
        or body.first_password is None
    ):
        return done
    user = body.config.get(state.TAG_USER, "")
    try:
        set_password(
            client,
            store,
            user=user,
            host=action.host,
            container=body.name,
            container_user=body.first_password,
            vnc=body.vnc,
        )
    except PasswordNotSet as exc:
        raise PasswordNotSet(f"{done}, but {exc.message}", hint=exc.hint) from None
    vnc = " and a VNC password" if body.vnc else ""
    return (
        f"{done}; a first password for {body.first_password}{vnc} set, expired "
        f"(`lxdgpu-reconcile credentials {user}`)"
    )


def created_stopped(action: plans.Action, started: bool) -> str:
    """What the create ``action`` did, saying when it gets no first password yet (``started``:
    the plan starts it)."""
    body = action.body
    if started or not isinstance(body, plans.CreateInstanceBody) or body.first_password is None:
        return "created"
    user = body.config.get(state.TAG_USER, "")
    return (
        f"created, stopped: no first password for {body.first_password} until it runs (start "
        f"it, then `lxdgpu-reconcile reset-password {user}`)"
    )
