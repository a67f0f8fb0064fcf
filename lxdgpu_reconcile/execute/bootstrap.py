"""Remote management bootstrap of one host (``host bootstrap``): its LXD listens on https, trusts
the admin's client certificate, and its server certificate is pinned in the fleet's folder.

Does I/O: reads and changes the host's LXD through a ``HostShell`` (``lxc`` on the host, talking
to its own daemon over the unix socket: ``--force-local``), reads the fleet's certificate files
and writes the pinned server certificate (``fileio.write_atomic``); ``check_https`` connects to
the host over pinned https. Deciding what to change (``survey``) is pure.

Three steps, each done only when needed, so a second run changes nothing:

- ``core.https_address``: set when the daemon does not listen where the fleet's endpoint points
  (``listen_for``); an address already set that covers the endpoint (the endpoint's own address,
  or all addresses: ``[::]``, ``0.0.0.0``, empty) on the endpoint's port is left as it is.
- the admin's certificate (``client_cert``; only its certificate block, never a key) is trusted,
  sent on the standard input of ``lxc config trust add -``, never in an argument.
- the server certificate, read from the daemon (``GET /1.0``: ``environment.certificate``), is
  written to ``server_cert``, which must be inside the fleet file's folder; a different
  certificate already there is replaced only when asked (``replace_cert``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from lxdgpu_reconcile import fileio
from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.fleet.models import Fleet, Host
from lxdgpu_reconcile.observe import connect as connecting
from lxdgpu_reconcile.observe.hostshell import CommandResult, HostShell, OpenShell

#: ``lxc`` talking to the host's own daemon (its unix socket, whatever the default remote is).
LXC = ("lxc", "--force-local")
#: The name the admin's certificate is trusted under (``lxc config trust list``).
TRUST_NAME = "lxdgpu-reconcile"
#: LXD's port when ``core.https_address`` names none.
LXD_PORT = 8443
#: Every address of the host, as ``core.https_address`` writes them.
_ALL_ADDRESSES = {"", "::", "0.0.0.0"}
#: Seconds one ``lxc`` command on the host may take.
COMMAND_TIMEOUT = 60.0

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")
#: A listen address given with ``--listen``: ``ADDRESS:PORT``, ``[IPv6]:PORT`` or ``:PORT``.
_LISTEN = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*)(?::[0-9]{1,5})?$")


class BootstrapError(ToolError):
    """``host bootstrap`` cannot go on: what is wrong, and what to do."""


class CertificateMismatch(BootstrapError):
    """``server_cert`` holds another certificate than the host presents."""


@dataclass(frozen=True)
class Cert:
    """One PEM certificate (only its certificate block) and its SHA-256 fingerprint (hex)."""

    pem: str
    fingerprint: str


def cert_in(text: str) -> Cert | None:
    """The first certificate in the PEM ``text`` (anything else in it, a key, is dropped), or
    None when it holds none."""
    match = _PEM_CERT.search(text)
    if match is None:
        return None
    try:
        der = ssl.PEM_cert_to_DER_cert(match.group(0))
    except ValueError:
        return None
    return Cert(pem=ssl.DER_cert_to_PEM_cert(der), fingerprint=hashlib.sha256(der).hexdigest())


# --- what the fleet asks of the host (local files only) -------------------------------------------


@dataclass(frozen=True)
class Target:
    """What the fleet file asks of one host's remote management."""

    host: str
    endpoint: str
    #: The endpoint's host (an address or a name) and port.
    address: str
    port: int
    #: The ``core.https_address`` to set when the daemon does not listen where it must.
    listen: str
    #: ``--listen`` was given: the daemon must listen exactly there.
    exact: bool
    client_cert: Path
    client: Cert
    server_cert: Path
    #: ``server_cert`` as shown to the admin (relative to the fleet's folder).
    server_cert_shown: str


def listen_for(address: str, port: int) -> str:
    """The ``core.https_address`` for an endpoint at ``address``:``port``: the address itself
    when it is an IP address (the daemon listens where the tool connects, and nowhere else),
    every address (``[::]:PORT``, as the lab guide writes it) when it is a name, which may
    resolve otherwise on the host or lead through a NAT."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"[::]:{port}"
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def split_address(value: str) -> tuple[str, int]:
    """``core.https_address`` as (host, port): ``[::]:8443`` -> ("::", 8443); LXD's port when
    none is written."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:  # a bare name, IPv4 or IPv6 address
        host, port = value, ""
    return host, int(port) if port.isdigit() else LXD_PORT


def covers(current: str, address: str, port: int) -> bool:
    """Whether a daemon listening on ``current`` answers at ``address``:``port``."""
    if not current.strip():
        return False
    host, current_port = split_address(current)
    if current_port != port:
        return False
    if host in _ALL_ADDRESSES:
        if host != "0.0.0.0":
            return True
        return _ip_version(address) != 6  # 0.0.0.0 is every IPv4 address, no IPv6 one
    return host.lower() == address.lower() or _same_ip(host, address)


def _ip_version(text: str) -> int | None:
    try:
        return ipaddress.ip_address(text).version
    except ValueError:
        return None


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def target_of(name: str, host: Host, fleet_dir: Path, *, listen: str | None = None) -> Target:
    """What the fleet (loaded, with certificate paths made absolute) asks of host ``name``.

    Reads ``client_cert``. Raises ``BootstrapError``: not an https endpoint, a certificate path
    missing, ``server_cert`` outside the fleet's folder, ``client_cert`` without a certificate.
    """
    where = f"hosts.{name}"
    if not host.endpoint.startswith(connecting.HTTPS_SCHEME):
        raise BootstrapError(
            f"host {name}: endpoint {host.endpoint} is not https: the tool reaches it over its "
            "unix socket, there is no remote management to set up",
            f"set {where}.endpoint to https://ADDRESS:8443, with client_cert, client_key and "
            "server_cert, to manage it remotely",
        )
    parts = urlsplit(host.endpoint)
    try:
        port = parts.port or LXD_PORT
    except ValueError:
        port = -1
    address = parts.hostname or ""
    if not address or not 0 < port < 65536 or parts.path.strip("/"):
        raise BootstrapError(
            f"host {name}: endpoint {host.endpoint} is not https://ADDRESS:PORT",
            f"fix {where}.endpoint, e.g. https://192.0.2.11:8443",
        )
    if listen is not None and not _LISTEN.fullmatch(listen):
        raise BootstrapError(
            f"host bootstrap --listen {listen!r}: not an address LXD listens on",
            "give ADDRESS:PORT, [IPV6]:PORT or [::]:PORT (every address)",
        )
    for field in ("client_cert", "client_key", "server_cert"):
        if getattr(host, field) is None:
            raise BootstrapError(
                f"host {name}: an https endpoint needs {field}, and none is set",
                f"set {where}.{field} (a path relative to the fleet file, e.g. certs/{name}.crt "
                "for server_cert); see docs/fleet-file.md",
            )
    assert host.client_cert is not None and host.server_cert is not None
    server_cert, shown = _inside(name, Path(host.server_cert), fleet_dir)
    client_path = Path(host.client_cert)
    try:
        text = client_path.read_text(errors="replace")
    except OSError as exc:
        raise BootstrapError(
            f"host {name}: cannot read client_cert {client_path}: {fileio.reason_of(exc)}",
            "create the admin's certificate and key once (`openssl req -x509 -newkey ec "
            "-pkeyopt ec_paramgen_curve:secp384r1 -nodes -keyout admin.key -out admin.crt "
            f"-days 3650 -subj /CN=lxdgpu-reconcile`), or fix {where}.client_cert",
        ) from None
    client = cert_in(text)
    if client is None:
        raise BootstrapError(
            f"host {name}: client_cert {client_path} holds no PEM certificate",
            f"point {where}.client_cert at the admin's certificate (BEGIN CERTIFICATE), "
            "not at its key",
        )
    return Target(
        host=name,
        endpoint=host.endpoint,
        address=address,
        port=port,
        listen=listen if listen is not None else listen_for(address, port),
        exact=listen is not None,
        client_cert=client_path,
        client=client,
        server_cert=server_cert,
        server_cert_shown=shown,
    )


def _inside(name: str, path: Path, fleet_dir: Path) -> tuple[Path, str]:
    """``path`` (absolute, symbolic links followed) when it is inside ``fleet_dir``, with how it
    is shown; ``BootstrapError`` otherwise."""
    try:
        folder = fleet_dir.resolve()
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a loop of symbolic links
        raise BootstrapError(
            f"host {name}: server_cert {path} cannot be followed: {exc}",
            f"set hosts.{name}.server_cert to a plain path in the fleet's folder",
        ) from None
    if not resolved.is_relative_to(folder):
        raise BootstrapError(
            f"host {name}: server_cert {path} resolves to {resolved}, outside the fleet file's "
            f"folder {folder}: the tool writes only there",
            f"set hosts.{name}.server_cert to a path relative to the fleet file, e.g. "
            f"certs/{name}.crt",
        )
    if resolved.is_dir():
        raise BootstrapError(
            f"host {name}: server_cert {resolved} is a directory",
            f"name a file: hosts.{name}.server_cert: certs/{name}.crt",
        )
    return resolved, str(resolved.relative_to(folder))


# --- what the host says (read-only) ---------------------------------------------------------------


@dataclass(frozen=True)
class Trusted:
    """The host's trust entry with the admin certificate's fingerprint."""

    name: str
    type: str
    restricted: bool
    projects: tuple[str, ...]


@dataclass(frozen=True)
class ServerView:
    """The host's LXD as its own ``lxc`` sees it."""

    via: str
    https_address: str
    certificate: Cert
    #: The trust entry of the admin's certificate, or None.
    trusted: Trusted | None


def read_server(shell: HostShell, target: Target) -> ServerView:
    """The host's listen address, server certificate and trust of the admin's certificate (two
    read-only ``lxc query`` commands). Raises ``BootstrapError`` or ``HostShellError``."""
    info = _query(shell, target, "/1.0")
    if not isinstance(info, dict) or info.get("auth") != "trusted":
        raise BootstrapError(
            f"host {target.host}: `lxc` over {shell.via} is not trusted by the host's LXD",
            "connect as root (hosts.NAME.ssh: root@SERVER) or as a member of the lxd group",
        )
    config = info.get("config") or {}
    environment = info.get("environment") or {}
    certificate = cert_in(str(environment.get("certificate") or ""))
    if certificate is None:
        raise BootstrapError(
            f"host {target.host}: LXD over {shell.via} shows no server certificate",
            "check the daemon on the host (`lxc info`); then run host bootstrap again",
        )
    entries = _query(shell, target, "/1.0/certificates?recursion=1")
    trusted = None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and entry.get("fingerprint") == target.client.fingerprint:
            trusted = Trusted(
                name=str(entry.get("name") or ""),
                type=str(entry.get("type") or "client"),
                restricted=bool(entry.get("restricted")),
                projects=tuple(str(p) for p in entry.get("projects") or ()),
            )
    return ServerView(
        via=shell.via,
        https_address=str(config.get("core.https_address") or ""),
        certificate=certificate,
        trusted=trusted,
    )


def _query(shell: HostShell, target: Target, path: str) -> Any:
    result = _run(shell, target, [*LXC, "query", path])
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise BootstrapError(
            f"host {target.host}: `lxc query {path}` over {shell.via} printed no JSON",
            "run it on the host to see what it prints; is `lxc` LXD's client there?",
        ) from None


def _run(
    shell: HostShell, target: Target, argv: Sequence[str], *, stdin: bytes = b""
) -> CommandResult:
    result = shell.run(argv, stdin=stdin, timeout=COMMAND_TIMEOUT)
    if not result.ok:
        raise command_failed(target.host, shell.via, result)
    return result


def command_failed(host: str, via: str, result: CommandResult) -> BootstrapError:
    """A failed ``lxc`` command on the host, with what to do about it."""
    text = result.error_text()
    shown = " ".join(result.argv[:4]) + (" ..." if len(result.argv) > 4 else "")
    lowered = text.lower()
    if result.returncode == 127 or ("not found" in lowered and "lxc" in lowered):
        hint = (
            "install LXD on the host (Debian: `apt-get install lxd lxd-client`; Ubuntu: "
            "`snap install lxd`), and make sure `lxc` is on the PATH of non-interactive "
            "ssh sessions (/snap/bin for the snap)"
        )
    elif "unix.socket" in lowered and ("no such file" in lowered or "refused" in lowered):
        hint = (
            "LXD is not running on the host: start it (`systemctl start lxd`, or "
            "`snap start lxd`), then `lxd waitready`; a fresh install needs `lxd init` first"
        )
    elif "permission denied" in lowered:
        hint = "connect as root (hosts.NAME.ssh: root@SERVER) or as a member of the lxd group"
    else:
        hint = f"run the same command on the host to see more: `{shown}`"
    return BootstrapError(f"host {host}: `{shown}` over {via} failed: {text}", hint)


# --- what to change (pure) ------------------------------------------------------------------------


FileState = Literal["absent", "same", "different", "not a certificate"]


@dataclass(frozen=True)
class Survey:
    """What bootstrapping one host changes, decided from the fleet and the host's answers."""

    target: Target
    server: ServerView
    #: The new ``core.https_address``, or None when it stays.
    new_address: str | None
    #: What ``server_cert`` holds now, and the certificate in it when it holds one.
    file_state: FileState
    file_cert: Cert | None

    @property
    def trust(self) -> bool:
        """Whether the admin's certificate is to be trusted."""
        return self.server.trusted is None

    @property
    def write_cert(self) -> bool:
        return self.file_state != "same"

    @property
    def changes(self) -> bool:
        return self.new_address is not None or self.trust or self.write_cert


def pinned_file(path: Path) -> tuple[FileState, Cert | None]:
    """What the pinned certificate file at ``path`` holds (before comparing it with the host's)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "absent", None
    except OSError:
        return "not a certificate", None
    cert = cert_in(text)
    return ("different", cert) if cert is not None else ("not a certificate", None)


def survey(
    target: Target, server: ServerView, file: tuple[FileState, Cert | None], *, replace: bool
) -> Survey:
    """What to change on the host and in ``server_cert``. Raises ``BootstrapError``: the admin's
    certificate is trusted as another type than a client, or ``server_cert`` holds another
    certificate and ``replace`` is False (``CertificateMismatch``)."""
    state, cert = file
    if cert is not None and cert.fingerprint == server.certificate.fingerprint:
        state = "same"
    if state != "same" and state != "absent" and not replace:
        held = f"SHA-256 {cert.fingerprint}" if cert is not None else "no certificate"
        raise CertificateMismatch(
            f"host {target.host}: {target.server_cert_shown} holds {held}; the host presents "
            f"SHA-256 {server.certificate.fingerprint}: nothing was changed",
            "if the server was reinstalled or its certificate renewed, check the new fingerprint "
            "on its console (`lxc info | grep certificate_fingerprint`), then run "
            f"`lxdgpu-reconcile host bootstrap {target.host} --replace-cert`",
        )
    if server.trusted is not None and server.trusted.type != "client":
        raise BootstrapError(
            f"host {target.host}: the admin's certificate {target.client_cert} is trusted as a "
            f"{server.trusted.type} certificate, which cannot manage LXD",
            f"on the host: `lxc config trust remove {target.client.fingerprint[:12]}`, then run "
            "host bootstrap again",
        )
    current = server.https_address
    if target.exact:
        new = None if current == target.listen else target.listen
    else:
        new = None if covers(current, target.address, target.port) else target.listen
    return Survey(target=target, server=server, new_address=new, file_state=state, file_cert=cert)


# --- the changes ----------------------------------------------------------------------------------


def carry_out(shell: HostShell, plan: Survey) -> tuple[str, ...]:
    """Make the changes of ``plan``, in order: listen, trust, pin. Returns what was done, one
    line each. Raises ``BootstrapError``, ``HostShellError`` or ``fileio.FileWriteError``; what
    was done before the failure stays done (a second run does the rest)."""
    target = plan.target
    done = []
    if plan.new_address is not None:
        _run(shell, target, [*LXC, "config", "set", "core.https_address", plan.new_address])
        done.append(f"core.https_address set to {plan.new_address}")
    if plan.trust:
        # Only the certificate block of client_cert, on standard input: never a key, never
        # in an argument.
        _run(
            shell,
            target,
            [*LXC, "config", "trust", "add", "--name", TRUST_NAME, "-"],
            stdin=target.client.pem.encode(),
        )
        done.append(f"trusted the admin's certificate {target.client.fingerprint}")
    if plan.write_cert:
        fileio.write_atomic(target.server_cert, plan.server.certificate.pem)
        done.append(f"wrote {target.server_cert_shown} ({plan.server.certificate.fingerprint})")
    return tuple(done)


def check_https(name: str, host: Host, *, timeout: float) -> str:
    """Connect to ``host`` over https with the client certificate and the pinned server
    certificate, as ``plan`` does; the server's version. Raises ``HostConnectError``."""
    api = connecting.connect(name, host, timeout=timeout)
    try:
        info = api.host_info
    finally:
        api.close()
    environment = info.get("environment") or {}
    return str(environment.get("server_version") or "")


# --- one host, start to end -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """One host's bootstrap, surveyed and not yet carried out."""

    host: Host
    shell: HostShell
    survey: Survey


def survey_host(
    fleet: Fleet,
    fleet_path: Path,
    name: str,
    opener: OpenShell,
    *,
    listen: str | None = None,
    replace: bool = False,
) -> Pending:
    """What bootstrapping host ``name`` of ``fleet`` (read from ``fleet_path``) changes: reads
    the host through the shell ``opener`` gives and the pinned file; changes nothing. Raises
    ``BootstrapError`` or ``HostShellError``."""
    host = fleet.hosts.get(name)
    if host is None:
        raise BootstrapError(
            f"{fleet_path} declares no host {name!r} (it has: {', '.join(fleet.hosts)})",
            "name a host of the fleet file (`hosts:`), or give the fleet file with -f FLEET",
        )
    target = target_of(name, host, fleet_path.parent, listen=listen)
    shell = opener(name)
    if shell is None:
        raise BootstrapError(
            f"host {name}: the fleet file says no way to reach the server's own system",
            f"set hosts.{name}.ssh: root@SERVER (OpenSSH, with your keys), or run "
            f"`lxdgpu-reconcile host bootstrap {name} --local` on the server itself",
        )
    server = read_server(shell, target)
    plan = survey(target, server, pinned_file(target.server_cert), replace=replace)
    return Pending(host=host, shell=shell, survey=plan)


def finish(pending: Pending, *, timeout: float) -> tuple[tuple[str, ...], str]:
    """Carry out ``pending`` and check the result over pinned https: what was done (one line
    each) and the server's version. Raises ``BootstrapError`` (also when the check fails),
    ``HostShellError`` or ``fileio.FileWriteError``."""
    target = pending.survey.target
    done = carry_out(pending.shell, pending.survey)
    try:
        version = check_https(target.host, pending.host, timeout=timeout)
    except connecting.HostConnectError as exc:
        made = "the changes are made, but " if done else ""
        raise BootstrapError(
            f"host {target.host}: {made}the check over https failed: "
            + exc.message.removeprefix(f"host {target.host}: "),
            f"{exc.hint}; if the host listens on port {target.port} (`ss -ltn` there), a "
            f"firewall may keep this machine from reaching it; then run host bootstrap again",
        ) from None
    return done, version
