"""``FakeLxd``: an in-memory LXD host implementing ``observe.lxdapi.LxdApi``. No I/O.

It starts from a ``state.HostSnapshot`` and enforces what LXD enforces: an ETag on every read and
``If-Match`` on a write (412, ``StaleObject``, when stale); a create of an existing name refused;
deleting a running or protected instance, or a profile in use, refused; ``raw.idmap`` mapping host
ids that are not delegated failing the start the way LXD's ``forkstart`` does; the keys LXD adds on
create. Instance migrations between peers (``migrate_source``, then a create that pulls it,
files included) and renames work. Images, aliases, download secrets, file pushes,
``start_exec`` (commands answered by ``exec_handler``), ``exec`` (argument vectors answered by
``argv_handler``) and publishing work, so the real executor's template
builds and copies run on it. ``fail`` injects an operation failure, ``after_read`` a concurrent
change. ``tests.fakes.fleet.FakeFleet`` holds one per host.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from contextlib import contextmanager
from typing import Any

from lxdgpu_reconcile import state
from lxdgpu_reconcile.observe import reading
from lxdgpu_reconcile.observe.lxderrors import LxdError, explain, stale
from tests.fakes import lxd_data as data
from tests.fakes.lxd_data import Json

_INSTANCE_FIELDS = ("architecture", "config", "devices", "ephemeral", "profiles", "stateful")
_PROFILE_FIELDS = ("config", "description", "devices")
ExecHandler = Callable[[str, str], tuple[int, bytes]]
#: Answers ``exec``: (instance, argv, environment) -> (exit code, stdout, stderr).
ArgvHandler = Callable[[str, tuple[str, ...], Mapping[str, str]], tuple[int, bytes, bytes]]


def _succeed(instance: str, command: str) -> tuple[int, bytes]:
    return 0, b""


def _succeed_argv(
    instance: str, argv: tuple[str, ...], environment: Mapping[str, str]
) -> tuple[int, bytes, bytes]:
    return 0, b"", b""


class FakeLxd:
    """One host's LXD in memory. ``delegated_uids``/``delegated_gids``: the host ids root may map
    into containers (None: any). ``writes`` records every write request, in order."""

    def __init__(
        self,
        snap: state.HostSnapshot,
        *,
        address: str = "127.0.0.1:8443",
        delegated_uids: Set[int] | None = None,
        delegated_gids: Set[int] | None = None,
        peers: Mapping[str, FakeLxd] | None = None,
    ) -> None:
        self.name = snap.host
        self.endpoint = snap.endpoint
        self.address = address
        self.delegated_uids = delegated_uids
        self.delegated_gids = delegated_gids
        self.peers: Mapping[str, FakeLxd] = peers if peers is not None else {}
        self.instances = {n: data.instance_json(o) for n, o in snap.instances.items()}
        self.profiles = {n: data.profile_json(o) for n, o in snap.profiles.items()}
        self.images = {i.fingerprint: data.image_json(i) for i in snap.images}
        self.aliases = {
            a: {"name": a, "target": i.fingerprint, "description": ""}
            for i in snap.images
            for a in i.aliases
        }
        self.pools = [
            {"name": p.name, "driver": p.driver, "status": p.status} for p in snap.pools.values()
        ]
        self._server: Json = {
            "api_extensions": list(snap.api_extensions),
            "environment": {
                "server_version": snap.server_version,
                "addresses": [address],
                "certificate": f"CERTIFICATE OF {snap.host}",
            },
        }
        self._resources = data.resources_json(snap)
        self.files: dict[tuple[str, str], Json] = {}
        self.logs: dict[tuple[str, str], bytes] = {}
        self.operations: dict[str, Json] = {}
        self.executed: list[tuple[str, str]] = []
        self.exec_handler: ExecHandler = _succeed
        #: Every ``exec`` (instance, argv), in order, and what answers it.
        self.argv_executed: list[tuple[str, tuple[str, ...]]] = []
        self.argv_handler: ArgvHandler = _succeed_argv
        self.writes: list[str] = []
        self.after_read: Callable[[str, str], None] | None = None
        self.closed = 0
        self._failures: dict[tuple[str, str], str] = {}
        self._lock = threading.RLock()
        self._serial = 0

    # --- test controls -------------------------------------------------------------------------

    def fail(self, verb: str, name: str, message: str) -> None:
        """Make the next ``verb`` (create, update, delete, start, stop) of ``name`` fail with
        ``message``, as a failed LXD operation."""
        self._failures[(verb, name)] = message

    def snapshot(self) -> state.HostSnapshot:
        """The host as ``observe.reading`` sees it now."""
        with self._lock:
            raw = reading.RawHost(
                server=self.host_info,
                resources=self._resources,
                instances=self.list("instances", recursion=2),
                profiles=self.list("profiles", recursion=1),
                images=self.list("images", recursion=1),
                pools=self.list("storage-pools", recursion=1),
            )
            return reading.host_snapshot(self.name, self.endpoint, raw)

    # --- reads ---------------------------------------------------------------------------------

    @property
    def host_info(self) -> Json:
        return copy.deepcopy(self._server)

    def resources(self, *, timeout: float | None = None, target: str | None = None) -> Json:
        if target is not None:
            what = f"read resources of member {target}"
            raise _error(what, 400, "Server isn't part of a cluster")
        return copy.deepcopy(self._resources)

    def list(
        self,
        collection: str,
        *,
        recursion: int,
        filter: str | None = None,
        timeout: float | None = None,
        what: str = "",
    ) -> list[Json]:
        with self._lock:
            names = sorted(self._store(collection, what or f"list {collection}"))
            found = [self._read(collection, name, recursion) for name in names]
            found = [item for item in found if data.matches(item, filter)]
            if recursion == 0:
                return [{"url": f"/1.0/{collection}/{item.get('name')}"} for item in found]
            return found

    def get(self, collection: str, name: str, *, what: str = "") -> tuple[Json, str]:
        with self._lock:
            found = self._read(collection, name, 1, what or f"read {collection[:-1]} {name}")
            tag = self._etag(collection, name)
        if self.after_read is not None:
            self.after_read(collection, name)
        return found, tag

    # --- writes --------------------------------------------------------------------------------

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
        with self._write(f"POST {collection}" + (f"?target={target}" if target else "")):
            self._check_target(target, what)
            self._injected("create", str(body.get("name", "")), what)
            if collection == "instances":
                self._create_instance(dict(body), what)
            elif collection == "profiles":
                self._create_named(self.profiles, "Profile", dict(body), what)
                self.profiles[body["name"]] = data.profile_json(state.ProfileObs(**body))
            elif collection == "images/aliases":
                self._create_alias(dict(body), what)
            elif collection == "images":
                return self._create_image(dict(body), what)
            else:
                raise _error(what, 400, f"cannot create in {collection}")
            return {}

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
        with self._write(f"PUT {collection}/{name}"):
            store = self._store(collection, what)
            if name not in store:
                raise _not_found(what, collection)
            if etag and etag != self._etag(collection, name):
                raise stale(what, "ETag doesn't match")
            self._injected("update", name, what)
            if collection == "instances":
                self._check_idmap_keys_kept(store[name], body, what)
                fields = ("architecture", "description", "ephemeral", "stateful", "profiles")
                store[name].update({k: copy.deepcopy(body[k]) for k in fields if k in body})
                store[name]["config"] = dict(body.get("config") or {})
                store[name]["devices"] = copy.deepcopy(dict(body.get("devices") or {}))
            elif collection == "images/aliases":
                self._image(str(body["target"]), what)
                store[name].update(target=body["target"], description=body.get("description", ""))
            else:
                store[name].update({k: copy.deepcopy(v) for k, v in body.items() if k != "name"})

    def patch(self, collection: str, name: str, body: Mapping[str, Any], *, what: str = "") -> None:
        what = what or f"update {collection[:-1]} {name}"
        with self._write(f"PATCH {collection}/{name}"):
            store = self._store(collection, what)
            if name not in store:
                raise _not_found(what, collection)
            for key, value in body.items():
                if isinstance(value, Mapping) and isinstance(store[name].get(key), dict):
                    store[name][key].update(value)
                else:
                    store[name][key] = copy.deepcopy(value)

    def delete(self, collection: str, name: str, *, timeout: float, what: str = "") -> None:
        what = what or f"delete {collection[:-1]} {name}"
        with self._write(f"DELETE {collection}/{name}"):
            store = self._store(collection, what)
            if name not in store:
                raise _not_found(what, collection)
            self._injected("delete", name, what)
            if collection == "instances":
                self._check_deletable(name, what)
            if collection == "profiles":
                if name == "default":
                    raise _error(what, 403, "The 'default' profile cannot be deleted")
                if self._used_by(name):
                    raise _error(what, 400, "Profile is currently in use")
            del store[name]
            if collection == "images":
                for alias in [a for a, v in self.aliases.items() if v["target"] == name]:
                    del self.aliases[alias]

    def set_state(self, name: str, action: str, *, timeout: float, force: bool = False) -> None:
        what = f"{action} instance {name}"
        with self._write(f"PUT instances/{name}/state {action}"):
            instance = self.instances.get(name)
            if instance is None:
                raise _not_found(what, "instances")
            want = {"start": "Running", "stop": "Stopped"}[action]
            if instance["status"] == want:
                raise _error(what, 400, f"The instance is already {want.lower()}")
            self._injected(action, name, what)
            if action == "start":
                self._check_idmap_delegated(name, what)
            instance["status"] = want

    # --- images, operations, exec, files -------------------------------------------------------

    def image_secret(self, fingerprint: str, *, what: str = "") -> tuple[str, str]:
        with self._write(f"POST images/{fingerprint}/secret"):
            self._image(fingerprint, what or f"create a download secret for image {fingerprint}")
            op_id = self._operation({"status_code": 103, "class": "token"})
            secret = f"secret-{op_id}"
            self.operations[op_id]["metadata"] = {"secret": secret, "fingerprint": fingerprint}
            return op_id, secret

    def migrate_source(self, name: str, *, what: str = "") -> tuple[str, Json]:
        what = what or f"prepare the migration of {name}"
        with self._write(f"POST instances/{name} migration"):
            instance = self.instances.get(name)
            if instance is None:
                raise _not_found(what, "instances")
            if instance["status"] == "Running":
                raise _error(what, 400, "Unable to perform container live migration")
            op_id = self._operation({"status_code": 103, "class": "websocket"})
            secrets = {"control": f"control-{op_id}", "fs": f"fs-{op_id}"}
            self.operations[op_id]["metadata"] = {**secrets, "instance": name}
            return op_id, secrets

    def rename(self, name: str, new_name: str, *, timeout: float) -> None:
        what = f"rename instance {name} to {new_name}"
        with self._write(f"POST instances/{name} rename {new_name}"):
            instance = self.instances.get(name)
            if instance is None:
                raise _not_found(what, "instances")
            if new_name in self.instances:
                raise _error(what, 409, f"Name '{new_name}' already in use")
            if instance["status"] == "Running":
                raise _error(what, 400, "Renaming of running instance not allowed")
            self._injected("rename", name, what)
            self.instances[new_name] = {**self.instances.pop(name), "name": new_name}
            for inst, path in [k for k in self.files if k[0] == name]:
                self.files[(new_name, path)] = self.files.pop((inst, path))

    def move_to_member(self, name: str, member: str, *, timeout: float) -> None:
        what = f"move instance {name} to member {member}"
        raise _error(what, 400, "Server isn't part of a cluster")

    def cancel_operation(self, op_id: str, *, what: str = "cancel operation") -> None:
        with self._write(f"DELETE operations/{op_id}"):
            if self.operations.pop(op_id, None) is None:
                raise _error(what, 404, "Operation not found")

    def start_exec(self, instance: str, body: Mapping[str, Any], *, what: str = "") -> str:
        what = what or f"exec in {instance}"
        with self._write(f"POST instances/{instance}/exec"):
            found = self.instances.get(instance)
            if found is None:
                raise _not_found(what, "instances")
            if found["status"] != "Running":
                raise _error(what, 400, "Instance is not running")
            command = str(body["command"][-1]).removeprefix("exec 2>&1\n")
            self.executed.append((instance, command))
            code, output = self.exec_handler(instance, command)
            op_id = self._operation({"status_code": 200, "err": ""})
            log = f"exec_{op_id}.stdout"
            self.logs[(instance, log)] = output
            self.operations[op_id]["metadata"] = {
                "return": code,
                "output": {"1": f"/1.0/instances/{instance}/logs/{log}"},
            }
            return op_id

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
        with self._write(f"POST instances/{instance}/exec"):
            self._running(instance, what)
            command = tuple(str(arg) for arg in argv)
            self.argv_executed.append((instance, command))
        # Outside the lock: the handler may read and write the fake's files.
        return self.argv_handler(instance, command, dict(environment or {}))

    def poll_operation(self, op_id: str, *, wait: int, what: str = "") -> Json:
        with self._lock:
            if op_id not in self.operations:
                raise _error(what or f"wait for operation {op_id}", 404, "Operation not found")
            return copy.deepcopy(self.operations[op_id])

    def read_log(self, instance: str, name: str, *, offset: int, what: str = "") -> bytes:
        with self._lock:
            return self.logs.get((instance, name), b"")[offset:]

    def file_exists(self, instance: str, path: str) -> bool:
        with self._lock:
            self._running(instance, f"read {path}")
            return path in data.STANDARD_DIRS or (instance, path) in self.files

    def delete_file(self, instance: str, path: str, *, what: str = "") -> None:
        with self._write(f"DELETE instances/{instance}/files {path}"):
            self._running(instance, what)
            if self.files.pop((instance, path), None) is None:
                raise _error(what or f"delete {path}", 404, "not found")

    def push_file(
        self, instance: str, path: str, content: bytes, *, mode: str, uid: int, gid: int, what: str
    ) -> None:
        entry = {"type": "file", "content": content, "mode": mode, "uid": uid, "gid": gid}
        self._push(instance, path, entry, what)

    def make_directory(
        self, instance: str, path: str, *, mode: str, uid: int, gid: int, what: str
    ) -> None:
        self._push(instance, path, {"type": "directory", "mode": mode}, what)

    def close(self) -> None:
        self.closed += 1

    # --- internals -----------------------------------------------------------------------------

    def _check_target(self, target: str | None, what: str) -> None:
        """A single server refuses a ``target`` (``tests.fakes.cluster`` accepts members)."""
        if target is not None:
            raise _error(what, 400, "Target only allowed when clustered")

    @contextmanager
    def _write(self, request: str) -> Iterator[None]:
        with self._lock:
            self.writes.append(request)
            yield

    def _store(self, collection: str, what: str) -> dict[str, Json]:
        stores: dict[str, dict[str, Json]] = {
            "instances": self.instances,
            "profiles": self.profiles,
            "images": self.images,
            "images/aliases": self.aliases,
            "storage-pools": {p["name"]: p for p in self.pools},
        }
        if collection not in stores:
            raise _error(what, 404, f"no collection {collection}")
        return stores[collection]

    def _read(self, collection: str, name: str, recursion: int, what: str = "") -> Json:
        store = self._store(collection, what)
        if name not in store:
            raise _not_found(what, collection)
        found = copy.deepcopy(store[name])
        if collection == "instances":
            network = found.pop("network")
            found["expanded_config"], found["expanded_devices"] = data.expand(found, self.profiles)
            if recursion >= 2:
                found["state"] = {"network": network if found["status"] == "Running" else {}}
        elif collection == "profiles":
            found["used_by"] = [f"/1.0/instances/{n}" for n in self._used_by(name)]
        elif collection == "images":
            found["aliases"] = [
                {"name": a, "description": v["description"]}
                for a, v in sorted(self.aliases.items())
                if v["target"] == name
            ]
        return found

    def _etag(self, collection: str, name: str) -> str:
        item = self._store(collection, "")[name]
        fields = {"instances": _INSTANCE_FIELDS, "profiles": _PROFILE_FIELDS}
        return data.etag(item, fields.get(collection, tuple(sorted(item))))

    def _used_by(self, profile: str) -> tuple[str, ...]:
        return tuple(sorted(n for n, i in self.instances.items() if profile in i["profiles"]))

    def _injected(self, verb: str, name: str, what: str) -> None:
        message = self._failures.pop((verb, name), None)
        if message is not None:
            raise _error(what, 400, message)

    def _operation(self, fields: Json) -> str:
        self._serial += 1
        op_id = f"op-{self.name}-{self._serial}"
        self.operations[op_id] = {"id": op_id, "metadata": {}, **fields}
        return op_id

    def _image(self, fingerprint: str, what: str) -> Json:
        if fingerprint not in self.images:
            raise _error(what, 404, "Image not found")
        return self.images[fingerprint]

    def _create_named(self, store: Mapping[str, Json], kind: str, body: Json, what: str) -> None:
        if body.get("name") in store:
            raise _error(what, 409, f"{kind} '{body.get('name')}' already exists")

    def _create_instance(self, body: Json, what: str) -> None:
        self._create_named(self.instances, "Instance", body, what)
        missing = [p for p in body.get("profiles", ["default"]) if p not in self.profiles]
        if missing:
            raise _error(what, 404, f"Profile '{missing[0]}' not found")
        source = body.get("source") or {}
        if source.get("type") == "migration":
            config = {**dict(body.get("config") or {}), **self._migrated(source, body, what)}
        else:
            base = self._source_image(source, what)
            props = self.images[base]["properties"] if base in self.images else {}
            config = {**dict(body.get("config") or {}), **data.added_on_create(base, props)}
        self.instances[body["name"]] = {
            "name": body["name"],
            "type": body.get("type", "container"),
            "status": "Stopped",
            "description": body.get("description", ""),
            "profiles": list(body.get("profiles", ["default"])),
            "config": config,
            "devices": copy.deepcopy(body.get("devices") or {}),
            "created_at": "",
            "architecture": "x86_64",
            "ephemeral": False,
            "stateful": False,
            "network": {},
        }

    def _migrated(self, source: Mapping[str, Any], body: Json, what: str) -> Json:
        """Pull an instance from a peer's migration operation (its files come along); the
        ``volatile.*`` keys LXD gives the copy."""
        url = str(source.get("operation", "")).removeprefix("https://")
        server, _, op_id = url.partition("/1.0/operations/")
        peer = next((p for p in self.peers.values() if p.address == server), None)
        if peer is None:
            raise _error(what, 400, f"Error transferring instance data: cannot reach {server}")
        self._injected("migrate", str(body.get("name", "")), what)
        with peer._lock:
            op = peer.operations.get(op_id)
            secrets = {k: v for k, v in (op or {}).get("metadata", {}).items() if k != "instance"}
            if (
                op is None
                or source.get("secrets") != secrets
                or source.get("certificate") != peer._server["environment"]["certificate"]
            ):
                raise _error(what, 403, "not authorized")
            del peer.operations[op_id]
            origin = str(op["metadata"]["instance"])
            for (inst, path), entry in list(peer.files.items()):
                if inst == origin:
                    self.files[(str(body["name"]), path)] = copy.deepcopy(entry)
            base = peer.instances[origin]["config"].get("volatile.base_image", "")
        return {"volatile.base_image": base, "volatile.uuid": f"uuid-{op_id}"}

    def _source_image(self, source: Mapping[str, Any], what: str) -> str:
        """The fingerprint of the image a create's ``source`` names."""
        if source.get("mode") == "pull":
            return data.digest(source.get("server"), source.get("alias"))
        if "alias" in source:
            if source["alias"] not in self.aliases:
                raise _error(what, 404, "Image alias not found")
            return str(self.aliases[source["alias"]]["target"])
        return str(self._image(str(source.get("fingerprint")), what)["fingerprint"])

    def _create_alias(self, body: Json, what: str) -> None:
        if body["name"] in self.aliases:
            raise _error(what, 409, "Alias already exists")
        self._image(str(body["target"]), what)
        self.aliases[body["name"]] = {
            "name": body["name"],
            "target": body["target"],
            "description": body.get("description", ""),
        }

    def _create_image(self, body: Json, what: str) -> Json:
        source = body.get("source") or {}
        if source.get("type") == "instance":
            fingerprint, properties = self._published(str(source["name"]), what)
        elif source.get("mode") == "pull":
            fingerprint, properties = self._pulled(source, what)
        else:
            raise _error(what, 400, "the fake LXD creates images by publish or pull only")
        properties.update(body.get("properties") or {})
        self.images[fingerprint] = {
            "fingerprint": fingerprint,
            "properties": properties,
            "public": bool(body.get("public", False)),
            "size": 1,
            "created_at": "",
            "architecture": "x86_64",
        }
        return {"fingerprint": fingerprint}

    def _published(self, name: str, what: str) -> tuple[str, Json]:
        instance = self.instances.get(name)
        if instance is None:
            raise _not_found(what, "instances")
        self._injected("publish", name, what)
        if instance["status"] == "Running":
            raise _error(what, 400, "Cannot publish a running instance")
        files = sorted((p, repr(f)) for (i, p), f in self.files.items() if i == name)
        commands = [c for i, c in self.executed if i == name]
        fingerprint = data.digest(instance["config"].get("volatile.base_image"), files, commands)
        if fingerprint in self.images:
            raise _error(what, 400, f"The image already exists: {fingerprint}")
        return fingerprint, {}

    def _pulled(self, source: Mapping[str, Any], what: str) -> tuple[str, Json]:
        server = str(source.get("server", "")).removeprefix("https://")
        peer = next((p for p in self.peers.values() if p.address == server), None)
        if peer is None:
            raise _error(what, 400, f"cannot reach {server}")
        fingerprint = str(source["fingerprint"])
        with peer._lock:
            token = next(
                (
                    op_id
                    for op_id, op in peer.operations.items()
                    if op["metadata"].get("secret") == source.get("secret")
                    and op["metadata"].get("fingerprint") == fingerprint
                ),
                None,
            )
            if (
                token is None
                or source.get("certificate") != peer._server["environment"]["certificate"]
            ):
                raise _error(what, 403, "not authorized")
            del peer.operations[token]
            properties = dict(peer.images[fingerprint]["properties"])
        return fingerprint, properties

    def _check_deletable(self, name: str, what: str) -> None:
        problem = data.undeletable(self.instances[name], self.profiles)
        if problem:
            raise _error(what, 400, problem)

    def _check_idmap_keys_kept(self, current: Json, body: Mapping[str, Any], what: str) -> None:
        if data.drops_idmap_keys(current, body):
            raise _error(what, 400, "Volatile idmap keys can't be deleted by the user")

    def _check_idmap_delegated(self, name: str, what: str) -> None:
        expanded, _ = data.expand(self.instances[name], self.profiles)
        uids, gids = data.idmap_host_ids(expanded.get("raw.idmap", ""))
        if not data.delegated(uids, self.delegated_uids) or not data.delegated(
            gids, self.delegated_gids
        ):
            raise _error(
                what,
                400,
                f"Failed to run: /usr/bin/lxd forkstart {name} /var/lib/lxd/containers "
                f"/var/log/lxd/{name}/lxc.conf: exit status 1",
            )

    def _running(self, instance: str, what: str) -> None:
        found = self.instances.get(instance)
        if found is None:
            raise _not_found(what, "instances")
        if found["status"] != "Running":
            raise _error(what, 400, "Instance is not running")

    def _push(self, instance: str, path: str, entry: Json, what: str) -> None:
        with self._write(f"POST instances/{instance}/files {path}"):
            self._running(instance, what)
            parent = path.rsplit("/", 1)[0] or "/"
            if parent not in data.STANDARD_DIRS and (instance, parent) not in self.files:
                raise _error(what, 404, f"no such directory {parent}")
            self.files[(instance, path)] = entry


def _error(what: str, status: int, message: str) -> LxdError:
    return LxdError(f"{what}: {message}", status=status, hint=explain(message))


def _not_found(what: str, collection: str) -> LxdError:
    kind = {"instances": "Instance", "profiles": "Profile", "images": "Image"}
    return _error(what, 404, f"{kind.get(collection, 'Object')} not found")
