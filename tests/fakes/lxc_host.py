"""``FakeLxcHost``: a ``HostShell`` whose ``lxc --force-local`` commands act on an in-memory LXD,
as LXD 5.0.2's client does (checked by hand against a real daemon): ``query /1.0`` and
``query /1.0/certificates?recursion=1`` print JSON, ``config set`` changes the server's config,
``config trust add --name NAME -`` reads one PEM certificate from standard input and refuses one
already trusted. Every command is recorded with its input, for tests to inspect."""

from __future__ import annotations

import hashlib
import json
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from lxdgpu_reconcile.observe.hostshell import CommandResult

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def fingerprint_of(pem: str) -> str:
    match = _PEM.search(pem)
    if match is None:
        raise ValueError("no certificate")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(match.group(0))).hexdigest()


@dataclass
class Call:
    argv: tuple[str, ...]
    stdin: bytes


@dataclass
class FakeLxcHost:
    """One host's LXD, as ``lxc`` on that host sees it over its unix socket."""

    server_cert: str
    https_address: str = ""
    #: fingerprint -> trust entry (without the certificate).
    trusted: dict[str, dict[str, object]] = field(default_factory=dict)
    via: str = "ssh root@fake"
    calls: list[Call] = field(default_factory=list)
    #: A command whose argv starts with a key fails with that (exit status, stderr).
    failures: dict[tuple[str, ...], tuple[int, str]] = field(default_factory=dict)

    def trust(self, pem: str, *, name: str = "client", type: str = "client") -> None:
        self.trusted[fingerprint_of(pem)] = {
            "name": name,
            "type": type,
            "restricted": False,
            "projects": [],
        }

    @property
    def writes(self) -> list[Call]:
        """The commands that change something."""
        return [c for c in self.calls if "query" not in c.argv]

    def run(
        self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60.0
    ) -> CommandResult:
        argv = tuple(argv)
        self.calls.append(Call(argv, stdin))
        for start, (status, text) in self.failures.items():
            if argv[: len(start)] == start:
                return self._result(argv, status, err=text)
        if argv[:2] != ("lxc", "--force-local"):
            return self._result(argv, 127, err=f"sh: 1: {argv[0]}: not found")
        rest = argv[2:]
        if rest == ("query", "/1.0"):
            config = {"core.https_address": self.https_address} if self.https_address else {}
            info = {
                "auth": "trusted",
                "config": config,
                "environment": {
                    "certificate": self.server_cert,
                    "certificate_fingerprint": fingerprint_of(self.server_cert),
                    "server_version": "5.0.2",
                },
            }
            return self._result(argv, 0, out=json.dumps(info, indent="\t"))
        if rest == ("query", "/1.0/certificates?recursion=1"):
            entries = [{"fingerprint": fp, **entry} for fp, entry in self.trusted.items()]
            return self._result(argv, 0, out=json.dumps(entries, indent="\t"))
        if rest[:3] == ("config", "set", "core.https_address") and len(rest) == 4:
            self.https_address = rest[3]
            return self._result(argv, 0)
        if rest[:3] == ("config", "trust", "add") and rest[-1] == "-":
            try:
                fp = fingerprint_of(stdin.decode())
            except ValueError:
                return self._result(argv, 1, err="Error: Invalid certificate file")
            if fp in self.trusted:
                return self._result(argv, 1, err="Error: Certificate already in trust store")
            name = rest[rest.index("--name") + 1] if "--name" in rest else "stdin"
            self.trusted[fp] = {"name": name, "type": "client", "restricted": False, "projects": []}
            return self._result(argv, 0)
        return self._result(argv, 1, err=f"Error: unknown command {' '.join(rest)}")

    @staticmethod
    def _result(
        argv: tuple[str, ...], status: int, *, out: str = "", err: str = ""
    ) -> CommandResult:
        return CommandResult(argv=argv, returncode=status, stdout=out.encode(), stderr=err.encode())
