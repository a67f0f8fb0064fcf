"""Connections to LXD hosts: the only module that builds pylxd clients.

Does I/O. ``connect`` opens one host's API (``unix://`` socket, or https with the tool's client
certificate and the host's pinned server certificate), checks that the host trusts the tool and
returns it as an ``observe.lxdapi.PylxdApi``.
Every way that can fail becomes a ``HostConnectError`` that says what went wrong and what to do;
``classify`` does the same for errors raised later by requests on an open client (also when
``PylxdApi`` wrapped them into an ``LxdError``), so the readers report failures in the same terms.

Pinning holds even when ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` are set: every session is built
with ``trust_env=False``, so requests never swaps the pinned certificate for the CA bundle (and
ignores ``*_PROXY`` and ``.netrc``, which an LXD connection does not want either). An https
session checks the server's certificate by its SHA-256 fingerprint only (``PinnedAdapter``,
computed once per connection), with a TLS context of its own that never loads the system's CA
store: a CA plays no part in pinning, and loading it cost every connection that time.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pylxd
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pylxd import exceptions as lxd_exceptions
from pylxd.client import get_session_for_url
from urllib3.util.ssl_ import create_urllib3_context

from lxdgpu_reconcile.errors import ToolError
from lxdgpu_reconcile.fleet.models import Host
from lxdgpu_reconcile.observe.lxdapi import PylxdApi
from lxdgpu_reconcile.observe.lxderrors import LxdError
from lxdgpu_reconcile.state import HostError, HostErrorKind

UNIX_SCHEME = "unix://"
HTTPS_SCHEME = "https://"

_HINT_START_LXD = (
    "is LXD running there? on the host: `lxd waitready`; "
    "when rehearsing, run `lxdgpu-reconcile lab up`"
)


class HostConnectError(ToolError):
    """A host could not be used: what kind of failure, what happened and what to do next."""

    def __init__(self, kind: HostErrorKind, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.kind = kind

    def to_host_error(self) -> HostError:
        """The same failure as snapshot data."""
        return HostError(kind=self.kind, message=self.message, hint=self.hint)


class RequestCounter:
    """Counts the HTTP requests sent to each host, for tests and measurements.

    Pass one to ``connect`` (or to the ``observe`` functions, which pass it on); every request a
    client built with it receives an answer for is recorded under the host's fleet name.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[tuple[str, str]] = []

    def hook(self, host: str) -> Callable[..., None]:
        """A requests response hook that records each answered request under ``host``."""

        def record(response: requests.Response, *args: object, **kwargs: object) -> None:
            request = response.request
            line = f"{request.method} {urlsplit(request.url or '').path}"
            query = urlsplit(request.url or "").query
            with self._lock:
                self._requests.append((host, f"{line}?{query}" if query else line))

        return record

    def count(self, host: str | None = None) -> int:
        """Requests recorded for ``host``, or for every host."""
        with self._lock:
            return sum(1 for name, _ in self._requests if host is None or name == host)

    def per_host(self) -> dict[str, int]:
        """Requests recorded, by host."""
        with self._lock:
            return dict(Counter(name for name, _ in self._requests))

    def requests(self, host: str) -> list[str]:
        """The requests recorded for ``host``, in order, as ``METHOD /path?query``."""
        with self._lock:
            return [line for name, line in self._requests if name == host]

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()


def socket_path(endpoint: str) -> str:
    """The socket path of a ``unix:///path/to/unix.socket`` endpoint."""
    return endpoint[len(UNIX_SCHEME) :]


def check_config(name: str, host: Host) -> HostConnectError | None:
    """What is wrong with how the fleet file says to reach ``host``, or None.

    Looks only at local files: the endpoint's scheme, and for https the three certificate files
    (present, readable, and a PEM certificate where one is expected).
    """
    if host.endpoint.startswith(UNIX_SCHEME):
        if not socket_path(host.endpoint).startswith("/"):
            return HostConnectError(
                HostErrorKind.CONFIG,
                f"host {name}: endpoint {host.endpoint} has no absolute socket path",
                "write it as unix:///var/lib/lxd/unix.socket (three slashes)",
            )
        return None
    if not host.endpoint.startswith(HTTPS_SCHEME):
        return HostConnectError(
            HostErrorKind.CONFIG,
            f"host {name}: endpoint {host.endpoint!r} is neither https:// nor unix://",
            "write https://ADDRESS:8443 for a remote host, or unix:///var/lib/lxd/unix.socket",
        )
    hints = {
        "client_cert": "the tool's certificate that every host trusts; create it with "
        "`openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -nodes "
        "-keyout admin.key -out admin.crt -days 3650 -subj /CN=lxdgpu-reconcile`",
        "client_key": "the private key of client_cert",
        "server_cert": f"`lxdgpu-reconcile host bootstrap {name}` writes it over SSH, or "
        "copy the host's /var/lib/lxd/server.crt here after checking its "
        "fingerprint (`lxc info | grep certificate_fingerprint` on the host)",
    }
    for field, hint in hints.items():
        value: str | None = getattr(host, field)
        if value is None:
            return HostConnectError(
                HostErrorKind.CONFIG,
                f"host {name}: an https endpoint needs {field}, and none is set",
                f"set hosts.{name}.{field}: {hint}",
            )
        path = Path(value)
        if not path.is_file():
            return HostConnectError(
                HostErrorKind.CONFIG,
                f"host {name}: {field} {path} does not exist",
                f"fix hosts.{name}.{field}, or put the file there: {hint}",
            )
        if not os.access(path, os.R_OK):
            return HostConnectError(
                HostErrorKind.CONFIG,
                f"host {name}: {field} {path} is not readable",
                "run as a user who can read it, or fix its permissions",
            )
    assert host.server_cert is not None
    if _fingerprint(Path(host.server_cert)) is None:
        return HostConnectError(
            HostErrorKind.CONFIG,
            f"host {name}: server_cert {host.server_cert} is not a PEM certificate",
            hints["server_cert"],
        )
    return None


def connect(
    name: str, host: Host, *, timeout: float, counter: RequestCounter | None = None
) -> PylxdApi:
    """The API of ``host``, over a pylxd client that the host trusts.

    Sends one request (``GET /1.0``, which pylxd makes to open the client); ``timeout`` applies to
    each request the client sends. Raises ``HostConnectError``.

    A cluster host's ``cluster.endpoints`` (other members) are tried in order when the endpoint
    does not answer (unreachable or timed out); any other failure is reported at once, and when
    none answers, the endpoint's own failure is.
    """
    fallbacks = host.cluster.endpoints if host.cluster is not None else ()
    try:
        return _connect_one(name, host, timeout=timeout, counter=counter)
    except HostConnectError as exc:
        first = exc
        if exc.kind not in (HostErrorKind.UNREACHABLE, HostErrorKind.TIMEOUT):
            raise
    for endpoint in fallbacks:
        other = host.model_copy(update={"endpoint": endpoint})
        try:
            return _connect_one(name, other, timeout=timeout, counter=counter)
        except HostConnectError as exc:
            if exc.kind not in (HostErrorKind.UNREACHABLE, HostErrorKind.TIMEOUT):
                raise
    raise first


def _connect_one(
    name: str, host: Host, *, timeout: float, counter: RequestCounter | None
) -> PylxdApi:
    problem = check_config(name, host)
    if problem is not None:
        raise problem
    if host.endpoint.startswith(UNIX_SCHEME):
        path = socket_path(host.endpoint)
        if not os.path.exists(path):
            raise HostConnectError(
                HostErrorKind.UNREACHABLE,
                f"host {name}: no LXD socket at {path}",
                _HINT_START_LXD,
            )
        url = "http+unix://" + quote(path, safe="")
        session = get_session_for_url(url)
        cert: tuple[str, str] | None = None
        verify: str | bool = True
    else:
        assert host.client_cert and host.client_key and host.server_cert
        url = host.endpoint.rstrip("/")
        cert = (host.client_cert, host.client_key)
        verify = host.server_cert
        session = requests.Session()
        session.cert, session.verify = cert, verify
        # check_config has read the certificate: it is a PEM certificate.
        session.mount(url, PinnedAdapter(_fingerprint(Path(verify)) or ""))
    # Without this, requests replaces ``session.verify`` with REQUESTS_CA_BUNDLE on every request
    # and the adapter then pins the first certificate of the CA bundle instead of server_cert.
    session.trust_env = False
    if counter is not None:
        session.hooks["response"].append(counter.hook(name))
    try:
        client = pylxd.Client(
            endpoint=url, session=session, cert=cert, verify=verify, timeout=timeout
        )
    except Exception as exc:
        raise classify(name, host, exc, timeout=timeout) from exc
    if not client.trusted:
        raise _untrusted(name, host)
    return PylxdApi(client)


class PinnedAdapter(requests.adapters.HTTPAdapter):
    """https to one LXD server, trusted by the SHA-256 ``fingerprint`` of its certificate alone.

    Every connection asserts the fingerprint (urllib3's ``assert_fingerprint``: a different
    certificate fails the TLS handshake's check with "Fingerprints did not match"). The TLS
    context is the adapter's own, with no CA store: urllib3 loads the system's CA certificates
    into every context it makes itself, which pinning does not use.
    """

    def __init__(self, fingerprint: str) -> None:
        if not fingerprint:
            raise ValueError("a pinned connection needs the server certificate's fingerprint")
        self.fingerprint = fingerprint
        self.context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.context
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        conn.assert_fingerprint = self.fingerprint
        # No CA verification (the fingerprint is the check); the client certificate as given.
        super().cert_verify(conn, url, False, cert)  # type: ignore[no-untyped-call]


def classify(name: str, host: Host, exc: BaseException, *, timeout: float) -> HostConnectError:
    """``exc``, raised while talking to ``host``, as a ``HostConnectError``.

    Understands pylxd's and requests' exceptions, including the ones pylxd wraps into
    ``ClientConnectionFailed``; anything else becomes ``HostErrorKind.ERROR`` with its text.
    """
    if isinstance(exc, HostConnectError):
        return exc
    cause = _underlying(exc)
    if isinstance(cause, requests.exceptions.SSLError):
        return _tls_error(name, host, str(cause))
    if isinstance(cause, requests.exceptions.Timeout):
        return timed_out(name, host, timeout)
    if isinstance(cause, requests.exceptions.ConnectionError):
        reason = _os_reason(str(cause))
        if "Permission denied" in reason and host.endpoint.startswith(UNIX_SCHEME):
            return HostConnectError(
                HostErrorKind.UNTRUSTED,
                f"host {name}: not allowed to use the socket {socket_path(host.endpoint)}",
                "run as root, or as a member of the group that owns the socket",
            )
        return HostConnectError(
            HostErrorKind.UNREACHABLE,
            f"host {name}: cannot connect to {_where(host)}: {reason}",
            _HINT_START_LXD,
        )
    if isinstance(cause, lxd_exceptions.LXDAPIException):
        status = cause.response.status_code
        if status == 403:
            return _untrusted(name, host)
        return HostConnectError(
            HostErrorKind.ERROR,
            f"host {name}: LXD answered {status}: {cause}",
            "see the daemon's log on the host (`lxc monitor --type=logging`, or lxd.log)",
        )
    return HostConnectError(
        HostErrorKind.ERROR,
        f"host {name}: {type(cause).__name__}: {cause}",
        "see the daemon's log on the host; run again with a longer --timeout if it is busy",
    )


def _underlying(exc: BaseException) -> BaseException:
    """The requests exception behind pylxd's ``ClientConnectionFailed`` or behind an
    ``LxdError``, or ``exc`` itself."""
    if isinstance(exc, LxdError) and exc.cause is not None:
        return _underlying(exc.cause)
    if isinstance(exc, lxd_exceptions.ClientConnectionFailed):
        context: BaseException | None = exc.__cause__ or exc.__context__
        if context is not None:
            return context
    return exc


def _untrusted(name: str, host: Host) -> HostConnectError:
    cert = Path(host.client_cert).name if host.client_cert else "admin.crt"
    return HostConnectError(
        HostErrorKind.UNTRUSTED,
        f"host {name}: LXD does not trust the tool's certificate"
        + (f" {host.client_cert}" if host.client_cert else ""),
        f"trust the tool's certificate on the host: copy it there and run "
        f"`lxc config trust add {cert}`, or run `lxdgpu-reconcile host bootstrap {name}` here",
    )


def timed_out(name: str, host: Host, timeout: float) -> HostConnectError:
    """The failure of ``host`` not answering within ``timeout`` seconds."""
    return HostConnectError(
        HostErrorKind.TIMEOUT,
        f"host {name}: no answer from {_where(host)} within {timeout:g} s",
        "check the host's load and the network to it, or allow more time with --timeout",
    )


def _tls_error(name: str, host: Host, text: str) -> HostConnectError:
    mismatch = re.search(r'Fingerprints did not match\. Expected "(\w+)", got "(\w+)"', text)
    if mismatch:
        return HostConnectError(
            HostErrorKind.CERTIFICATE,
            f"host {name}: {_where(host)} presents a certificate with SHA-256 fingerprint "
            f"{mismatch.group(2)}, not the pinned {host.server_cert} ({mismatch.group(1)})",
            "the host presents a different certificate than the pinned one: check server_cert, "
            "or re-pin after verifying it (`lxc info | grep certificate_fingerprint` on the host)",
        )
    if "KEY_VALUES_MISMATCH" in text or "PEM lib" in text:
        return HostConnectError(
            HostErrorKind.CONFIG,
            f"host {name}: client_cert {host.client_cert} and client_key {host.client_key} "
            "do not form a usable key pair",
            "point client_key at the key that belongs to client_cert",
        )
    return HostConnectError(
        HostErrorKind.CERTIFICATE,
        f"host {name}: TLS with {_where(host)} failed: {_ssl_reason(text)}",
        "check that the endpoint is the host's LXD https listener (core.https_address) and "
        "that server_cert is that host's certificate",
    )


def _where(host: Host) -> str:
    if host.endpoint.startswith(UNIX_SCHEME):
        return socket_path(host.endpoint)
    return urlsplit(host.endpoint).netloc or host.endpoint


def _os_reason(text: str) -> str:
    """The operating system's reason in a requests/urllib3 error text, e.g. "Connection refused"."""
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip()
    if "timed out" in text:
        return "timed out"
    return text


def _ssl_reason(text: str) -> str:
    match = re.search(r"\[SSL[^\]]*\] ([^'\")(]+)", text)
    return match.group(1).strip() if match else text


def _fingerprint(path: Path) -> str | None:
    """SHA-256 fingerprint of the PEM certificate at ``path``, or None when it is not one."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.fingerprint(hashes.SHA256()).hex()
