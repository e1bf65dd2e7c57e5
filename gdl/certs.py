"""The master's own CA and each environment's ``tls=auto`` certificate.

One CA per master, made on first use under ``<state_dir>/tls/ca`` (``ca.crt``,
and ``ca.key`` readable by root only, in a root-only directory, like the VRRP
secret).  Each environment's certificate and key are kept under
``<state_dir>/tls/envs/<app>-<env>.{crt,key}``; they name the environment's
addresses (the VIP and the floating IP) and are made again when those change,
when the certificate nears its expiry, or when the CA that signed it is gone.
ECDSA P-256 keys, SHA-256 signatures, through the ``cryptography`` package
Salt itself depends on.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gdl import naming
from gdl.errors import GdlError

CA_DAYS = 3650
CERT_DAYS = 365  # under the 398 days browsers accept
RENEW_DAYS = 30  # a build makes an environment's certificate again this close to its expiry


@dataclass(frozen=True)
class PemPair:
    """A certificate (chain, leaf first) and its private key, in PEM."""

    chain: list[x509.Certificate]
    key_pem: str

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def pem(self) -> str:
        """Certificate chain and key in one PEM, as haproxy's ``crt`` reads it."""
        certs = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in self.chain)
        return certs + self.key_pem


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def tls_dir(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / "tls"


def ca_paths(state_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(certificate, key) of the master's CA."""
    ca_dir = tls_dir(state_dir) / "ca"
    return ca_dir / "ca.crt", ca_dir / "ca.key"


def cert_paths(state_dir: str | os.PathLike[str], app: str, env: str) -> tuple[Path, Path]:
    """(certificate, key) of an environment's tls=auto certificate."""
    base = tls_dir(state_dir) / "envs" / naming.env_id(app, env)
    return base.with_suffix(".crt"), base.with_suffix(".key")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    tmp.replace(path)


def ensure_ca(
    state_dir: str | os.PathLike[str], now: datetime.datetime | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The master's CA, made on first use.

    Two builds may meet here at once: each makes a CA in a directory of its
    own and renames it into place; the one that finds the place taken keeps
    the other's, so every certificate is signed by the CA on disk.
    """
    cert_path, key_path = ca_paths(state_dir)
    if not cert_path.exists():
        parent = tls_dir(state_dir)
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ca-", dir=parent))
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(staging / key_path.name, _key_pem(key))
        cert = _make_ca_cert(key, now or now_utc())
        (staging / cert_path.name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(staging / cert_path.name, 0o644)
        try:
            staging.rename(cert_path.parent)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another build made it first
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise GdlError(f"{key_path} is not the CA key gdl makes", f"remove {cert_path.parent}")
    return cert, key


def _make_ca_cert(key: ec.EllipticCurvePrivateKey, now: datetime.datetime) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gdl"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"gdl CA {socket.gethostname()}"[:64]),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def ip_sans(cert: x509.Certificate) -> set[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(address) for address in names.get_values_for_type(x509.IPAddress)}


def _still_good(
    cert: x509.Certificate,
    ca: x509.Certificate,
    addresses: set[str],
    now: datetime.datetime,
) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    renew_at = cert.not_valid_after_utc - datetime.timedelta(days=RENEW_DAYS)
    return ip_sans(cert) == addresses and renew_at > now


def ensure_env_cert(
    state_dir: str | os.PathLike[str],
    app: str,
    env: str,
    addresses: list[str],
    now: datetime.datetime | None = None,
) -> PemPair:
    """The environment's tls=auto certificate for ``addresses``: kept while it fits, else made.

    A certificate is made again when the addresses change, when it is
    ``RENEW_DAYS`` from expiry, or when the CA that signed it is gone.
    """
    now = now or now_utc()
    wanted = {str(ipaddress.ip_address(a)) for a in addresses if a}
    ca_cert, ca_key = ensure_ca(state_dir, now)
    cert_path, key_path = cert_paths(state_dir, app, env)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key_pem = key_path.read_text()
        if _still_good(cert, ca_cert, wanted, now):
            return PemPair([cert], key_pem)
    except (OSError, ValueError):
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _make_env_cert(naming.env_id(app, env), sorted(wanted), key, ca_cert, ca_key, now)
    _write_private(key_path, _key_pem(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return PemPair([cert], _key_pem(key).decode())


def _make_env_cert(
    env_id: str,
    addresses: list[str],
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
) -> x509.Certificate:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gdl"),
                    x509.NameAttribute(NameOID.COMMON_NAME, env_id),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def remove_env_cert(state_dir: str | os.PathLike[str], app: str, env: str) -> bool:
    """Forget an environment's tls=auto certificate (destroy); True when there was one."""
    found = False
    for path in cert_paths(state_dir, app, env):
        if path.exists():
            path.unlink()
            found = True
    return found
