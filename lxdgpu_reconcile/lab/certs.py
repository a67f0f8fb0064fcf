"""The tool's client certificate and an ``lxc`` configuration that reaches every lab host.

Does I/O (writes files under ``<lab>/lxc``). The certificate is made with ``cryptography``; the
``lxc`` configuration directory (``LXD_CONF``) holds the same certificate plus every lab host as
an https remote with its server certificate pinned, so ``lxc list server02:`` works as it would
against a real fleet.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lxdgpu_reconcile import fileio

CERT_NAME = "client.crt"
KEY_NAME = "client.key"
#: Common name of the lab's client certificate, also its name in each daemon's trust store.
CLIENT_NAME = "lxdgpu-reconcile-lab"


def ensure_client_cert(conf_dir: Path) -> tuple[Path, Path]:
    """``(cert, key)`` in ``conf_dir``, made once (EC P-384, valid ten years)."""
    cert_path, key_path = conf_dir / CERT_NAME, conf_dir / KEY_NAME
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    conf_dir.mkdir(parents=True, exist_ok=True)
    write_self_signed(cert_path, key_path, name=CLIENT_NAME, days=3650)
    return cert_path, key_path


def write_self_signed(cert_path: Path, key_path: Path, *, name: str, days: int) -> None:
    """A self-signed EC P-384 client certificate for ``name``; the key is written mode 0600."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(key, hashes.SHA384())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    fileio.write_atomic(key_path, key_bytes, mode=0o600)
    fileio.write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 fingerprint of a PEM certificate, as LXD lists it."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.fingerprint(hashes.SHA256()).hex()


def der_base64(cert_pem: bytes) -> str:
    """The certificate body as LXD's ``POST /1.0/certificates`` wants it."""
    lines = cert_pem.decode().strip().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))


def lxc_config(endpoints: Mapping[str, str]) -> str:
    """An ``lxc`` ``config.yml``: the local daemon of ``LXD_DIR`` plus each host by https."""
    remotes: dict[str, dict[str, object]] = {
        "local": {"addr": "unix://", "public": False},
    }
    for name, endpoint in sorted(endpoints.items()):
        remotes[name] = {
            "addr": endpoint,
            "auth_type": "tls",
            "protocol": "lxd",
            "public": False,
        }
    return yaml.safe_dump({"default-remote": "local", "remotes": remotes}, sort_keys=False)


def write_lxc_config(
    conf_dir: Path, endpoints: Mapping[str, str], server_certs: Mapping[str, Path]
) -> None:
    """Write ``config.yml`` and pin each host's server certificate in ``servercerts/``."""
    certs = conf_dir / "servercerts"
    certs.mkdir(parents=True, exist_ok=True)
    for name, path in server_certs.items():
        if path.exists():
            fileio.write_atomic(certs / f"{name}.crt", path.read_bytes())
    fileio.write_atomic(conf_dir / "config.yml", lxc_config(endpoints))
