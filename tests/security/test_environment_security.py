"""The security properties of a built environment, checked on real hosts.

One environment is built once for the module through the real runner
(``salt-run gdl.build``, one app server and the VRRP pair, on a local cloud of
its own), with a listener on the master's event bus for the whole build.  The
tests then look at it as an attacker on the network or on a server would:
keys, listening sockets, what the logs, events, job returns and runner output
contain, who runs what, what the app's user can reach, what nginx says about
itself.  The last test destroys the environment and checks that its keys and
secrets went with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import salt.utils.crypt
import yaml

from gdl import envstore, keys
from gdl import pillar as env_pillar
from gdl.providers.local import LocalProvider
from gdl_harness import salt_daemons, salt_process
from gdl_harness.local_cloud import LocalCloud, running_local_cloud
from gdl_harness.salt_daemons import SaltMaster, SaltMinion
from gdl_harness.salt_process import salt_script

pytestmark = pytest.mark.integration

if os.geteuid() != 0:
    pytest.skip("local hosts need root", allow_module_level=True)

APP, ENV = "hello_world", "sec"
APP_SERVER = f"app-0-{APP}-{ENV}"
LBS = [f"lb-{i}-{APP}-{ENV}" for i in range(2)]
PRIVATE_KEY_MARK = "PRIVATE KEY"
# An unprivileged user every Debian host has.
NOBODY = "65534"
WAIT = 60.0


@dataclass
class Built:
    cloud: LocalCloud
    outputs: dict[str, str]  # runner output (stdout + stderr) by command
    events_file: Path
    vrrp_secret: str

    @property
    def master(self) -> SaltMaster:
        return self.cloud.master

    def provider(self) -> LocalProvider:
        return self.cloud.provider()

    def run_on(self, name: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = self.provider().run(name, list(command))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        return done

    def address(self, name: str) -> str:
        server = self.provider().get_server(name)
        assert server is not None, name
        return server.address


class StrangerMinion(SaltMinion):
    """A salt-minion with a key of its own that nobody accepted on the master."""

    def __init__(self, root: Path, master: SaltMaster, minion_id: str) -> None:
        salt_process.SaltDaemon.__init__(self, root)
        self.master = master
        self.minion_id = minion_id
        self.extra_config = {}
        pair = keys.generate()
        self.pki_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.pki_dir / "minion.pem").write_text(pair.private_pem)
        (self.pki_dir / "minion.pem").chmod(0o400)
        (self.pki_dir / "minion.pub").write_text(pair.public_pem)
        self.public_pem = pair.public_pem
        salt_daemons._write_yaml(self.conf_file, self.config())

    def launch(self) -> None:
        self._spawn()


def _runner(master: SaltMaster, *args: str, timeout: float = 900) -> tuple[int, str]:
    done = master.run("--out=json", *args, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("gdssec", numbered=True)
    with running_local_cloud(root / "master", tag="gds") as cloud:
        master = cloud.master
        events_file = root / "events.txt"
        # Everything the master's event bus carries while the environment is built.
        with open(events_file, "w") as sink:
            listener = subprocess.Popen(
                [
                    salt_script("salt-run"),
                    "-c",
                    str(master.config_dir),
                    "state.event",
                    "pretty=True",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            time.sleep(3)  # the listener subscribes before the build starts
            outputs = {}
            code, outputs["build"] = _runner(
                master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=1"
            )
            assert code == 0, outputs["build"]
            for verb in ("status", "destroy-test"):
                args = ["gdl.status"] if verb == "status" else ["gdl.destroy", "test=True"]
                code, outputs[verb] = _runner(master, *args, f"app={APP}", f"env={ENV}")
                assert code == 0, outputs[verb]
            code, outputs["list"] = _runner(master, "gdl.list")
            assert code == 0, outputs["list"]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(listener.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                listener.wait(timeout=20)
            if listener.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(listener.pid, signal.SIGKILL)
                listener.wait(timeout=20)
        record = envstore.load(master.state_dir, APP, ENV)
        assert record is not None
        try:
            yield Built(cloud, outputs, events_file, record.vrrp_secret)
        finally:
            master.run("gdl.destroy", f"app={APP}", f"env={ENV}", timeout=600)


# -- minion keys ----------------------------------------------------------------------


def test_master_never_accepts_keys_by_itself(built: Built) -> None:
    config = yaml.safe_load(built.master.conf_file.read_text())
    assert config.get("auto_accept") is False
    assert config.get("open_mode") is False
    assert not config.get("autosign_file") and not config.get("autosign_grains_dir")
    listing = json.loads(built.master.salt_key("--out=json", "-L", check=True).stdout)
    # The environment's keys were put in place before its servers booted: none ever waited.
    assert sorted(listing["minions"]) == sorted([APP_SERVER, *LBS])
    assert listing["minions_pre"] == [] and listing["minions_rejected"] == []


def test_every_minion_checks_its_masters_key_fingerprint(built: Built) -> None:
    # What `salt-key -F master` shows for master.pub; a minion refuses a master
    # whose key differs (and it answered, so the fingerprint is the right one).
    expected = salt.utils.crypt.pem_finger(
        str(built.master.pki_dir / "master.pub"), sum_type="sha256"
    )
    assert len(expected) == 95
    for name in [APP_SERVER, *LBS]:
        config = yaml.safe_load(built.run_on(name, "cat", "/etc/salt/minion").stdout)
        assert config.get("master_finger") == expected, name


def _wait_for_key(pki_dir: Path, state: str, minion_id: str) -> Path:
    path = pki_dir / state / minion_id
    deadline = time.monotonic() + WAIT
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    return path


def test_unknown_minion_key_stays_unaccepted(built: Built, tmp_path: Path) -> None:
    master = built.master
    minion_id = "gds-stranger"
    stranger = StrangerMinion(tmp_path / "stranger", master, minion_id)
    try:
        stranger.launch()
        pending = _wait_for_key(master.pki_dir, "minions_pre", minion_id)
        assert pending.exists(), "the stranger's key never reached the master"
        time.sleep(5)  # several authentication attempts later ...
        assert not (master.pki_dir / "minions" / minion_id).exists()
        answer = master.salt("--out=json", "--static", "-t", "5", minion_id, "test.ping")
        assert '"gds-stranger": true' not in answer.stdout
    finally:
        stranger.stop()
        master.keys.forget(minion_id)


def test_a_minion_posing_as_a_load_balancer_is_denied(built: Built, tmp_path: Path) -> None:
    """Same id as an LB, another key: no authentication, so no pillar (no VRRP secret)."""
    master = built.master
    accepted = (master.pki_dir / "minions" / LBS[0]).read_text()
    impostor = StrangerMinion(tmp_path / "impostor", master, LBS[0])
    try:
        impostor.launch()
        denied = _wait_for_key(master.pki_dir, "minions_denied", LBS[0])
        assert denied.exists(), "the master did not record the impostor's key as denied"
        assert denied.read_text().strip() == impostor.public_pem.strip()
        assert (master.pki_dir / "minions" / LBS[0]).read_text() == accepted
    finally:
        impostor.stop()
        (master.pki_dir / "minions_denied" / LBS[0]).unlink(missing_ok=True)
    # The real load balancer still answers.
    answer = master.salt_json("-t", "10", LBS[0], "test.ping")
    assert answer.get(LBS[0]) is True


# -- the master's ports -------------------------------------------------------------------


def test_master_listens_only_where_its_minions_reach_it(built: Built) -> None:
    master = built.master
    listening = subprocess.run(["ss", "-Htln"], capture_output=True, text=True, check=True).stdout
    # Salt's two ports and the servers' package source (the gdl_package_source engine).
    for port in (master.ret_port, master.publish_port, master.package_port):
        local = [
            line.split()[3]
            for line in listening.splitlines()
            if line.split()[3].endswith(f":{port}")
        ]
        assert local == [f"{built.cloud.gateway}:{port}"], (port, local)


# -- the VRRP secret ------------------------------------------------------------------------


def _text_files(*roots: Path) -> Iterator[tuple[Path, bytes]]:
    for root in roots:
        if root.is_file():
            yield root, root.read_bytes()
            continue
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    yield path, path.read_bytes()


def _master_logs_and_returns(built: Built) -> list[Path]:
    """The master's logs, its job cache (every return and event it kept) and event output."""
    master = built.master
    return [
        master.log_file,
        master.log_file.with_name("key"),
        master.output_file,
        master.cache_dir / "jobs",
        built.events_file,
    ]


def _server_logs(built: Built) -> dict[str, str]:
    """The salt-minion logs on each of the environment's servers (inside the hosts)."""
    logs = {}
    for name in [APP_SERVER, *LBS]:
        done = built.run_on(name, "sh", "-c", "cat /var/log/salt/* 2>/dev/null; true")
        logs[name] = done.stdout
    assert all(logs.values()), f"no minion log on {[n for n, text in logs.items() if not text]}"
    return logs


def test_vrrp_secret_is_used_and_shown_nowhere(built: Built) -> None:
    secret = built.vrrp_secret
    assert len(secret) == 8 and secret.isalnum()
    conf = built.run_on(LBS[0], "cat", "/etc/keepalived/keepalived.conf").stdout
    assert f"auth_pass {secret}" in conf and "auth_type PASS" in conf
    for verb, output in built.outputs.items():
        assert secret not in output, f"the VRRP secret is in gdl.{verb}'s output"
    assert built.events_file.stat().st_size > 0, "the event listener saw nothing"
    for path, data in _text_files(*_master_logs_and_returns(built)):
        assert secret.encode() not in data, f"the VRRP secret is in {path}"
    for name, text in _server_logs(built).items():
        assert secret not in text, f"the VRRP secret is in {name}'s minion log"


def test_vrrp_secret_is_root_only_at_rest(built: Built) -> None:
    master = built.master
    record = envstore.record_path(master.state_dir, APP, ENV)
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    _, lb_file = env_pillar.pillar_files(master.state_dir / "pillar", APP, ENV)
    assert lb_file.stat().st_mode & 0o077 == 0, oct(lb_file.stat().st_mode)
    # The app server's pillar has no secret (pillar/top.sls gives it to LBs only).
    pillar = built.master.salt_json(APP_SERVER, "pillar.items")[APP_SERVER]
    assert built.vrrp_secret not in json.dumps(pillar)
    stat = built.run_on(LBS[0], "stat", "-c", "%a %U", "/etc/keepalived/keepalived.conf")
    assert stat.stdout.strip() == "600 root"


# -- private keys ---------------------------------------------------------------------------


def test_minion_private_keys_are_never_in_output_logs_or_events(built: Built) -> None:
    for verb, output in built.outputs.items():
        assert PRIVATE_KEY_MARK not in output, f"a private key is in gdl.{verb}'s output"
    for path, data in _text_files(*_master_logs_and_returns(built)):
        assert PRIVATE_KEY_MARK.encode() not in data, f"a private key is in {path}"
    for name, text in _server_logs(built).items():
        assert PRIVATE_KEY_MARK not in text, f"a private key is in {name}'s minion log"
    # The master keeps only its own private key: the minions' halves went to their servers.
    master = built.master
    holders = [
        path
        for path, data in _text_files(master.pki_dir, master.state_dir)
        if PRIVATE_KEY_MARK.encode() in data and not path.is_relative_to(built.provider().hosts_dir)
    ]
    own_key = (master.pki_dir / "master.pem").resolve()  # Salt 3008 links it to vm.pem
    assert {path.resolve() for path in holders} == {own_key}, holders
    assert oct(own_key.stat().st_mode & 0o777) == "0o400"


# -- what runs as whom ----------------------------------------------------------------------


def test_app_and_gunicorn_run_as_an_unprivileged_user(built: Built) -> None:
    users = built.run_on(APP_SERVER, "ps", "-o", "user=,uid=", "-C", "gunicorn").stdout.split("\n")
    rows = [line.split() for line in users if line.strip()]
    assert rows, "gunicorn is not running"
    assert {user for user, _ in rows} == {"gdl"}
    assert all(int(uid) >= 1000 for _, uid in rows), rows
    # The app's user cannot change the release it runs.
    probe = built.run_on(
        APP_SERVER,
        "setpriv",
        "--reuid=gdl",
        "--regid=gdl",
        "--clear-groups",
        "sh",
        "-c",
        f"touch /srv/gdl/{APP}/current/gds-probe",
        check=False,
    )
    assert probe.returncode != 0, "the app's user can write into its release"


def test_haproxy_socket_and_keepalived_script_are_out_of_unprivileged_reach(built: Built) -> None:
    lb = LBS[0]
    assert built.run_on(lb, "stat", "-c", "%a %U", "/run/haproxy/admin.sock").stdout.strip() == (
        "600 root"
    )
    connect = (
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock');"
        " s.sendall(b'show info\\n'); print(s.recv(100))"
    )
    as_nobody = built.run_on(
        lb,
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "python3",
        "-c",
        connect,
        check=False,
    )
    assert as_nobody.returncode != 0 and "PermissionError" in as_nobody.stderr, as_nobody
    conf = built.run_on(lb, "cat", "/etc/keepalived/keepalived.conf").stdout
    assert "enable_script_security" in conf and "script_user root" in conf
    # The check script keepalived runs as root, and every directory above it, is root's alone.
    scripts = [line.split('"')[1].split()[0] for line in conf.splitlines() if 'script "' in line]
    assert scripts, conf
    notify = [line.split()[1] for line in conf.splitlines() if "notify_master" in line.split()[:1]]
    assert notify, conf
    scripts += notify
    for script in scripts:
        path = Path(script)
        for part in [path, *path.parents]:
            mode = built.run_on(lb, "stat", "-L", "-c", "%a %U", str(part)).stdout.split()
            assert mode[1] == "root" and int(mode[0], 8) & 0o022 == 0, (part, mode)


# -- nginx -------------------------------------------------------------------------------------


def _raw_http(address: str, request: bytes) -> bytes:
    with socket.create_connection((address, 80), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_nginx_hides_its_version(built: Built) -> None:
    address = built.address(APP_SERVER)
    with urllib.request.urlopen(f"http://{address}/", timeout=10) as response:
        assert response.headers["Server"] == "nginx"
    network = built.provider().find_env(APP, ENV)
    assert network is not None
    with urllib.request.urlopen(f"http://{network.vip}/", timeout=10) as response:
        assert response.headers["Server"] == "nginx"
    # An error nginx answers itself (no Host header) names no version either.
    answer = _raw_http(address, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"nginx/" not in answer and b"Server: nginx\r\n" in answer, answer[:500]


# -- the end: destroying takes keys and secrets with it ---------------------------------------


def test_destroy_removes_keys_pillar_and_secret(built: Built) -> None:
    master = built.master
    code, output = _runner(master, "gdl.destroy", f"app={APP}", f"env={ENV}", timeout=600)
    assert code == 0, output
    assert master.keys.env_minions(APP, ENV) == set()
    for state in ("minions", "minions_pre", "minions_denied", "minions_rejected"):
        for name in [APP_SERVER, *LBS]:
            assert not (master.pki_dir / state / name).exists(), (state, name)
    assert envstore.load(master.state_dir, APP, ENV) is None
    assert not any(
        p.exists() for p in env_pillar.pillar_files(master.state_dir / "pillar", APP, ENV)
    )
    # The master's pillar cache of the load balancers went with their keys.
    for path, data in _text_files(master.state_dir, master.cache_dir):
        assert built.vrrp_secret.encode() not in data, f"the VRRP secret outlived its env: {path}"
