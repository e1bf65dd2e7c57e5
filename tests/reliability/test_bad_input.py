"""Bad input is refused with one line, a non-zero exit, and nothing made.

Every runner function is called through the real ``salt-run`` against a real
salt-master with gdl's settings, the way an operator types it.  For each bad
request the test checks what the operator sees (exactly one line that says
what is wrong and what to do, no traceback, a non-zero exit status) and what
the machine keeps: the master's gdl state directory and its key directories
are exactly as before (no host, no key, no pillar file, no environment
record, no lock), and the local cloud's bridge was not made.

bootstrap.sh's options are checked the same way, by running it with options
it must refuse before it does anything.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gdl import spec, tuning
from gdl.config import Settings
from gdl.errors import InvalidRequest
from gdl.providers.local import LocalProvider
from gdl.providers.local import network as local_network
from gdl_harness.salt_daemons import REPO_ROOT, SaltMaster
from tests.support.local_salt import SALT_CALL, SAMPLE_PILLAR, LocalSalt
from tests.support.runs import footprint, one_line_refusal

# What a refusal of gdl.deploy / gdl.rollback says while they are not there.
NOT_AVAILABLE = "is not available in this version"

LONG = "x" * 5000
CIDR = "10.251.7.0/24"

# (id, salt-run arguments, a fragment of the one line expected)
CASES: list[tuple[str, list[str], str]] = [
    # gdl.build: missing arguments
    ("build-no-args", ["gdl.build"], "app is missing"),
    ("build-no-env", ["gdl.build", "app=blog"], "env is missing"),
    ("build-no-app", ["gdl.build", "env=dev"], "app is missing"),
    ("build-empty-app", ["gdl.build", "app=", "env=dev"], "app is missing"),
    # servers: wrong types and out of range
    ("servers-word", ["gdl.build", "app=blog", "env=dev", "servers=two"], "not a whole number"),
    ("servers-zero", ["gdl.build", "app=blog", "env=dev", "servers=0"], "out of range"),
    ("servers-negative", ["gdl.build", "app=blog", "env=dev", "servers=-1"], "out of range"),
    ("servers-51", ["gdl.build", "app=blog", "env=dev", "servers=51"], "out of range"),
    ("servers-float", ["gdl.build", "app=blog", "env=dev", "servers=2.5"], "not a whole number"),
    ("servers-bool", ["gdl.build", "app=blog", "env=dev", "servers=true"], "not a whole number"),
    ("servers-empty", ["gdl.build", "app=blog", "env=dev", "servers="], "servers is empty"),
    ("servers-list", ["gdl.build", "app=blog", "env=dev", "servers=[2]"], "not a whole number"),
    (
        "servers-arabic-digit",
        ["gdl.build", "app=blog", "env=dev", "servers=\u0663"],
        "not a whole number",
    ),
    (
        "servers-huge",
        ["gdl.build", "app=blog", "env=dev", "servers=99999999999999999999"],
        "out of range",
    ),
    # app names: metacharacters, traversal, spaces, unicode, length, type
    ("app-traversal", ["gdl.build", "app=../x", "env=dev"], "not a valid app name"),
    ("app-rm-rf", ["gdl.build", "app=a;rm -rf /", "env=dev"], "not a valid app name"),
    ("app-subshell", ["gdl.build", "app=$(id)", "env=dev"], "not a valid app name"),
    ("app-backticks", ["gdl.build", "app=`id`", "env=dev"], "not a valid app name"),
    ("app-space", ["gdl.build", "app=my app", "env=dev"], "not a valid app name"),
    ("app-unicode", ["gdl.build", "app=bl\u00f6g", "env=dev"], "not a valid app name"),
    ("app-upper", ["gdl.build", "app=Blog", "env=dev"], "not a valid app name"),
    ("app-long", ["gdl.build", f"app={LONG}", "env=dev"], "not a valid app name"),
    ("app-mapping", ["gdl.build", "app={a: 1}", "env=dev"], "not a valid app name"),
    ("app-unknown", ["gdl.build", "app=nope", "env=dev"], "does not exist"),
    # env names
    ("env-traversal", ["gdl.build", "app=blog", "env=../../etc"], "not a valid environment"),
    ("env-semicolon", ["gdl.build", "app=blog", "env=dev;reboot"], "not a valid environment"),
    ("env-subshell", ["gdl.build", "app=blog", "env=$(id)"], "not a valid environment"),
    ("env-backticks", ["gdl.build", "app=blog", "env=`id`"], "not a valid environment"),
    ("env-space", ["gdl.build", "app=blog", "env=dev qa"], "not a valid environment"),
    ("env-unicode", ["gdl.build", "app=blog", "env=d\u00e9v"], "not a valid environment"),
    ("env-long", ["gdl.build", "app=blog", f"env={LONG}"], "not a valid environment"),
    ("env-newline", ["gdl.build", "app=blog", "env=dev\nx"], "on one line"),
    ("env-escape", ["gdl.build", "app=blog", "env=\x1b[31mred"], "not a valid environment"),
    # size, provider, flags, conflicting and unknown arguments
    ("size-unknown", ["gdl.build", "app=blog", "env=dev", "size=huge"], "not a local size"),
    ("size-shell", ["gdl.build", "app=blog", "env=dev", "size=m1.small;id"], "not a flavor"),
    ("provider-unknown", ["gdl.build", "app=blog", "env=dev", "provider=aws"], "not known"),
    ("provider-traversal", ["gdl.build", "app=blog", "env=dev", "provider=../local"], "not known"),
    ("test-not-bool", ["gdl.build", "app=blog", "env=dev", "test=maybe"], "not true or false"),
    ("env-conflict", ["gdl.build", "app=blog", "env=dev", "environment=qa"], "disagree"),
    ("app-twice", ["gdl.build", "blog", "app=blog", "env=dev"], "give each argument once"),
    ("build-unknown-kwarg", ["gdl.build", "app=blog", "env=dev", "colour=red"], "unknown argument"),
    (
        "build-extra-positional",
        ["gdl.build", "blog", "dev", "2", "m1.small", "local", "False", *["dev"] * 6, "extra"],
        "without a name",
    ),
    # HTTPS: tls, http, and the operator's files (more in test_runner_refuses_bad_tls_files)
    ("tls-unknown", ["gdl.build", "app=blog", "env=dev", "tls=letsencrypt"], "not a TLS choice"),
    ("tls-number", ["gdl.build", "app=blog", "env=dev", "tls=1"], "not a TLS choice"),
    ("http-unknown", ["gdl.build", "app=blog", "env=dev", "tls=auto", "http=deny"], "not known"),
    ("tls-cert-no-key", ["gdl.build", "app=blog", "env=dev", "tls_cert=/x.pem"], "tls_key is"),
    ("tls-key-no-cert", ["gdl.build", "app=blog", "env=dev", "tls_key=/x.key"], "tls_cert is"),
    (
        "tls-cert-relative",
        ["gdl.build", "app=blog", "env=dev", "tls_cert=x.pem", "tls_key=/x.key"],
        "is not a full path",
    ),
    (
        "tls-cert-missing",
        ["gdl.build", "app=blog", "env=dev", "tls_cert=/nonexistent/a.pem", "tls_key=/x.key"],
        "cannot be read (No such file or directory)",
    ),
    (
        "tls-cert-subshell",
        ["gdl.build", "app=blog", "env=dev", "tls_cert=/tmp/$(id).pem", "tls_key=/x.key"],
        "cannot be read",
    ),
    (
        "tls-cert-not-a-certificate",
        ["gdl.build", "app=blog", "env=dev", "tls_cert=/etc/hostname", "tls_key=/etc/hostname"],
        "holds no PEM certificate",
    ),
    (
        "tls-auto-and-cert",
        ["gdl.build", "app=blog", "env=dev", "tls=auto", "tls_cert=/a", "tls_key=/b"],
        "disagree",
    ),
    # the load balancers' tuning
    (
        "health-interval-low",
        ["gdl.build", "app=blog", "env=dev", "health_interval=0.1"],
        "health_interval=0.1 is out of range",
    ),
    (
        "health-interval-word",
        ["gdl.build", "app=blog", "env=dev", "health_interval=fast"],
        "not a number of seconds",
    ),
    (
        "health-interval-fine",
        ["gdl.build", "app=blog", "env=dev", "health_interval=0.2505"],
        "finer than a millisecond",
    ),
    ("health-fall-zero", ["gdl.build", "app=blog", "env=dev", "health_fall=0"], "out of range"),
    ("health-rise-11", ["gdl.build", "app=blog", "env=dev", "health_rise=11"], "out of range"),
    ("sticky-word", ["gdl.build", "app=blog", "env=dev", "sticky=maybe"], "not true or false"),
    (
        "timeout-server-unit",
        ["gdl.build", "app=blog", "env=dev", "timeout_server=30s"],
        "not a whole number",
    ),
    # gdl.destroy
    ("destroy-no-args", ["gdl.destroy"], "app is missing"),
    ("destroy-no-env", ["gdl.destroy", "app=blog"], "env is missing"),
    ("destroy-unknown-env", ["gdl.destroy", "app=blog", "env=nothere"], "does not exist"),
    ("destroy-unknown-app", ["gdl.destroy", "app=nope", "env=dev"], "does not exist"),
    ("destroy-traversal", ["gdl.destroy", "app=blog", "env=../x"], "not a valid environment"),
    ("destroy-provider", ["gdl.destroy", "app=blog", "env=dev", "provider=aws"], "not known"),
    ("destroy-test", ["gdl.destroy", "app=blog", "env=dev", "test=2"], "not true or false"),
    ("destroy-unknown-kwarg", ["gdl.destroy", "app=blog", "env=dev", "servers=2"], "unknown"),
    ("destroy-conflict", ["gdl.destroy", "app=blog", "env=dev", "environment=qa"], "disagree"),
    # gdl.status
    ("status-no-args", ["gdl.status"], "app is missing"),
    ("status-unknown-env", ["gdl.status", "app=blog", "env=nothere"], "does not exist"),
    ("status-subshell", ["gdl.status", "app=blog", "env=$(id)"], "not a valid environment"),
    ("status-unknown-kwarg", ["gdl.status", "app=blog", "env=dev", "servers=1"], "unknown"),
    ("status-positional", ["gdl.status", "blog", "dev", "dev", "extra"], "without a name"),
    ("status-conflict", ["gdl.status", "app=blog", "env=dev", "environment=qa"], "disagree"),
    # gdl.list
    ("list-unknown-kwarg", ["gdl.list", "foo=1"], "takes no arguments"),
    ("list-positional", ["gdl.list", "extra"], "without a name"),
    # gdl.deploy
    ("deploy-no-args", ["gdl.deploy"], "app is missing"),
    ("deploy-unknown-env", ["gdl.deploy", "app=blog", "env=nothere"], "does not exist"),
    ("deploy-batch-zero", ["gdl.deploy", "app=blog", "env=dev", "batch=0"], "batch"),
    ("deploy-batch-word", ["gdl.deploy", "app=blog", "env=dev", "batch=two"], "batch"),
    ("deploy-batch-negative", ["gdl.deploy", "app=blog", "env=dev", "batch=-1"], "batch"),
    ("deploy-batch-float", ["gdl.deploy", "app=blog", "env=dev", "batch=1.5"], "batch"),
    ("deploy-version-shell", ["gdl.deploy", "app=blog", "env=dev", "version=1;id"], "version"),
    ("deploy-traversal", ["gdl.deploy", "app=../x", "env=dev"], "not a valid app name"),
    ("deploy-unknown-kwarg", ["gdl.deploy", "app=blog", "env=dev", "colour=red"], "unknown"),
    # gdl.rollback
    ("rollback-no-args", ["gdl.rollback"], "app is missing"),
    ("rollback-unknown-env", ["gdl.rollback", "app=blog", "env=nothere"], "does not exist"),
    ("rollback-subshell", ["gdl.rollback", "app=blog", "env=$(id)"], "not a valid environment"),
    ("rollback-unknown-kwarg", ["gdl.rollback", "app=blog", "env=dev", "colour=red"], "unknown"),
]


def bridge_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def bridge() -> Iterator[str]:
    """The name of the local cloud's bridge: it does not exist, and must stay so."""
    name = f"gds{uuid.uuid4().hex[:8]}"
    yield name
    if bridge_exists(name):
        local_network.remove_bridge(name)


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory, bridge: str) -> Iterator[SaltMaster]:
    """A master with gdl on that local cloud."""
    daemon = SaltMaster(
        tmp_path_factory.mktemp("gdsbad", numbered=True),
        gdl_settings={"provider": "local", "local": {"bridge": bridge, "cidr": CIDR}},
    )
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.integration
@pytest.mark.parametrize(("args", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_runner_refuses_bad_input(
    master: SaltMaster, bridge: str, args: list[str], fragment: str
) -> None:
    roots = (master.state_dir, master.pki_dir)
    before = footprint(*roots)
    result = master.run(*args, timeout=120)
    if args[0] in ("gdl.deploy", "gdl.rollback") and NOT_AVAILABLE in result.stdout:
        pytest.skip(f"{args[0]} is not implemented in this tree")
    one_line_refusal(result, fragment)
    # No host, key, pillar file, record or lock: the state and key directories are unchanged.
    assert footprint(*roots) == before
    assert not bridge_exists(bridge)
    settings = Settings(
        state_dir=master.state_dir, pki_dir=master.pki_dir, local={"bridge": bridge, "cidr": CIDR}
    )
    assert LocalProvider.from_settings(settings).list_servers() == []


def pem_pair(directory: Path, name: str, days: tuple[int, int] = (-1, 90)) -> tuple[Path, Path]:
    """A self-signed certificate and its key, valid from ``days[0]`` to ``days[1]`` from now."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The operator's PEM files, good and bad, outside the master's directories."""
    directory = tmp_path_factory.mktemp("gdstls")
    cert, key = pem_pair(directory, "site")
    _, other_key = pem_pair(directory, "other")
    expired, expired_key = pem_pair(directory, "old", (-400, -1))
    garbage = directory / "garbage.pem"
    garbage.write_text("not a certificate\n")
    unreadable = directory / "unreadable.key"
    unreadable.mkdir()
    return {
        "cert": cert,
        "key": key,
        "other_key": other_key,
        "expired": expired,
        "expired_key": expired_key,
        "garbage": garbage,
        "unreadable": unreadable,
    }


# (id, tls_cert, tls_key: names in tls_files, a fragment of the one line expected)
TLS_FILE_CASES = [
    ("mismatched-key", "cert", "other_key", "does not match tls_cert"),
    ("expired", "expired", "expired_key", "expired on"),
    ("cert-not-pem", "garbage", "key", "holds no PEM certificate"),
    ("key-not-pem", "cert", "garbage", "holds no PEM private key"),
    ("key-is-the-cert", "cert", "cert", "holds no PEM private key"),
    ("key-unreadable", "cert", "unreadable", "cannot be read"),
]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("cert", "key", "fragment"), [c[1:] for c in TLS_FILE_CASES], ids=[c[0] for c in TLS_FILE_CASES]
)
def test_runner_refuses_bad_tls_files(
    master: SaltMaster, bridge: str, tls_files: dict[str, Path], cert: str, key: str, fragment: str
) -> None:
    """The operator's certificate and key are checked before anything is made, a CA included."""
    roots = (master.state_dir, master.pki_dir)
    before = footprint(*roots)
    result = master.run(
        "gdl.build",
        "app=blog",
        "env=dev",
        f"tls_cert={tls_files[cert]}",
        f"tls_key={tls_files[key]}",
        timeout=120,
    )
    one_line_refusal(result, fragment)
    assert footprint(*roots) == before
    assert not (master.state_dir / "tls").exists()
    assert not bridge_exists(bridge)


@pytest.mark.parametrize(
    ("parse", "value", "fragment"),
    [
        (spec.parse_batch, 0, "batch=0 is out of range"),
        (spec.parse_batch, "two", "batch='two' is not a whole number"),
        (spec.parse_batch, None, "batch is empty"),
        (spec.parse_servers, "\u00b2", "not a whole number"),  # a superscript two
        (spec.parse_servers, "9" * 40, "not a whole number"),
        (spec.parse_size, "m1.small\n", "not a flavor name"),
        (lambda v: spec.parse_version(v, required=True), None, "version is missing"),
        (spec.parse_version, "1.0;id", "not a release version"),
        (spec.parse_version, "../1.0", "not a release version"),
        (spec.parse_app, "\x1b]0;pwned\x07" + LONG, "not a valid app name"),
        (lambda v: spec.pick_env("dev", v), "qa", "disagree"),
        (lambda v: spec.reject_positional(v, ("app", "env")), ("x",), "without a name"),
        (lambda v: spec.reject_unknown(v, ()), {"a" * 500: 1}, "takes no arguments"),
        (lambda v: tuning.parse_lb_tuning(health_interval=v), "\x1b[31m1", "not a number"),
        (lambda v: tuning.parse_lb_tuning(timeout_server=v), LONG, "not a whole number"),
        (lambda v: tuning.parse_lb_tuning(sticky=v), "yes\nno", "not true or false"),
    ],
)
def test_spec_refuses_with_one_short_printable_line(parse, value, fragment) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(value)
    line = str(caught.value)
    assert fragment in line
    assert "\n" not in line and len(line) < 300 and line.isprintable(), repr(line)


def test_spec_accepts_what_yaml_gives_for_good_values() -> None:
    assert spec.parse_batch("3") == 3 and spec.parse_batch(50) == 50
    assert spec.parse_version(1.0) == "1.0" and spec.parse_version(None) is None
    assert spec.pick_env(None, "dev") == "dev" and spec.pick_env("dev", "dev") == "dev"
    spec.reject_positional((), ("app",))


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
    assert {c[1][0] for c in CASES} >= {
        "gdl.build",
        "gdl.destroy",
        "gdl.status",
        "gdl.list",
        "gdl.deploy",
        "gdl.rollback",
    }


# -- bootstrap.sh ---------------------------------------------------------------------

BOOTSTRAP = REPO_ROOT / "bootstrap.sh"
# What a run that got past its option checks would make first.
BOOTSTRAP_FOOTPRINT = (
    Path("/opt/gdl"),
    Path("/etc/salt/master.d/gdl.conf"),
    Path("/usr/local/bin/salt-master"),
    Path("/var/lib/gdl"),
)

BOOTSTRAP_CASES: list[tuple[str, list[str], str]] = [
    ("unknown-option", ["--provder", "local"], "unknown option --provder"),
    ("stray-word", ["local"], "unknown option local"),
    ("bad-provider", ["--provider", "aws"], "use --provider local or --provider openstack"),
    ("provider-no-value", ["--provider"], "--provider needs a value"),
    ("provider-empty", ["--provider="], "--provider needs a value"),
    ("cloud-no-value", ["--provider", "openstack", "--cloud"], "--cloud needs a value"),
    ("cidr-no-value", ["--cidr", "--bridge", "gds0"], "--cidr needs a value"),
    ("cidr-word", ["--cidr", "banana"], "is not an IPv4 subnet"),
    ("cidr-prefix-33", ["--cidr", "10.0.0.0/33"], "give a /16 to /29"),
    ("cidr-too-small", ["--cidr=10.0.0.0/30"], "give a /16 to /29"),
    ("cidr-host-bits", ["--cidr", "10.1.2.3/24"], "host bits set"),
    ("cidr-octet", ["--cidr", "10.300.0.0/24"], "is not an IPv4 subnet"),
    ("cidr-ipv6", ["--cidr", "2001:db8::/64"], "is not an IPv4 subnet"),
    ("cidr-injection", ["--cidr", "10.0.0.0/24;reboot"], "is not an IPv4 subnet"),
    ("bridge-metachar", ["--bridge", "br;rm -rf /"], "is not an interface name"),
    ("bridge-traversal", ["--bridge", "../x"], "is not an interface name"),
    ("bridge-too-long", ["--bridge", "gdsabcdefghijklm"], "is not an interface name"),
    ("bridge-empty", ["--bridge="], "--bridge needs a value"),
    ("bridge-newline", ["--bridge", "br0\nx"], "is not an interface name"),
    (
        "master-address-word",
        ["--provider", "openstack", "--cloud", "c", "--master-address", "master"],
        "is not an IPv4 address",
    ),
    (
        "master-address-any",
        ["--provider", "openstack", "--cloud", "c", "--master-address", "0.0.0.0"],
        "listens on every network",
    ),
    (
        "cloud-subshell",
        ["--provider", "openstack", "--cloud", "$(id)"],
        "has quotes",
    ),
    ("local-with-image", ["--image", "debian"], "are for the openstack provider"),
    (
        "openstack-with-bridge",
        ["--provider", "openstack", "--cloud", "c", "--bridge", "b"],
        "local",
    ),
]


@pytest.mark.skipif(os.geteuid() != 0, reason="bootstrap.sh's checks are those a root run makes")
@pytest.mark.parametrize(
    ("args", "fragment"), [c[1:] for c in BOOTSTRAP_CASES], ids=[c[0] for c in BOOTSTRAP_CASES]
)
def test_bootstrap_refuses_bad_options(tmp_path: Path, args: list[str], fragment: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "OS_CLOUD"}
    # Should an option slip through, the OS check stops the run before it changes anything.
    environment["GDL_OS_RELEASE"] = str(tmp_path / "no-os-release")
    before = {path: path.exists() for path in BOOTSTRAP_FOOTPRINT}
    result = subprocess.run(
        ["bash", str(BOOTSTRAP), *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert {path: path.exists() for path in BOOTSTRAP_FOOTPRINT} == before
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bootstrap.sh: ")
    assert fragment in lines[0], result.stderr
    assert "no-os-release" not in lines[0], "the option was not checked"
    assert all(ch.isprintable() for ch in lines[0]), repr(lines[0])


# -- pillar values that would make an invalid daemon configuration ------------------------
#
# The config file states carry a check_cmd: Salt writes the new content to a
# temporary file, runs the daemon's own checker on it, and puts it in place only
# when that passes.  Each case renders the real state with a bad pillar value
# (salt-call --local state.show_sls), then applies that same file.managed state
# to a file in a temporary directory holding a previous, good version: the state
# must fail naming its check, and the previous file must be left as it was.

NGINX_CHECK = REPO_ROOT / "states" / "gdl" / "app" / "files" / "nginx-check-site.sh"

PILLAR = SAMPLE_PILLAR
LB_PILLAR = {"gdl": {"vrrp": {"secret": "gds5ecr3"}}}  # keepalived takes 8 characters


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) else value
    return out


class LocalCall(LocalSalt):
    """salt-call --local on the repository's states, with a pillar of the test's own."""

    def state_args(self, minion_id: str, mods: str, state_id: str) -> dict[str, Any]:
        done = self.call(minion_id, "state.show_sls", mods)
        assert done.returncode == 0, done.stdout + done.stderr
        return self._file_args(json.loads(done.stdout)["local"], state_id)

    def state_args_or_refusal(
        self, minion_id: str, mods: str, state_id: str
    ) -> tuple[dict[str, Any] | None, str]:
        """The state's arguments, or None and why the role refused to render."""
        done = self.call(minion_id, "state.show_sls", mods)
        if done.returncode != 0:
            return None, done.stdout + done.stderr
        return self._file_args(json.loads(done.stdout)["local"], state_id), ""

    @staticmethod
    def _file_args(states: dict[str, Any], state_id: str) -> dict[str, Any]:
        body = states[state_id]["file"]
        return {k: v for item in body if isinstance(item, dict) for k, v in item.items()}

    def apply_to(self, minion_id: str, args: dict[str, Any], target: Path) -> dict[str, Any]:
        """Apply the file.managed state ``args`` with its name moved to ``target``."""
        # Requisites name states of the role that are not applied here.
        kept = {k: v for k, v in args.items() if k not in ("name", "require", "watch")}
        items = [{"name": str(target)}, *({k: v} for k, v in kept.items())]
        state = {"gds-checked-config": {"file.managed": items}}
        (self.root / "files" / "gds_checked_config.sls").write_text("#!json\n" + json.dumps(state))
        done = self.call(minion_id, "state.sls", "gds_checked_config")
        assert "Traceback" not in done.stderr, done.stderr
        returned = json.loads(done.stdout)["local"]
        assert isinstance(returned, dict), returned
        (result,) = returned.values()
        return result


# (id, minion, sls, state id, pillar changes)
BAD_PILLAR_CASES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    (
        "nginx-body-size-injection",
        "app-0-blog-dev",
        "gdl.app",
        "gdl-app-nginx-site",
        {"gdl": {"roles": {"app": {"nginx": {"client_max_body_size": "1m; evil"}}}}},
    ),
    (
        "nginx-port-word",
        "app-0-blog-dev",
        "gdl.app",
        "gdl-app-nginx-site",
        {"gdl": {"roles": {"app": {"nginx": {"port": "eighty"}}}}},
    ),
    (
        "nginx-timeout-word",
        "app-0-blog-dev",
        "gdl.app",
        "gdl-app-nginx-site",
        {"gdl": {"roles": {"app": {"nginx": {"proxy_read_timeout": "soon"}}}}},
    ),
    (
        "haproxy-timeout-unit",
        "lb-0-blog-dev",
        "gdl.lb",
        "gdl-lb-haproxy-config",
        {"gdl": {"roles": {"lb": {"haproxy": {"timeout_client": "30q"}}}}},
    ),
    (
        "haproxy-port-out-of-range",
        "lb-0-blog-dev",
        "gdl.lb",
        "gdl-lb-haproxy-config",
        {"gdl": {"roles": {"lb": {"haproxy": {"port": 99999}}}}},
    ),
    (
        "haproxy-check-inter-negative",
        "lb-0-blog-dev",
        "gdl.lb",
        "gdl-lb-haproxy-config",
        {"gdl": {"roles": {"lb": {"haproxy": {"check_inter": "-5"}}}}},
    ),
    (
        "keepalived-advert-word",
        "lb-0-blog-dev",
        "gdl.lb",
        "gdl-lb-keepalived-config",
        {"gdl": {"vrrp": {"advert_int": "often"}}},
    ),
    (
        "keepalived-vip-word",
        "lb-0-blog-dev",
        "gdl.lb",
        "gdl-lb-keepalived-config",
        {"gdl": {"vip": "banana"}},
    ),
]

DAEMONS_PRESENT = all(Path(f"/usr/sbin/{d}").exists() for d in ("nginx", "haproxy", "keepalived"))
needs_daemons = pytest.mark.skipif(
    not (SALT_CALL.exists() and DAEMONS_PRESENT and os.geteuid() == 0),
    reason="needs salt-call, nginx, haproxy and keepalived, as root (nginx -t opens its logs)",
)


def _checker(args: dict[str, Any], root: Path) -> dict[str, Any]:
    """The state's arguments, with its check runnable here.

    The nginx checker is taken from the checkout (not installed).  keepalived's
    check needs the scripts the config names, which the role installs before it
    under /etc/keepalived: stand-ins in ``root`` take their place.
    """
    args = dict(args)
    if args.get("check_cmd") == "/usr/local/sbin/gdl-nginx-check-site":
        args["check_cmd"] = f"sh {NGINX_CHECK}"
    elif str(args.get("check_cmd", "")).startswith("/usr/sbin/keepalived "):
        for script in ("gdl-check-haproxy", "gdl-vip-master"):
            (root / script).write_text("#!/bin/sh\n")
            (root / script).chmod(0o700)
        check = root / "check-keepalived"
        check.write_text(
            "#!/bin/sh\n"
            f'sed "s#/etc/keepalived/#{root}/#g" "$1" >{root}/keepalived.conf &&\n'
            f"exec {args['check_cmd']} {root}/keepalived.conf\n"
        )
        check.chmod(0o700)
        args["check_cmd"] = str(check)
    return args


def _nginx_check_files() -> set[Path]:
    return set(Path("/tmp").glob("gdl-nginx-check.*"))


@pytest.fixture
def nginx_logs() -> Iterator[None]:
    """nginx -t opens the site's log files: remove those it made.

    The nginx checker's own temporary files must be gone when it returns.
    """
    logs = Path("/var/log/nginx")
    before = set(logs.iterdir()) if logs.is_dir() else set()
    checks_before = _nginx_check_files()
    yield
    if logs.is_dir():
        for path in set(logs.iterdir()) - before:
            path.unlink(missing_ok=True)
    left = _nginx_check_files() - checks_before
    for path in left:
        path.unlink(missing_ok=True)
    assert not left, f"the nginx check left {sorted(left)}"


@needs_daemons
@pytest.mark.parametrize(
    ("minion", "sls", "state_id"),
    [
        ("app-0-blog-dev", "gdl.app", "gdl-app-nginx-site"),
        ("lb-0-blog-dev", "gdl.lb", "gdl-lb-haproxy-config"),
        ("lb-0-blog-dev", "gdl.lb", "gdl-lb-keepalived-config"),
    ],
    ids=["nginx", "haproxy", "keepalived"],
)
def test_config_state_checks_and_installs_a_good_config(
    tmp_path: Path, nginx_logs: None, minion: str, sls: str, state_id: str
) -> None:
    salt = LocalCall(tmp_path / "salt", PILLAR, LB_PILLAR)
    args = salt.state_args(minion, sls, state_id)
    assert args.get("check_cmd"), f"{state_id} has no check_cmd"
    target = tmp_path / "installed.conf"
    target.write_text("previous\n")
    result = salt.apply_to(minion, _checker(args, tmp_path), target)
    assert result["result"] is True, result
    assert target.read_text() != "previous\n"


@needs_daemons
@pytest.mark.parametrize(
    ("minion", "sls", "state_id", "changes"),
    [c[1:] for c in BAD_PILLAR_CASES],
    ids=[c[0] for c in BAD_PILLAR_CASES],
)
def test_bad_pillar_value_never_reaches_the_daemon(
    tmp_path: Path,
    nginx_logs: None,
    minion: str,
    sls: str,
    state_id: str,
    changes: dict[str, Any],
) -> None:
    salt = LocalCall(tmp_path / "salt", _merge(PILLAR, changes), LB_PILLAR)
    args, refusal = salt.state_args_or_refusal(minion, sls, state_id)
    if args is None:
        # The role itself refused the value while rendering: earlier still, and fine,
        # as long as it says which pillar key is wrong.
        assert "pillar gdl:" in refusal, refusal
        return
    target = tmp_path / "installed.conf"
    target.write_text("previous\n")
    result = salt.apply_to(minion, _checker(args, tmp_path), target)
    assert result["result"] is False, result
    assert "check_cmd" in result["comment"], result
    assert target.read_text() == "previous\n"
    # The VRRP secret stays out of what the failed state reports.
    assert LB_PILLAR["gdl"]["vrrp"]["secret"] not in json.dumps(result)
