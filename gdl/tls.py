"""HTTPS at the VIP: the build's TLS arguments, the master's CA and each environment's certificate.

``tls=auto`` gives the environment a certificate signed by the master's own CA,
made on first use under ``<state_dir>/tls/ca`` (its key root-only, like the VRRP
secret) and naming the VIP's address and the floating IP as its subject
alternative names.  ``tls_cert=PATH tls_key=PATH`` uses the operator's PEM files
on the master instead; they are checked before anything is made (readable, the
key matches the certificate, not expired) and read again each time the pillar
is written, so replacing them and re-running the build renews the certificate.
The choice is kept in the environment's record (``tls``, ``tls_cert``,
``tls_key``, ``http``); the certificate and key reach the load balancers in
their own pillar file (:mod:`gdl.pillar`).  docs/https.md is the user's page.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gdl import naming
from gdl.envstore import EnvRecord
from gdl.errors import GdlError, InvalidRequest
from gdl.spec import shown

# tls=: how the environment's VIP speaks HTTPS ("files": the operator's PEM files).
MODES = ("auto", "files", "off")
# http=: what port 80 does when TLS is on.
HTTP_MODES = ("redirect", "allow")
CA_DAYS = 3650
CERT_DAYS = 365  # under the 398 days browsers accept
RENEW_DAYS = 30  # a build re-makes an auto certificate this close to its expiry
MAX_PEM_BYTES = 1 << 20


@dataclass(frozen=True)
class TlsRequest:
    """The TLS arguments of one build; None keeps what the environment's record has."""

    mode: str | None = None
    cert: str | None = None
    key: str | None = None
    http: str | None = None


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


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _missing(value: Any) -> bool:
    return value is None or value == ""


def parse_mode(value: Any) -> str | None:
    """tls=auto|off (YAML reads off as False and on/true as True); None when not given."""
    if _missing(value):
        return None
    if value is True or value == "auto":
        return "auto"
    if value is False or value in ("off", "none"):
        return "off"
    raise InvalidRequest(
        f"tls={shown(value)} is not a TLS choice",
        "use tls=auto (the master's CA), tls=off, or tls_cert=PATH tls_key=PATH",
    )


def parse_http(value: Any) -> str | None:
    if _missing(value):
        return None
    if not isinstance(value, str) or value not in HTTP_MODES:
        raise InvalidRequest(
            f"http={shown(value)} is not known",
            "use http=redirect (port 80 answers 301 to HTTPS) or http=allow",
        )
    return value


def parse_request(
    tls: Any = None, tls_cert: Any = None, tls_key: Any = None, http: Any = None
) -> TlsRequest:
    """The build's TLS arguments, checked; the operator's files are read and checked too."""
    mode = parse_mode(tls)
    given = (not _missing(tls_cert), not _missing(tls_key))
    if any(given):
        if not all(given):
            name = "tls_key" if given[0] else "tls_cert"
            raise InvalidRequest(
                f"{name} is missing", "give both tls_cert=PATH and tls_key=PATH, or tls=auto"
            )
        if mode is not None:
            raise InvalidRequest(
                f"tls={tls} and tls_cert disagree",
                "give tls=auto alone, or tls_cert=PATH tls_key=PATH alone",
            )
        cert_path, key_path = _path("tls_cert", tls_cert), _path("tls_key", tls_key)
        read_pem_pair(cert_path, key_path)
        return TlsRequest("files", cert_path, key_path, parse_http(http))
    return TlsRequest(mode, None, None, parse_http(http))


def _path(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\n" in value:
        raise InvalidRequest(
            f"{name}={shown(value)} is not a full path", f"give {name}=/path/to/file.pem"
        )
    return value


def _read(name: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as error:
        raise InvalidRequest(
            f"{name} {shown(path)} cannot be read ({error.strerror})",
            "give a PEM file on the master that root can read",
        ) from None
    if len(data) > MAX_PEM_BYTES:
        raise InvalidRequest(f"{name} {shown(path)} is over 1 MB", "give a PEM file")
    return data


def read_pem_pair(cert_path: str, key_path: str, now: datetime.datetime | None = None) -> PemPair:
    """The operator's certificate and key, or one InvalidRequest saying what is wrong."""
    now = now or _now()
    try:
        chain = x509.load_pem_x509_certificates(_read("tls_cert", cert_path))
    except ValueError:
        raise InvalidRequest(
            f"tls_cert {shown(cert_path)} holds no PEM certificate",
            "give the certificate (and its chain) in PEM",
        ) from None
    key_data = _read("tls_key", key_path)
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise InvalidRequest(
            f"tls_key {shown(key_path)} is protected by a passphrase",
            "give the key without one (openssl pkey -in KEY -out PLAIN)",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidRequest(
            f"tls_key {shown(key_path)} holds no PEM private key", "give the private key in PEM"
        ) from None
    leaf = chain[0]
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise InvalidRequest(
            f"tls_key {shown(key_path)} does not match tls_cert {shown(cert_path)}",
            "give the key the certificate was made for",
        )
    if leaf.not_valid_after_utc <= now:
        raise InvalidRequest(
            f"tls_cert {shown(cert_path)} expired on {leaf.not_valid_after_utc:%Y-%m-%d}",
            "renew it, or build with tls=auto",
        )
    if leaf.not_valid_before_utc > now:
        raise InvalidRequest(
            f"tls_cert {shown(cert_path)} is not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "check the master's clock, or give a certificate valid now",
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return PemPair(chain, key_pem)


def _public_der(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def applied(record: EnvRecord, request: TlsRequest | None) -> EnvRecord:
    """The record with the request's TLS choice; what was not given stays as it was."""
    if request is None:
        return record
    mode, cert, key = record.tls, record.tls_cert, record.tls_key
    if request.mode is not None:
        mode = request.mode
        cert = request.cert if mode == "files" else None
        key = request.key if mode == "files" else None
    return record.with_tls(mode, cert, key, request.http or record.http)


# -- the master's CA and each environment's certificate -------------------------------------


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
        cert = _make_ca_cert(key, now or _now())
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


def _ip_sans(cert: x509.Certificate) -> set[str]:
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
    return _ip_sans(cert) == addresses and renew_at > now


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
    now = now or _now()
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


# -- what the load balancers get, and what status shows -------------------------------------


def env_pair(
    state_dir: str | os.PathLike[str], record: EnvRecord, addresses: list[str]
) -> PemPair | None:
    """The certificate and key the environment serves; None when TLS is off."""
    if record.tls == "auto":
        return ensure_env_cert(state_dir, record.app, record.env, addresses)
    if record.tls == "files":
        try:
            return read_pem_pair(record.tls_cert or "", record.tls_key or "")
        except InvalidRequest as error:
            raise GdlError(
                f"{naming.env_id(record.app, record.env)}: {error.problem}",
                "replace the files and build again, or build with tls=auto",
            ) from None
    return None


def lb_pillar(
    state_dir: str | os.PathLike[str], record: EnvRecord, addresses: list[str]
) -> dict[str, Any]:
    """Pillar ``gdl:tls`` for the environment's load balancers only (it holds the key)."""
    pair = env_pair(state_dir, record, addresses)
    if pair is None:
        return {"enabled": False, "http": record.http, "pem": ""}
    return {"enabled": True, "http": record.http, "pem": pair.pem}


def describe(state_dir: str | os.PathLike[str], record: EnvRecord) -> dict[str, Any]:
    """The environment's certificate as status shows it: subject, issuer, expiry."""
    shown_: dict[str, Any] = {"mode": record.tls}
    if record.tls == "off":
        return shown_
    shown_["http"] = record.http
    if record.tls == "auto":
        path = cert_paths(state_dir, record.app, record.env)[0]
        shown_["ca"] = str(ca_paths(state_dir)[0])
    else:
        path = Path(record.tls_cert or "")
    shown_["certificate"] = str(path)
    try:
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError) as error:
        shown_["error"] = f"cannot read {path}: {getattr(error, 'strerror', None) or error}"
        return shown_
    shown_.update(
        {
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "expires": f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
            "days_left": (cert.not_valid_after_utc - _now()).days,
        }
    )
    sans = sorted(_ip_sans(cert))
    if sans:
        shown_["addresses"] = sans
    return shown_


def client_context(state_dir: str | os.PathLike[str], record: EnvRecord) -> ssl.SSLContext:
    """How the master checks the VIP over HTTPS.

    tls=auto: against the master's CA, address included.  The operator's
    certificate may name a DNS name the master does not resolve to the VIP,
    and a CA the master does not know: the handshake alone is checked.
    """
    if record.tls == "auto":
        return ssl.create_default_context(cafile=str(ca_paths(state_dir)[0]))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # unverified on purpose: see the docstring
    return context
