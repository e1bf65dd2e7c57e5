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
their own pillar file (:mod:`gdl.pillar`).  The CA and the certificates are
made in :mod:`gdl.certs`; docs/https.md is the user's page.
"""

from __future__ import annotations

import datetime
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from gdl import certs, naming
from gdl.certs import PemPair
from gdl.envstore import EnvRecord
from gdl.errors import GdlError, InvalidRequest
from gdl.spec import shown

# tls=: how the environment's VIP speaks HTTPS ("files": the operator's PEM files).
MODES = ("auto", "files", "off")
# http=: what port 80 does when TLS is on.
HTTP_MODES = ("redirect", "allow")
MAX_PEM_BYTES = 1 << 20


@dataclass(frozen=True)
class TlsRequest:
    """The TLS arguments of one build; None keeps what the environment's record has."""

    mode: str | None = None
    cert: str | None = None
    key: str | None = None
    http: str | None = None


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
    now = now or certs.now_utc()
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


# -- what the load balancers get, and what status shows -------------------------------------


def env_pair(
    state_dir: str | os.PathLike[str], record: EnvRecord, addresses: list[str]
) -> PemPair | None:
    """The certificate and key the environment serves; None when TLS is off."""
    if record.tls == "auto":
        return certs.ensure_env_cert(state_dir, record.app, record.env, addresses)
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
        path = certs.cert_paths(state_dir, record.app, record.env)[0]
        shown_["ca"] = str(certs.ca_paths(state_dir)[0])
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
            "days_left": (cert.not_valid_after_utc - certs.now_utc()).days,
        }
    )
    sans = sorted(certs.ip_sans(cert))
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
        return ssl.create_default_context(cafile=str(certs.ca_paths(state_dir)[0]))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # unverified on purpose: see the docstring
    return context
