"""HTTPS at the VIP, end to end on the local provider.

The tests run in order on one environment: built with ``tls=auto``, checked
against the master's CA, kept by a build without TLS arguments, moved to the
operator's own certificate while a client keeps asking (no request may fail),
opened to plain HTTP with ``http=allow``, and destroyed.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gdl import certs
from gdl_harness.browser import CHROMIUM, chromium_flags
from gdl_harness.poller import Poller
from tests.support.runs import run as run_json

pytestmark = pytest.mark.integration


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-o", "/dev/null", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def built(local_cloud) -> Iterator[dict]:
    master = local_cloud.master
    code, data, output = run_json(
        master, "gdl.build", "app=blog", "env=web", "servers=1", "tls=auto"
    )
    assert code == 0, output
    yield data
    run_json(master, "gdl.destroy", "app=blog", "env=web")


@pytest.fixture(scope="module")
def master_ca(local_cloud) -> Path:
    return certs.ca_paths(local_cloud.master.state_dir)[0]


def test_the_build_prints_the_https_url_and_the_vip_verifies_against_the_masters_ca(
    built, master_ca
):
    vip = built["vip"]
    assert built["url"] == f"https://{vip}/"
    done = curl("-w", "%{http_code} %{ssl_verify_result}", "--cacert", str(master_ca), built["url"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == "200 0"
    # Without the CA the certificate is not trusted.
    assert curl(built["url"]).returncode != 0


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_12_and_13_are_served_and_older_versions_are_not(built, master_ca):
    for version in ("TLSv1_2", "TLSv1_3"):
        context = ssl.create_default_context(cafile=str(master_ca))
        context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
        with (
            socket.create_connection((built["vip"], 443), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=built["vip"]) as client,
        ):
            assert client.version() == version.replace("_", ".")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises((ssl.SSLError, OSError)),
        socket.create_connection((built["vip"], 443), timeout=10) as raw,
    ):
        old.wrap_socket(raw).close()


def test_port_80_redirects_to_https(built):
    vip = built["vip"]
    done = curl("-w", "%{http_code} %{redirect_url}", f"http://{vip}/posts?page=2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"301 https://{vip}/posts?page=2"


def test_status_shows_the_certificate(local_cloud, built):
    code, data, output = run_json(local_cloud.master, "gdl.status", "app=blog", "env=web")
    assert code == 0, output
    shown = data["tls"]
    assert data["url"] == built["url"]
    assert (shown["mode"], shown["http"], shown["subject"]) == (
        "auto",
        "redirect",
        "CN=blog-web,O=gdl",
    )
    assert shown["issuer"].startswith("CN=gdl CA ")
    assert shown["days_left"] >= 360 and shown["addresses"] == [built["vip"]]


def key_body(local_cloud, app: str, env: str) -> bytes:
    """Part of the environment's tls=auto private key, as any copy of its PEM would show.

    The secret part: the first 48 characters of every P-256 key in PKCS#8 are the same.
    """
    key_path = certs.cert_paths(local_cloud.master.state_dir, app, env)[1]
    lines = key_path.read_text().splitlines()
    return "".join(line for line in lines if not line.startswith("-----")).encode()[50:100]


def test_the_key_is_root_only_on_the_load_balancers_and_shown_nowhere(local_cloud, built):
    provider = local_cloud.provider()
    secret = key_body(local_cloud, "blog", "web")
    for lb in ("lb-0-blog-web", "lb-1-blog-web"):
        argv = provider.run(lb, ["stat", "-c", "%a %U", "/etc/haproxy/gdl-tls.pem"])
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == "600 root", done.stdout + done.stderr
    argv = provider.run("app-0-blog-web", ["ls", "/etc/haproxy/gdl-tls.pem"])
    assert subprocess.run(argv, capture_output=True, timeout=60).returncode != 0
    master = local_cloud.master
    places = [master.log_file, master.output_file, master.cache_dir / "jobs"]
    for place in places:
        files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
        for path in files:
            assert secret not in path.read_bytes(), f"the HTTPS key is in {path}"
    _, _, output = run_json(master, "gdl.status", "app=blog", "env=web")
    assert secret.decode() not in output


def test_a_build_without_tls_arguments_keeps_https(local_cloud, built):
    code, data, output = run_json(
        local_cloud.master, "gdl.build", "app=blog", "env=web", "servers=1"
    )
    assert code == 0, output
    assert data["url"] == built["url"]
    assert data["changes"] is False


def operator_certificate(directory: Path, vip: str) -> tuple[Path, Path, Path]:
    """A CA of the operator's and a certificate it signed for ``vip``: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Operator Test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "blog.example.org")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=20))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("blog.example.org"), x509.IPAddress(ipaddress.ip_address(vip))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.crt", directory / "blog.crt", directory / "blog.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


def test_moving_to_the_operators_certificate_fails_no_request(
    local_cloud, built, master_ca, tmp_path_factory
):
    vip = built["vip"]
    operator_ca, cert, key = operator_certificate(tmp_path_factory.mktemp("opcert"), vip)
    # The client trusts both CAs: it sees the change only as a new certificate.
    trusting = ssl.create_default_context(cafile=str(master_ca))
    trusting.load_verify_locations(cafile=str(operator_ca))
    with Poller(f"https://{vip}/healthz", context=trusting) as poller:
        code, data, output = run_json(
            local_cloud.master,
            "gdl.build",
            "app=blog",
            "env=web",
            f"tls_cert={cert}",
            f"tls_key={key}",
        )
    assert code == 0, output
    assert data["url"] == built["url"]
    assert poller.ok > 20
    assert poller.failed == [], poller.failed[:5]
    # Both load balancers now serve the operator's certificate.
    served = ssl.get_server_certificate((vip, 443))
    assert x509.load_pem_x509_certificate(served.encode()) == x509.load_pem_x509_certificate(
        cert.read_bytes()
    )
    assert curl("--cacert", str(operator_ca), built["url"]).returncode == 0
    assert curl("--cacert", str(master_ca), built["url"]).returncode != 0
    code, status, output = run_json(local_cloud.master, "gdl.status", "app=blog", "env=web")
    assert code == 0, output
    assert status["tls"]["subject"] == "CN=blog.example.org"
    assert status["tls"]["certificate"] == str(cert)


def test_http_allow_serves_plain_http_too(local_cloud, built, master_ca):
    code, _, output = run_json(
        local_cloud.master, "gdl.build", "app=blog", "env=web", "tls=auto", "http=allow"
    )
    assert code == 0, output
    vip = built["vip"]
    done = curl("-w", "%{http_code}", f"http://{vip}/healthz")
    assert done.stdout == "200", done.stderr
    done = curl("-w", "%{http_code}", "--cacert", str(master_ca), f"https://{vip}/healthz")
    assert done.stdout == "200", done.stderr


def spki_pin(vip: str) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the certificate the VIP serves."""
    served = x509.load_pem_x509_certificate(ssl.get_server_certificate((vip, 443)).encode())
    spki = served.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed")
def test_a_browser_shows_the_blog_over_https(built, tmp_path):
    """Headless Chromium renders the index over HTTPS, the environment's key pinned.

    Chromium takes no CA file on its command line (it reads NSS's database,
    which needs certutil); trusting the served key is the nearest it offers.
    """
    flags = chromium_flags(
        tmp_path / "profile",
        f"--ignore-certificate-errors-spki-list={spki_pin(built['vip'])}",
    )
    dom = subprocess.run(
        [str(CHROMIUM), *flags, "--dump-dom", built["url"]],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert "How a rollout works" in dom, dom[-2000:]


def test_destroy_forgets_the_environments_certificate(local_cloud, built):
    code, _, output = run_json(local_cloud.master, "gdl.destroy", "app=blog", "env=web")
    assert code == 0, output
    for path in certs.cert_paths(local_cloud.master.state_dir, "blog", "web"):
        assert not path.exists()
    # The CA stays: it is the master's, for every environment.
    assert certs.ca_paths(local_cloud.master.state_dir)[1].exists()
