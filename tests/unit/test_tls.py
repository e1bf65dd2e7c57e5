"""HTTPS at the VIP, on the master: the build's TLS arguments, the CA and the certificates."""

from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gdl import certs, envstore, pillar, tls
from gdl.errors import GdlError, InvalidRequest
from gdl.providers.base import RUNNING, EnvNetwork, Server

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


def self_signed(
    directory: Path,
    name: str = "site",
    not_before: datetime.datetime = NOW - DAY,
    not_after: datetime.datetime = NOW + 90 * DAY,
    passphrase: bytes | None = None,
) -> tuple[str, str]:
    """An operator's certificate and key for 127.0.0.1: (cert path, key path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("blog.example.org")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return str(cert_path), str(key_path)


def one_line(error: pytest.ExceptionInfo) -> str:
    line = str(error.value)
    assert "\n" not in line and len(line) < 300 and line.isprintable(), repr(line)
    assert ": " in line, line
    return line


# -- the arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "mode"),
    [(None, None), ("", None), ("auto", "auto"), (True, "auto"), ("off", "off"), (False, "off")],
)
def test_tls_takes_auto_and_off_as_yaml_gives_them(given, mode):
    assert tls.parse_request(tls=given) == tls.TlsRequest(mode=mode)


@pytest.mark.parametrize("given", ["yes-please", "letsencrypt", 1, ["auto"], {"a": 1}, "x" * 999])
def test_tls_refuses_other_values_in_one_line(given):
    with pytest.raises(InvalidRequest) as caught:
        tls.parse_request(tls=given)
    assert "is not a TLS choice" in one_line(caught)


def test_http_takes_redirect_or_allow():
    assert tls.parse_request(http="allow").http == "allow"
    assert tls.parse_request(tls="auto", http="redirect").http == "redirect"
    assert tls.parse_request().http is None
    with pytest.raises(InvalidRequest) as caught:
        tls.parse_request(http="deny")
    assert "http='deny' is not known" in one_line(caught)


def test_operator_files_that_are_good_are_taken(tmp_path):
    cert, key = self_signed(tmp_path)
    assert tls.parse_request(tls_cert=cert, tls_key=key) == tls.TlsRequest("files", cert, key)
    pair = tls.read_pem_pair(cert, key)
    assert pair.pem.startswith("-----BEGIN CERTIFICATE-----")
    assert "-----BEGIN PRIVATE KEY-----" in pair.pem


def test_a_chain_is_kept_leaf_first(tmp_path):
    leaf, key = self_signed(tmp_path, "leaf")
    other, _ = self_signed(tmp_path, "intermediate")
    chain = tmp_path / "chain.pem"
    chain.write_text(Path(leaf).read_text() + Path(other).read_text())
    pair = tls.read_pem_pair(str(chain), key)
    assert [c.subject.rfc4514_string() for c in pair.chain] == ["CN=leaf", "CN=intermediate"]
    assert pair.pem.count("BEGIN CERTIFICATE") == 2


def bad_files(tmp_path: Path) -> dict[str, tuple[dict, str]]:
    cert, key = self_signed(tmp_path)
    _, other_key = self_signed(tmp_path, "other")
    expired, expired_key = self_signed(tmp_path, "old", NOW - 400 * DAY, NOW - DAY)
    future, future_key = self_signed(tmp_path, "future", NOW + 10 * DAY, NOW + 100 * DAY)
    _, locked_key = self_signed(tmp_path, "locked", passphrase=b"secret")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return {
        "cert-without-key": ({"tls_cert": cert}, "tls_key is missing"),
        "key-without-cert": ({"tls_key": key}, "tls_cert is missing"),
        "auto-and-cert": (
            {"tls": "auto", "tls_cert": cert, "tls_key": key},
            "tls=auto and tls_cert disagree",
        ),
        "relative-path": ({"tls_cert": "site.crt", "tls_key": key}, "is not a full path"),
        "missing-cert": (
            {"tls_cert": str(tmp_path / "nothere.crt"), "tls_key": key},
            "cannot be read (No such file or directory)",
        ),
        "directory": ({"tls_cert": cert, "tls_key": str(tmp_path)}, "cannot be read"),
        "not-pem": ({"tls_cert": str(garbage), "tls_key": key}, "holds no PEM certificate"),
        "key-not-pem": ({"tls_cert": cert, "tls_key": str(garbage)}, "holds no PEM private key"),
        "cert-as-key": ({"tls_cert": cert, "tls_key": cert}, "holds no PEM private key"),
        "mismatched-key": ({"tls_cert": cert, "tls_key": other_key}, "does not match tls_cert"),
        "expired": ({"tls_cert": expired, "tls_key": expired_key}, "expired on"),
        "not-yet-valid": ({"tls_cert": future, "tls_key": future_key}, "is not valid before"),
        "passphrase": ({"tls_cert": cert, "tls_key": locked_key}, "protected by a passphrase"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "cert-without-key",
        "key-without-cert",
        "auto-and-cert",
        "relative-path",
        "missing-cert",
        "directory",
        "not-pem",
        "key-not-pem",
        "cert-as-key",
        "mismatched-key",
        "expired",
        "not-yet-valid",
        "passphrase",
    ],
)
def test_bad_operator_files_are_refused_in_one_line(tmp_path, case):
    arguments, fragment = bad_files(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InvalidRequest) as caught:
        tls.parse_request(**arguments)
    assert fragment in one_line(caught)
    assert sorted(tmp_path.rglob("*")) == before  # nothing made


def test_a_huge_file_is_not_read_whole(tmp_path):
    cert, _ = self_signed(tmp_path)
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"x" * (tls.MAX_PEM_BYTES + 10))
    with pytest.raises(InvalidRequest) as caught:
        tls.parse_request(tls_cert=cert, tls_key=str(huge))
    assert "is over 1 MB" in one_line(caught)


# -- the record keeps the choice -----------------------------------------------------------


def record() -> envstore.EnvRecord:
    return envstore.new_record("blog", "dev", "local", 2, "m1.small")


def test_a_new_environment_has_no_https():
    assert (record().tls, record().http, record().tls_cert) == ("off", "redirect", None)


def test_the_record_keeps_the_choice_until_another_is_given(tmp_path):
    files = tls.TlsRequest("files", "/etc/ssl/a.crt", "/etc/ssl/a.key")
    chosen = tls.applied(record(), files)
    assert (chosen.tls, chosen.tls_cert, chosen.tls_key) == (
        "files",
        "/etc/ssl/a.crt",
        "/etc/ssl/a.key",
    )
    # A build without TLS arguments, or with http= alone, keeps it.
    assert tls.applied(chosen, None) is chosen
    assert tls.applied(chosen, tls.TlsRequest()) is chosen
    allowed = tls.applied(chosen, tls.TlsRequest(http="allow"))
    assert (allowed.tls, allowed.tls_cert, allowed.http) == ("files", "/etc/ssl/a.crt", "allow")
    # tls=auto forgets the files; tls=off turns it off and keeps http.
    auto = tls.applied(allowed, tls.TlsRequest("auto"))
    assert (auto.tls, auto.tls_cert, auto.tls_key, auto.http) == ("auto", None, None, "allow")
    assert tls.applied(auto, tls.TlsRequest("off")).tls == "off"
    # And it survives the record's file, which older records lack.
    envstore.save(tmp_path, auto)
    assert envstore.load(tmp_path, "blog", "dev") == auto
    path = envstore.record_path(tmp_path, "blog", "dev")
    old = json.loads(path.read_text())
    for key in ("tls", "tls_cert", "tls_key", "http"):
        del old[key]
    path.write_text(json.dumps(old))
    assert envstore.load(tmp_path, "blog", "dev").tls == "off"


# -- the master's CA and the environment's certificate ------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_is_made_once_and_its_key_is_root_only(tmp_path):
    assert not certs.ca_paths(tmp_path)[0].exists()
    ca_cert, _ = certs.ensure_ca(tmp_path)
    key_path = certs.ca_paths(tmp_path)[1]
    assert mode_of(key_path) == 0o600
    assert mode_of(key_path.parent) == 0o700
    assert mode_of(certs.tls_dir(tmp_path)) == 0o700
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    again, _ = certs.ensure_ca(tmp_path)
    assert again == ca_cert
    assert [p.name for p in certs.tls_dir(tmp_path).iterdir()] == ["ca"]  # no staging left


def test_a_ca_made_meanwhile_by_another_build_is_the_one_kept(tmp_path, monkeypatch):
    first, _ = certs.ensure_ca(tmp_path / "other")
    made = certs.ca_paths(tmp_path / "other")[0].parent
    real_rename = Path.rename

    def rename_after_another(self, target):
        # Another build renames its CA into place first.
        certs.tls_dir(tmp_path).mkdir(exist_ok=True)
        if not Path(target).exists():
            real_rename(made, target)
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_after_another)
    kept, _ = certs.ensure_ca(tmp_path)
    assert kept == first
    assert [p.name for p in certs.tls_dir(tmp_path).iterdir()] == ["ca"]


def test_the_environment_certificate_names_the_vip_and_the_floating_ip(tmp_path):
    pair = certs.ensure_env_cert(tmp_path, "blog", "dev", ["10.20.0.10", "203.0.113.7"])
    ca_cert, _ = certs.ensure_ca(tmp_path)
    pair.leaf.verify_directly_issued_by(ca_cert)
    sans = pair.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(str(a) for a in sans.get_values_for_type(x509.IPAddress)) == [
        "10.20.0.10",
        "203.0.113.7",
    ]
    usage = pair.leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert pair.leaf.subject.rfc4514_string() == "CN=blog-dev,O=gdl"
    days = (pair.leaf.not_valid_after_utc - pair.leaf.not_valid_before_utc).days
    assert 360 <= days <= 398
    cert_path, key_path = certs.cert_paths(tmp_path, "blog", "dev")
    assert mode_of(key_path) == 0o600 and cert_path.exists()


def test_the_environment_certificate_is_kept_while_it_fits(tmp_path):
    first = certs.ensure_env_cert(tmp_path, "blog", "dev", ["10.20.0.10", "10.20.0.10"])
    assert certs.ensure_env_cert(tmp_path, "blog", "dev", ["10.20.0.10"]).leaf == first.leaf
    # Other addresses, near expiry, or another CA: a new one.
    moved = certs.ensure_env_cert(tmp_path, "blog", "dev", ["10.20.0.10", "203.0.113.7"])
    assert moved.leaf != first.leaf
    late = NOW + (certs.CERT_DAYS - certs.RENEW_DAYS + 1) * DAY
    renewed = certs.ensure_env_cert(tmp_path, "blog", "dev", ["10.20.0.10", "203.0.113.7"], late)
    assert renewed.leaf != moved.leaf
    for path in certs.ca_paths(tmp_path):
        path.unlink()
    resigned = certs.ensure_env_cert(tmp_path, "blog", "dev", ["10.20.0.10", "203.0.113.7"])
    resigned.leaf.verify_directly_issued_by(certs.ensure_ca(tmp_path)[0])
    assert certs.remove_env_cert(tmp_path, "blog", "dev") is True
    assert certs.remove_env_cert(tmp_path, "blog", "dev") is False


def serve_once(pem: str, directory: Path) -> tuple[int, threading.Thread]:
    """A TLS server on 127.0.0.1 that answers one handshake with ``pem``."""
    pem_file = directory / "server.pem"
    pem_file.write_text(pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        with listener, context.wrap_socket(listener, server_side=True) as server:
            server.settimeout(10)
            try:
                connection, _ = server.accept()
                connection.close()
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return port, thread


def test_a_client_trusting_the_ca_accepts_the_certificate_at_its_address(tmp_path):
    made = tls.applied(record(), tls.TlsRequest("auto"))
    pair = tls.env_pair(tmp_path, made, ["127.0.0.1"])
    port, thread = serve_once(pair.pem, tmp_path)
    context = tls.client_context(tmp_path, made)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as client,
    ):
        assert client.version() in ("TLSv1.2", "TLSv1.3")
        assert client.getpeercert()["subject"] == (
            (("organizationName", "gdl"),),
            (("commonName", "blog-dev"),),
        )
    thread.join(10)


def test_the_load_balancers_pillar_carries_the_certificate_and_key(tmp_path):
    off = tls.lb_pillar(tmp_path, record(), ["10.20.0.10"])
    assert off == {"enabled": False, "http": "redirect", "pem": ""}
    assert not certs.tls_dir(tmp_path).exists()  # nothing made while TLS is off
    auto = tls.applied(record(), tls.TlsRequest("auto", http="allow"))
    given = tls.lb_pillar(tmp_path, auto, ["10.20.0.10"])
    assert (given["enabled"], given["http"]) == (True, "allow")
    assert "BEGIN CERTIFICATE" in given["pem"] and "BEGIN PRIVATE KEY" in given["pem"]

    network = EnvNetwork("10.20.0.10", "10.20.0.10", "10.20.0.0/24", 42, "10.20.0.1")
    server = Server("app-0-blog-dev", "blog", "dev", "app", RUNNING, "10.20.0.11", "m1", "x")
    common, lb_only = pillar.env_pillar(auto, network, [server], [server.name], {}, given)
    assert "tls" not in common["gdl"] and "BEGIN PRIVATE KEY" not in json.dumps(common)
    assert lb_only["gdl"]["tls"] == given
    pillar.write(tmp_path / "pillar", auto, network, [server], [server.name], {}, tls=given)
    common_file, lb_file = pillar.pillar_files(tmp_path / "pillar", "blog", "dev")
    assert "PRIVATE KEY" not in common_file.read_text()
    assert "PRIVATE KEY" in lb_file.read_text() and mode_of(lb_file) == 0o600


def test_operator_files_gone_later_stop_the_build_in_one_line(tmp_path):
    cert, key = self_signed(tmp_path)
    chosen = tls.applied(record(), tls.parse_request(tls_cert=cert, tls_key=key))
    assert "BEGIN PRIVATE KEY" in tls.lb_pillar(tmp_path, chosen, ["10.20.0.10"])["pem"]
    os.unlink(key)
    with pytest.raises(GdlError) as caught:
        tls.lb_pillar(tmp_path, chosen, ["10.20.0.10"])
    line = one_line(caught)
    assert line.startswith("blog-dev: tls_key") and "build with tls=auto" in line


def test_status_shows_subject_issuer_and_expiry(tmp_path):
    assert tls.describe(tmp_path, record()) == {"mode": "off"}
    auto = tls.applied(record(), tls.TlsRequest("auto"))
    pair = tls.env_pair(tmp_path, auto, ["10.20.0.10"])
    shown = tls.describe(tmp_path, auto)
    assert shown["subject"] == "CN=blog-dev,O=gdl"
    assert shown["issuer"].startswith("CN=gdl CA ")
    assert shown["expires"] == f"{pair.leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    assert 360 <= shown["days_left"] <= 366
    assert shown["addresses"] == ["10.20.0.10"]
    assert shown["ca"] == str(certs.ca_paths(tmp_path)[0])
    cert, key = self_signed(tmp_path)
    files = tls.applied(record(), tls.TlsRequest("files", cert, key))
    assert tls.describe(tmp_path, files)["subject"] == "CN=site"
    os.unlink(cert)
    assert "cannot read" in tls.describe(tmp_path, files)["error"]
