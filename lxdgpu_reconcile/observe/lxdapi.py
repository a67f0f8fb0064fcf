"""The one typed seam for every LXD call the observer and the executor make.

``LxdApi`` is the protocol: LXD's REST API as typed methods, keeping its semantics (status codes
in ``LxdError.status``, the ETag of a read and ``If-Match`` on a write, operations waited on with
deadlines). ``PylxdApi`` implements it over a pinned pylxd client, which only
``observe.connect.connect`` builds; it does I/O, through the client's raw ``api`` nodes, and turns
pylxd's and requests' exceptions into ``LxdError`` with a message in plain words and, where one is
known, what to do about it (``lxderrors.explain``). Tests implement the protocol in memory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote

import pylxd
import requests
from pylxd import exceptions as lxd_exceptions

from lxdgpu_reconcile.observe.lxderrors import (
    LxdError,
    StaleObject,
    explain,
    stale,
    transport_failure,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "EXEC_ENVIRONMENT",
    "Connect",
    "Json",
    "LxdApi",
    "LxdError",
    "PylxdApi",
    "StaleObject",
]

#: Default deadline for one LXD operation (create, start, stop, update, delete), in seconds.
DEFAULT_TIMEOUT = 120.0
#: The environment of a command ``LxdApi.exec`` runs (LXD adds nothing else for a
#: non-interactive exec).
EXEC_ENVIRONMENT = {
    "HOME": "/root",
    "USER": "root",
    "LANG": "C.UTF-8",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}

Json = dict[str, Any]


class LxdApi(Protocol):
    """One LXD host's API. Every method raises ``LxdError`` (``StaleObject`` for a 412).

    ``collection`` is a path under ``/1.0``: ``instances``, ``profiles``, ``images``,
    ``images/aliases``, ``storage-pools``. ``what`` describes the request in error messages
    ("" for the default, e.g. "read instance NAME"). Writes that start an operation wait for it
    until it ends or ``timeout`` seconds pass.
    """

    @property
    def host_info(self) -> Json:
        """``GET /1.0``: the server's environment and API extensions."""
        ...

    def resources(self, *, timeout: float | None = None, target: str | None = None) -> Json:
        """``GET /1.0/resources`` (``?target=MEMBER``: that cluster member's)."""
        ...

    def list(
        self,
        collection: str,
        *,
        recursion: int,
        filter: str | None = None,
        timeout: float | None = None,
        what: str = "",
    ) -> list[Json]:
        """``GET /1.0/COLLECTION?recursion=N[&filter=F]``: the objects of the collection."""
        ...

    def get(self, collection: str, name: str, *, what: str = "") -> tuple[Json, str]:
        """One object and its ETag."""
        ...

    def create(
        self,
        collection: str,
        body: Mapping[str, Any],
        *,
        timeout: float,
        what: str = "",
        target: str | None = None,
    ) -> Json:
        """``POST``; the metadata of the finished operation (``{}`` for a synchronous one).
        ``target``: on a cluster, the member the object is created on (``?target=MEMBER``)."""
        ...

    def put(
        self,
        collection: str,
        name: str,
        body: Mapping[str, Any],
        *,
        etag: str = "",
        timeout: float,
        what: str = "",
    ) -> None:
        """Replace the object, only if it still has ``etag`` (``If-Match``) when one is given."""
        ...

    def patch(self, collection: str, name: str, body: Mapping[str, Any], *, what: str = "") -> None:
        """Merge ``body`` into the object."""
        ...

    def delete(self, collection: str, name: str, *, timeout: float, what: str = "") -> None: ...

    def set_state(self, name: str, action: str, *, timeout: float, force: bool = False) -> None:
        """``start`` or ``stop`` an instance and wait for it."""
        ...

    def image_secret(self, fingerprint: str, *, what: str = "") -> tuple[str, str]:
        """A one-time download secret for a private image: its operation id and the secret."""
        ...

    def migrate_source(self, name: str, *, what: str = "") -> tuple[str, Json]:
        """``POST /1.0/instances/NAME {"migration": true, "live": false, "instance_only":
        true}`` on a stopped instance: the id of the migration operation another host pulls
        from, and its websocket secrets. Not waited on: it ends when the pull does."""
        ...

    def rename(self, name: str, new_name: str, *, timeout: float) -> None:
        """``POST /1.0/instances/NAME {"name": NEW_NAME}`` (a stopped instance), waited on."""
        ...

    def move_to_member(self, name: str, member: str, *, timeout: float) -> None:
        """``POST /1.0/instances/NAME?target=MEMBER {"name": NAME, "migration": true,
        "live": false}``: LXD's move of a stopped instance to another member of its cluster,
        waited on."""
        ...

    def cancel_operation(self, op_id: str, *, what: str = "cancel operation") -> None:
        """``DELETE /1.0/operations/ID`` (status 400 or 404 when it already ended)."""
        ...

    def start_exec(self, instance: str, body: Mapping[str, Any], *, what: str = "") -> str:
        """``POST /1.0/instances/NAME/exec`` without a websocket; the operation id."""
        ...

    def poll_operation(self, op_id: str, *, wait: int, what: str = "") -> Json:
        """The operation (``status_code``, ``err``, ``metadata``) once it ended or ``wait``
        seconds passed, whichever comes first."""
        ...

    def read_log(self, instance: str, name: str, *, offset: int, what: str = "") -> bytes:
        """The bytes of the instance's log file ``name`` from ``offset``; b"" while missing."""
        ...

    def exec(
        self,
        instance: str,
        argv: Sequence[str],
        *,
        timeout: float,
        environment: Mapping[str, str] | None = None,
        what: str = "",
    ) -> tuple[int, bytes, bytes]:
        """Run ``argv`` as root in the running ``instance`` and wait for it: its exit code,
        standard output and standard error. Non-interactive, with no websocket (``record-output``:
        LXD records the output in the instance's log files, read from the finished operation and
        then deleted); no standard input. Raises ``LxdError`` when the command could not run or
        did not end within ``timeout`` seconds."""
        ...

    def file_exists(self, instance: str, path: str) -> bool: ...

    def delete_file(self, instance: str, path: str, *, what: str = "") -> None:
        """Delete ``path`` in the instance (status 404 when there is none)."""
        ...

    def push_file(
        self, instance: str, path: str, content: bytes, *, mode: str, uid: int, gid: int, what: str
    ) -> None:
        """Write a file, ``mode`` in LXD's form (e.g. ``0640``)."""
        ...

    def make_directory(
        self, instance: str, path: str, *, mode: str, uid: int, gid: int, what: str
    ) -> None: ...

    def close(self) -> None:
        """Release the connection; the object is not used afterwards."""
        ...


#: Opens the API of a fleet host by name; raises ``observe.connect.HostConnectError``.
Connect = Callable[[str], LxdApi]


def _q(name: str) -> str:
    return quote(name, safe="")


class PylxdApi:
    """``LxdApi`` over a pinned pylxd client (``client``, for what the protocol does not cover)."""

    def __init__(self, client: pylxd.Client) -> None:
        self.client = client

    @property
    def host_info(self) -> Json:
        info: Json = self.client.host_info
        return info

    def resources(self, *, timeout: float | None = None, target: str | None = None) -> Json:
        params = {} if target is None else {"target": target}
        what = "read resources" if target is None else f"read resources of member {target}"
        return dict(_read(what, self.client.api.resources, params, timeout) or {})

    def list(
        self,
        collection: str,
        *,
        recursion: int,
        filter: str | None = None,
        timeout: float | None = None,
        what: str = "",
    ) -> list[Json]:
        params: dict[str, Any] = {"recursion": recursion}
        if filter is not None:
            params["filter"] = filter
        node = self.client.api[collection]
        return list(_read(what or f"list {collection}", node, params, timeout) or [])

    def get(self, collection: str, name: str, *, what: str = "") -> tuple[Json, str]:
        node = self.client.api[collection][_q(name)]
        response = _call(what or f"read {collection[:-1]} {name}", node.get)
        return response.json()["metadata"], response.headers.get("ETag", "")

    def create(
        self,
        collection: str,
        body: Mapping[str, Any],
        *,
        timeout: float,
        what: str = "",
        target: str | None = None,
    ) -> Json:
        what = what or f"create {collection[:-1]} {body.get('name', '')}"
        params = {} if target is None else {"params": {"target": target}}
        response = _call(what, self.client.api[collection].post, json=dict(body), **params)
        return self._wait(response, what, timeout)

    def put(
        self,
        collection: str,
        name: str,
        body: Mapping[str, Any],
        *,
        etag: str = "",
        timeout: float,
        what: str = "",
    ) -> None:
        what = what or f"update {collection[:-1]} {name}"
        headers = {"If-Match": etag} if etag else {}
        node = self.client.api[collection][_q(name)]
        response = _call(what, node.put, json=dict(body), headers=headers)
        self._wait(response, what, timeout)

    def patch(self, collection: str, name: str, body: Mapping[str, Any], *, what: str = "") -> None:
        node = self.client.api[collection][_q(name)]
        _call(what or f"update {collection[:-1]} {name}", node.patch, json=dict(body))

    def delete(self, collection: str, name: str, *, timeout: float, what: str = "") -> None:
        what = what or f"delete {collection[:-1]} {name}"
        response = _call(what, self.client.api[collection][_q(name)].delete)
        self._wait(response, what, timeout)

    def set_state(self, name: str, action: str, *, timeout: float, force: bool = False) -> None:
        what = f"{action} instance {name}"
        body: Json = {"action": action, "timeout": int(min(timeout, 60)), "force": force}
        response = _call(what, self.client.api.instances[_q(name)].state.put, json=body)
        self._wait(response, what, timeout)

    def image_secret(self, fingerprint: str, *, what: str = "") -> tuple[str, str]:
        node = self.client.api.images[_q(fingerprint)].secret
        response = _call(
            what or f"create a download secret for image {fingerprint}", node.post, json={}
        )
        return _operation_id(response), str(response.json()["metadata"]["metadata"]["secret"])

    def migrate_source(self, name: str, *, what: str = "") -> tuple[str, Json]:
        body = {"migration": True, "live": False, "instance_only": True}
        node = self.client.api.instances[_q(name)]
        response = _call(what or f"prepare the migration of {name}", node.post, json=body)
        secrets = dict((response.json().get("metadata") or {}).get("metadata") or {})
        return _operation_id(response), secrets

    def rename(self, name: str, new_name: str, *, timeout: float) -> None:
        what = f"rename instance {name} to {new_name}"
        node = self.client.api.instances[_q(name)]
        self._wait(_call(what, node.post, json={"name": new_name}), what, timeout)

    def move_to_member(self, name: str, member: str, *, timeout: float) -> None:
        what = f"move instance {name} to member {member}"
        node = self.client.api.instances[_q(name)]
        body = {"name": name, "migration": True, "live": False}
        response = _call(what, node.post, json=body, params={"target": member})
        self._wait(response, what, timeout)

    def cancel_operation(self, op_id: str, *, what: str = "cancel operation") -> None:
        _call(what, self.client.api.operations[op_id].delete)

    def start_exec(self, instance: str, body: Mapping[str, Any], *, what: str = "") -> str:
        node = self.client.api.instances[_q(instance)]["exec"]
        return _operation_id(_call(what or f"exec in {instance}", node.post, json=dict(body)))

    def poll_operation(self, op_id: str, *, wait: int, what: str = "") -> Json:
        node = self.client.api.operations[op_id].wait
        reply = _call(what or f"wait for operation {op_id}", node.get, params={"timeout": wait})
        meta: Json = reply.json().get("metadata") or {}
        return meta

    def read_log(self, instance: str, name: str, *, offset: int, what: str = "") -> bytes:
        """LXD 5.0.2 mishandles a range that starts at or past the end of a log (416, or a
        ``Content-Length`` it does not send, which breaks the connection), so the range starts
        one byte early, inside the part already read, and that byte is dropped."""
        what = what or f"read log {name} of {instance}"
        node = self.client.api.instances[_q(instance)].logs[_q(name)]
        headers = {"Range": f"bytes={offset - 1}-"} if offset else {}
        try:
            # pylxd accepts only 200 on GET; a range read answers 206, so use its session.
            response = node.session.get(node._api_endpoint, headers=headers, timeout=node._timeout)
        except requests.RequestException as exc:
            raise _unanswered(what, exc) from None
        if response.status_code == 404:
            return b""
        if response.status_code == 206:
            return bytes(response.content[1:])
        if response.status_code == 200:
            return bytes(response.content[offset:])
        raise LxdError(f"{what}: HTTP {response.status_code}", status=response.status_code)

    def exec(
        self,
        instance: str,
        argv: Sequence[str],
        *,
        timeout: float,
        environment: Mapping[str, str] | None = None,
        what: str = "",
    ) -> tuple[int, bytes, bytes]:
        what = what or f"run {argv[0] if argv else '?'} in {instance}"
        body = {
            "command": list(argv),
            "environment": dict(environment or EXEC_ENVIRONMENT),
            "record-output": True,
            "wait-for-websocket": False,
            "interactive": False,
        }
        op_id = self.start_exec(instance, body, what=what)
        deadline = time.monotonic() + timeout
        while True:
            left = max(1, min(30, int(deadline - time.monotonic())))
            meta = self.poll_operation(op_id, wait=left, what=what)
            if meta.get("status_code") not in (None, 103, 105):  # running, pending
                break
            if time.monotonic() >= deadline:
                raise LxdError(
                    f"{what}: not finished after {timeout:.0f}s (LXD operation {op_id})",
                    hint="the command may still run in the container; check it with "
                    f"`lxc exec {instance} -- ps`",
                )
        result = meta.get("metadata") or {}
        if "return" not in result:
            error = meta.get("err") or "failed"
            raise LxdError(f"{what}: {error}", status=meta.get("status_code"), hint=explain(error))
        outputs = {
            str(k): str(v).rsplit("/", 1)[-1] for k, v in (result.get("output") or {}).items()
        }
        stdout = (
            self.read_log(instance, outputs["1"], offset=0, what=what) if "1" in outputs else b""
        )
        stderr = (
            self.read_log(instance, outputs["2"], offset=0, what=what) if "2" in outputs else b""
        )
        for name in outputs.values():
            self._delete_log(instance, name)
        return int(result["return"]), stdout, stderr

    def _delete_log(self, instance: str, name: str) -> None:
        """Delete a recorded output file; one that cannot be is left (LXD removes it with the
        instance)."""
        node = self.client.api.instances[_q(instance)].logs[_q(name)]
        with contextlib.suppress(LxdError):
            _call(f"delete log {name} of {instance}", node.delete)

    def file_exists(self, instance: str, path: str) -> bool:
        files = self.client.api.instances[_q(instance)].files
        try:
            _call(f"read {path}", files.get, params={"path": path})
        except LxdError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def delete_file(self, instance: str, path: str, *, what: str = "") -> None:
        files = self.client.api.instances[_q(instance)].files
        _call(what or f"delete {path}", files.delete, params={"path": path})

    def push_file(
        self, instance: str, path: str, content: bytes, *, mode: str, uid: int, gid: int, what: str
    ) -> None:
        headers = {
            "X-LXD-type": "file",
            "X-LXD-mode": mode,
            "X-LXD-uid": str(uid),
            "X-LXD-gid": str(gid),
            "X-LXD-write": "overwrite",
        }
        files = self.client.api.instances[_q(instance)].files
        _call(what, files.post, params={"path": path}, data=content, headers=headers)

    def make_directory(
        self, instance: str, path: str, *, mode: str, uid: int, gid: int, what: str
    ) -> None:
        headers = {"X-LXD-type": "directory", "X-LXD-mode": mode}
        headers.update({"X-LXD-uid": str(uid), "X-LXD-gid": str(gid)})
        files = self.client.api.instances[_q(instance)].files
        _call(what, files.post, params={"path": path}, headers=headers)

    def close(self) -> None:
        self.client.api.session.close()

    def _wait(self, response: requests.Response, what: str, timeout: float) -> Json:
        """Wait for the operation ``response`` started, until it ends or ``timeout`` passes.

        Returns the operation's ``metadata`` (e.g. the fingerprint of a published image);
        ``{}`` for a synchronous response.
        """
        if response.json().get("type") != "async":
            return {}
        op_id = _operation_id(response)
        deadline = time.monotonic() + timeout
        while True:
            left = max(1, min(30, int(deadline - time.monotonic())))
            meta = self.poll_operation(op_id, wait=left, what=what)
            status_code = meta.get("status_code")
            if status_code == 200:
                return dict(meta.get("metadata") or {})
            if status_code in (400, 401):
                error = meta.get("err") or "failed"
                raise LxdError(f"{what}: {error}", status=status_code, hint=explain(error))
            if time.monotonic() >= deadline:
                raise LxdError(
                    f"{what}: not finished after {timeout:.0f}s (LXD operation {op_id})",
                    hint="the operation goes on on the host; check it with `lxc operation list`",
                )


def _timeout(timeout: float | None) -> dict[str, float]:
    return {} if timeout is None else {"timeout": timeout}


def _call(what: str, func: Any, *args: Any, **kwargs: Any) -> requests.Response:
    """``func(*args, **kwargs)`` (a pylxd ``api`` node's method); failures become ``LxdError``."""
    try:
        response: requests.Response = func(*args, **kwargs)
    except lxd_exceptions.LXDAPIException as exc:
        raise _refused(what, exc) from None
    except requests.RequestException as exc:
        raise _unanswered(what, exc) from None
    return response


def _read(what: str, node: Any, params: dict[str, Any], timeout: float | None) -> Any:
    """``GET`` of a pylxd ``api`` node through its session: the ``metadata`` of a synchronous
    answer, its body decoded once (pylxd's own ``get`` decodes it to check it, then the caller
    would again). Failures become ``LxdError`` as in ``_call``; a body that is not JSON raises
    ``ValueError`` (the readers report it as an unexpected answer)."""
    if node._project is not None:
        params = {**params, "project": node._project}
    wait = node._timeout if timeout is None else timeout
    try:
        response = node.session.get(node._api_endpoint, params=params, timeout=wait)
    except requests.RequestException as exc:
        raise _unanswered(what, exc) from None
    if response.status_code != 200:
        raise _refused(what, lxd_exceptions.LXDAPIException(response))
    data = response.json()  # not JSON: ValueError, as pylxd's ``get`` then ``json()`` raised
    if not isinstance(data, dict) or data.get("type") != "sync":
        raise _refused(what, lxd_exceptions.LXDAPIException(response))
    return data.get("metadata")


def _refused(what: str, exc: lxd_exceptions.LXDAPIException) -> LxdError:
    """LXD's error answer ``exc`` as an ``LxdError`` (``StaleObject`` for a 412)."""
    status = exc.response.status_code if exc.response is not None else None
    message = str(exc)
    if status == 412:
        return stale(what, message, cause=exc)
    return LxdError(f"{what}: {message}", status=status, hint=explain(message), cause=exc)


def _unanswered(what: str, exc: requests.RequestException) -> LxdError:
    """A request that got no answer (timeout, refused or dropped connection), in plain words.

    Other failures of requests (a TLS failure, a malformed URL) keep their own text."""
    no_answer = isinstance(exc, requests.Timeout | requests.ConnectionError)
    if no_answer and not isinstance(exc, requests.exceptions.SSLError):
        error = transport_failure(what, str(exc), timed_out=isinstance(exc, requests.Timeout))
        error.cause = exc
        return error
    return LxdError(
        f"{what}: {type(exc).__name__}: {exc}", hint="check that the host is reachable", cause=exc
    )


def _operation_id(response: requests.Response) -> str:
    """The id of the operation an async ``response`` started."""
    return str(response.json()["operation"]).rstrip("/").split("/")[-1]
