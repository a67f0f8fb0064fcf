"""The admin's credentials store: the first passwords the tool set, one file per user. Does I/O on
local files only (this machine, never a host).

A file ``USER.json`` holds the user, the host and container, the container user, the password,
the VNC password when the template runs VNC, and ``set_at``: when the password was confirmed set
in the container (``null`` while it is being set, or when setting it failed). Files are mode
0600 in a directory of mode 0700 owned by the user running the tool; a directory that is a
symbolic link, is readable or writable by others, or belongs to someone else is refused, never
"fixed".

Where: ``--credentials-dir DIR`` (or ``LXDGPU_RECONCILE_CREDENTIALS``) when given; in the lab,
``LAB_DIR/credentials`` (the lab's containers are not the fleet's); else
``${XDG_STATE_HOME:-~/.local/state}/lxdgpu-reconcile/credentials/FLEET_ID`` where ``FLEET_ID``
is derived from the fleet file's absolute path, so that two fleets never mix and the passwords
stay outside the fleet's git work tree.

Nothing here puts a password into an exception message or a ``repr``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile.errors import ToolError

#: The environment variable that names the credentials directory (``--credentials-dir``).
ENV_VAR = "LXDGPU_RECONCILE_CREDENTIALS"
#: A fleet user's name, as the fleet file allows it (``fleet.models.UserName``).
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class CredentialsError(ToolError):
    """The credentials store cannot be used as it is."""


@dataclass(frozen=True)
class Credentials:
    """The first password of ``container_user`` in ``user``'s ``container`` on ``host``.

    ``set_at``: when it was confirmed set (ISO 8601, UTC); None while it is being set or after a
    failed attempt. The passwords never show in ``repr``."""

    user: str
    host: str
    container: str
    container_user: str
    password: str = field(repr=False)
    vnc_password: str | None = field(default=None, repr=False)
    set_at: str | None = None

    def confirmed(self, at: str) -> Credentials:
        return replace(self, set_at=at)

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "host": self.host,
            "container": self.container,
            "container_user": self.container_user,
            "password": self.password,
            "vnc_password": self.vnc_password,
            "set_at": self.set_at,
        }


def fleet_id(fleet_path: Path) -> str:
    """A name for the fleet file at ``fleet_path``: its stem and a digest of its absolute path
    (``fleet-3f1c...``), the same for every way of naming that file."""
    absolute = Path(os.path.realpath(fleet_path))
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", absolute.stem).lstrip(".")[:40] or "fleet"
    return f"{stem}-{hashlib.sha256(str(absolute).encode()).hexdigest()[:16]}"


def default_directory(fleet_path: Path, environ: dict[str, str] | None = None) -> Path:
    """``${XDG_STATE_HOME:-~/.local/state}/lxdgpu-reconcile/credentials/FLEET_ID``."""
    env = os.environ if environ is None else environ
    state_home = env.get("XDG_STATE_HOME", "")
    # The XDG spec: a relative path is invalid and is ignored.
    base = Path(state_home) if state_home.startswith("/") else Path.home() / ".local" / "state"
    return base / "lxdgpu-reconcile" / "credentials" / fleet_id(fleet_path)


def directory_for(fleet_path: Path, *, given: Path | None, lab_dir: str | None) -> Path:
    """Where the credentials of the fleet at ``fleet_path`` live: ``given``
    (``--credentials-dir``), else the lab's own store, else ``default_directory``."""
    if given is not None:
        return given
    if lab_dir:
        return Path(lab_dir) / "credentials"
    return default_directory(fleet_path)


def check_user(user: str) -> str:
    """``user`` when it is a valid fleet user name (it names a file); else ``CredentialsError``."""
    if not _USER_RE.match(user):
        raise CredentialsError(
            f"{user!r} is not a user name of a fleet file",
            "give the name of a user under `users:` in the fleet file",
        )
    return user


class CredentialStore:
    """The credentials files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_of(self, user: str) -> Path:
        return self.directory / f"{check_user(user)}.json"

    def ready(self) -> None:
        """Make the directory (mode 0700) when missing; refuse one that is unsafe."""
        try:
            info = os.lstat(self.directory)
        except FileNotFoundError:
            try:
                self.directory.parent.mkdir(parents=True, exist_ok=True)
                self.directory.mkdir(mode=0o700)
                os.chmod(self.directory, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise fileio.FileWriteError(
                    self.directory, fileio.reason_of(exc), doing="create"
                ) from None
            info = os.lstat(self.directory)
        except OSError as exc:
            raise self._unusable(fileio.reason_of(exc)) from None
        self._check(info)

    def _check(self, info: os.stat_result) -> None:
        where = self.directory
        if stat.S_ISLNK(info.st_mode):
            raise self._unusable(
                "it is a symbolic link",
                f"use a real directory: give its own path with --credentials-dir, or remove the "
                f"link {where}",
            )
        if not stat.S_ISDIR(info.st_mode):
            raise self._unusable("it is not a directory")
        if info.st_uid != os.geteuid():
            raise self._unusable(
                f"it belongs to uid {info.st_uid}, not to uid {os.geteuid()} running the tool",
                f"run the tool as the owner of {where}, or give another --credentials-dir",
            )
        if info.st_mode & 0o077:
            raise self._unusable(
                f"its mode is {stat.S_IMODE(info.st_mode):04o}: other users may read or change it",
                f"check who could read the files in it, then `chmod 700 {where}`; or give "
                "another --credentials-dir",
            )

    def _unusable(self, reason: str, hint: str = "") -> CredentialsError:
        return CredentialsError(
            f"the credentials directory {self.directory} is not used: {reason}",
            hint or f"give another directory with --credentials-dir (or {ENV_VAR})",
        )

    def write(self, credentials: Credentials) -> Path:
        """Replace the user's file (mode 0600) whole; its path. Raises ``CredentialsError`` or
        ``fileio.FileWriteError``."""
        self.ready()
        path = self.path_of(credentials.user)
        text = json.dumps(credentials.to_json(), indent=2, sort_keys=True) + "\n"
        fileio.write_atomic(path, text, mode=0o600)
        return path

    def remove(self, user: str) -> None:
        """Remove the user's file, if any."""
        try:
            self.path_of(user).unlink(missing_ok=True)
        except OSError as exc:
            raise fileio.FileWriteError(
                self.path_of(user), fileio.reason_of(exc), doing="remove"
            ) from None

    def read(self, user: str) -> Credentials | None:
        """The user's stored credentials; None when there is no file. Raises
        ``CredentialsError`` for an unsafe directory or file, or a file that is not the tool's."""
        path = self.path_of(user)
        try:
            self._check(os.lstat(self.directory))
        except FileNotFoundError:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CredentialsError(
                f"cannot read {path}: {fileio.reason_of(exc)}",
                "it must be a regular file of the user running the tool (not a symbolic link)",
            ) from None
        with os.fdopen(fd, "rb") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            data = handle.read()
        if mode & 0o077:
            raise CredentialsError(
                f"{path} has mode {mode:04o}: other users may read it",
                f"`chmod 600 {path}`, and set a new password when someone may have read it "
                f"(`lxdgpu-reconcile reset-password {user}`)",
            )
        return _parse(path, data)


def _parse(path: Path, data: bytes) -> Credentials:
    """The credentials in ``data``; a file that is not the tool's raises ``CredentialsError``
    (whose message holds nothing of the file's content)."""
    try:
        doc = json.loads(data)
        found = Credentials(
            user=str(doc["user"]),
            host=str(doc["host"]),
            container=str(doc["container"]),
            container_user=str(doc["container_user"]),
            password=str(doc["password"]),
            vnc_password=None if doc.get("vnc_password") is None else str(doc["vnc_password"]),
            set_at=None if doc.get("set_at") is None else str(doc["set_at"]),
        )
    except (ValueError, TypeError, KeyError):
        raise CredentialsError(
            f"{path} is not a credentials file of lxdgpu-reconcile",
            "move it away; `lxdgpu-reconcile reset-password USER` writes a new one",
        ) from None
    return found
