"""The app and lb roles on real hosts: 2 app servers and a VRRP pair of local hosts.

One module-scoped environment (it takes a minute or two to build): a bridge, a
salt-master on it, four local hosts with their own minions, the blog's release
on the master's fileserver, the environment's pillar written the way the runner
writes it, and the states applied through the master.  The tests then use it as
a person would, over HTTP to the VIP, and break things on purpose.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from gdl import keys, release_build
from gdl import pillar as env_pillar
from gdl.config import Settings
from gdl.envstore import EnvRecord
from gdl.providers.base import EnvNetwork, Server, ServerRequest
from gdl.providers.local import LocalProvider, network
from gdl_harness.local_cloud import make_bridge
from gdl_harness.salt_daemons import REPO_ROOT, SaltMaster

pytestmark = pytest.mark.integration

if os.geteuid() != 0:
    pytest.skip("local hosts need root", allow_module_level=True)

APP, ENV = "blog", "roles"
APP_SERVERS = [f"app-{i}-{APP}-{ENV}" for i in range(2)]
LBS = [f"lb-{i}-{APP}-{ENV}" for i in range(2)]
SECRET = "r0l3s3cr"
# Bounds for waiting on something that must happen; never asserted as timings.
WAIT = 30.0


@dataclass
class Environment:
    master: SaltMaster
    provider: LocalProvider
    network: EnvNetwork
    servers: dict[str, Server]
    first_apply: dict
    settings: Settings | None = None
    record: EnvRecord | None = None

    @property
    def url(self) -> str:
        return f"http://{self.network.vip}/"

    def run_on(self, name: str, *command: str) -> str:
        argv = self.provider.run(name, list(command))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    def salt(self, target: str, *args: str, timeout: float = 600) -> dict:
        # -t: wait for slow returns (a first apply builds virtualenvs) instead of giving up.
        return self.master.salt_json("-t", str(int(timeout)), "-L", target, *args, timeout=timeout)


def failed_states(returns: dict) -> list[str]:
    """'minion: state id: comment' for every state that failed."""
    failed = []
    for minion, result in returns.items():
        if not isinstance(result, dict):
            failed.append(f"{minion}: {result}")
            continue
        for key, state in result.items():
            if state.get("result") is False:
                failed.append(f"{minion}: {key}: {state.get('comment')}")
    return failed


def changed_states(returns: dict) -> list[str]:
    """States that changed, or that test=True says would change (result None)."""
    changed = []
    for minion, result in returns.items():
        assert isinstance(result, dict), f"{minion}: {result}"
        for key, state in result.items():
            if state.get("changes") or state.get("result") is None:
                changed.append(f"{minion}: {key}: {state.get('comment')}")
    return changed


def get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, str], str]:
    """(status, headers with lower-case names, body): haproxy sends names in lower case."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            headers = {name.lower(): value for name, value in response.headers.items()}
            return response.status, headers, response.read().decode()
    except urllib.error.HTTPError as error:
        headers = {name.lower(): value for name, value in error.headers.items()}
        return error.code, headers, error.read().decode(errors="replace")


def poll(url: str, count: int, interval: float = 0.05) -> list[str]:
    """Ask ``url`` ``count`` times; each answer as the serving host's name, or 'failed: ...'."""
    answers = []
    for _ in range(count):
        try:
            status, headers, _body = get(url, timeout=2)
            answers.append(headers["x-served-by"] if status == 200 else f"failed: {status}")
        except (OSError, KeyError) as error:
            answers.append(f"failed: {error!r}")
        time.sleep(interval)
    return answers


def wait_for(predicate, timeout: float = WAIT, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    bridge, cidr = make_bridge(tag="gdlr")
    master = provider = None
    try:
        gateway = str(network.gateway_address(ipaddress.ip_network(cidr)))
        root = tmp_path_factory.mktemp("roles", numbered=True)
        # The master's file roots are bootstrap.sh's: states/ and <state_dir>/files, where
        # the releases built on the master are served as salt://gdl-releases/...
        master = SaltMaster(
            root,
            gateway,
            gdl_settings={"provider": "local", "local": {"bridge": bridge, "cidr": cidr}},
        )
        master.start()
        settings = Settings(
            state_dir=master.state_dir,
            source_dir=REPO_ROOT,
            pki_dir=master.pki_dir,
            master_config=master.conf_file,
            local={"bridge": bridge, "cidr": cidr},
        )
        release = release_build.build_release_for(settings, APP)
        provider = LocalProvider.from_settings(settings)
        env_network = provider.ensure_env(APP, ENV)
        requests = []
        for name in APP_SERVERS + LBS:
            pair = keys.generate()
            master.keys.accept(name, pair.public_pem)
            requests.append(
                ServerRequest(
                    name=name,
                    app=APP,
                    env=ENV,
                    role=name.split("-")[0],
                    size="m1.small",
                    minion_public_key=pair.public_pem,
                    minion_private_key=pair.private_pem,
                    master_address=gateway,
                )
            )
        made = {server.name: server for server in provider.create_servers(requests)}
        assert provider.wait_minions(made, timeout=120) == []

        record = EnvRecord(
            app=APP,
            env=ENV,
            provider="local",
            servers=len(APP_SERVERS),
            size="m1.small",
            vrrp_secret=SECRET,
            created="",
            updated="",
            release=release.version,
        )
        env_pillar.write(
            settings.pillar_dir,
            record,
            env_network,
            made.values(),
            APP_SERVERS,
            env_pillar.built_releases(settings, APP),
        )

        target = ",".join(APP_SERVERS + LBS)
        master.salt_json("-t", "120", "-L", target, "saltutil.sync_modules", timeout=150)
        applied = master.salt_json("-t", "900", "-L", target, "state.apply", timeout=960)
        environment = Environment(master, provider, env_network, made, applied, settings, record)
        assert release.version == "1.0.0"
        yield environment
    finally:
        if provider is not None:
            names = [server.name for server in provider.list_servers()]
            provider.delete_servers(names)
            provider.teardown_env(APP, ENV)
        if master is not None:
            master.stop()
        network.remove_bridge(bridge)


def test_states_apply_cleanly(environment: Environment) -> None:
    assert sorted(environment.first_apply) == sorted(APP_SERVERS + LBS)
    assert failed_states(environment.first_apply) == []
    assert not [line for line in changed_states(environment.first_apply) if "None" in line]


def test_reapplying_in_test_mode_changes_nothing(environment: Environment) -> None:
    returns = environment.salt(",".join(APP_SERVERS + LBS), "state.apply", "test=True")
    assert failed_states(returns) == []
    assert changed_states(returns) == []


def test_vip_alternates_between_both_app_servers(environment: Environment) -> None:
    wait_for(lambda: set(poll(environment.url, 4)) == set(APP_SERVERS))
    answers = poll(environment.url, 20, interval=0)
    assert set(answers) == set(APP_SERVERS), answers
    # Round robin: consecutive answers come from different servers.
    assert all(a != b for a, b in itertools.pairwise(answers)), answers


def test_index_and_post_pages_are_rendered_with_static_files(environment: Environment) -> None:
    status, headers, page = get(environment.url)
    assert status == 200
    assert "How a rollout works" in page
    assert headers["x-served-by"] in page  # the footer names the server
    assert '<span class="version">1.0.0</span>' in page
    status, _, post = get(environment.url + "posts/one-address-two-load-balancers")
    assert status == 200 and "<h1>One address, two load balancers</h1>" in post
    status, headers, css = get(environment.url + "static/style.css")
    assert status == 200 and "--accent" in css
    assert headers["server"] == "nginx"  # served by nginx itself, no version shown
    assert get(environment.url + "posts/nothing-here")[0] == 404
    status, headers, health = get(environment.url + "healthz")
    assert json.loads(health)["status"] == "ok"
    assert json.loads(health)["host"] == headers["x-served-by"]


def test_gdl_lb_module_reports_and_drains(environment: Environment) -> None:
    lb = LBS[0]
    servers = environment.salt(lb, "gdl_lb.servers")[lb]
    assert {row["name"]: row["status"] for row in servers} == dict.fromkeys(APP_SERVERS, "UP")
    holders = environment.salt(",".join(LBS), "gdl_lb.holds_vip", environment.network.vip)
    assert sorted(holders.values()) == [False, True], holders
    # Drain on both LBs (either may hold the VIP): all traffic goes to the other server.
    both = ",".join(LBS)
    assert set(environment.salt(both, "gdl_lb.drain", APP_SERVERS[0]).values()) == {True}
    try:
        assert set(environment.salt(both, "gdl_lb.wait_drained", APP_SERVERS[0]).values()) == {True}
        assert set(poll(environment.url, 6)) == {APP_SERVERS[1]}
    finally:
        assert set(environment.salt(both, "gdl_lb.ready", APP_SERVERS[0]).values()) == {True}
    assert wait_for(lambda: set(poll(environment.url, 4)) == set(APP_SERVERS))


def test_dead_gunicorn_costs_at_most_two_requests(environment: Environment) -> None:
    victim, survivor = APP_SERVERS
    assert wait_for(lambda: set(poll(environment.url, 4)) == set(APP_SERVERS))
    out = environment.run_on(victim, "service", f"gdl-{APP}", "stop")
    answers = poll(environment.url, 30)
    failures = [answer for answer in answers if answer.startswith("failed")]
    assert len(failures) <= 2, answers
    # After the failures, everything goes to the survivor.
    assert set(answers[-20:]) == {survivor}, (out, answers)

    environment.run_on(victim, "service", f"gdl-{APP}", "start")
    started = time.monotonic()
    # Back in rotation once two health checks passed (bounded wait, not a timing).
    assert wait_for(lambda: victim in poll(environment.url, 4), timeout=5)
    print(
        f"\nfigures: gunicorn stopped: {len(failures)} of {len(answers)} requests failed; "
        f"back in rotation after {time.monotonic() - started:.1f} s"
    )


def test_vip_moves_when_the_vrrp_master_stops(environment: Environment) -> None:
    vip = environment.network.vip
    holders = environment.salt(",".join(LBS), "gdl_lb.holds_vip", vip)
    (master_lb,) = [name for name, holds in holders.items() if holds is True]
    (backup_lb,) = [name for name in LBS if name != master_lb]
    assert get(environment.url)[1]["x-load-balancer"] == master_lb
    try:
        environment.run_on(master_lb, "service", "keepalived", "stop")  # SIGTERM
        stopped = time.monotonic()
        moved = wait_for(
            lambda: _answering_lb(environment.url) == backup_lb, timeout=3, interval=0.05
        )
        assert moved, f"{backup_lb} did not take {vip} over"
        print(
            f"\nfigures: keepalived stopped: VIP answered by {backup_lb} after "
            f"{time.monotonic() - stopped:.2f} s"
        )
        assert environment.salt(backup_lb, "gdl_lb.holds_vip", vip)[backup_lb] is True
        assert environment.salt(master_lb, "gdl_lb.holds_vip", vip)[master_lb] is False
    finally:
        # The state brings keepalived back; nopreempt keeps the VIP where it is.
        returns = environment.salt(master_lb, "state.apply", "gdl.lb")
        assert failed_states(returns) == []
    assert _answering_lb(environment.url) == backup_lb


def test_vip_moves_when_haproxy_dies_on_the_vrrp_master(environment: Environment) -> None:
    vip = environment.network.vip
    holders = environment.salt(",".join(LBS), "gdl_lb.holds_vip", vip)
    (master_lb,) = [name for name, holds in holders.items() if holds is True]
    (backup_lb,) = [name for name in LBS if name != master_lb]
    try:
        environment.run_on(master_lb, "killall", "-KILL", "haproxy")
        killed = time.monotonic()
        # keepalived's check fails the moment haproxy ends: the master gives the VIP
        # up at once and the backup takes it (bounded wait, not a timing).
        moved = wait_for(
            lambda: _answering_lb(environment.url) == backup_lb, timeout=10, interval=0.05
        )
        assert moved, f"{backup_lb} did not take {vip} over"
        print(
            f"\nfigures: haproxy killed: VIP answered by {backup_lb} after "
            f"{time.monotonic() - killed:.2f} s"
        )
        assert environment.salt(master_lb, "gdl_lb.holds_vip", vip)[master_lb] is False
        assert environment.salt(backup_lb, "gdl_lb.holds_vip", vip)[backup_lb] is True
    finally:
        returns = environment.salt(master_lb, "state.apply", "gdl.lb")
        assert failed_states(returns) == []
    assert set(poll(environment.url, 4)) == set(APP_SERVERS)


def _answering_lb(url: str) -> str | None:
    try:
        return get(url, timeout=0.5)[1].get("x-load-balancer")
    except OSError:
        return None


def test_apps_need_no_internet(environment: Environment) -> None:
    # The release came from the master's fileserver, with its requirements installed
    # there from wheels; the venv has them, compiled by the server's own Python.
    release = f"/srv/gdl/{APP}/releases/1.0.0"
    listing = environment.run_on(APP_SERVERS[0], "ls", f"{release}/site-packages")
    assert re.search(r"^flask-.*\.dist-info$", listing, re.IGNORECASE | re.MULTILINE), listing
    imported = environment.run_on(
        APP_SERVERS[0],
        f"{release}/venv/bin/python",
        "-c",
        "import flask, gunicorn, markdown; print('imported')",
    )
    assert imported.strip() == "imported", imported
    link = environment.run_on(APP_SERVERS[0], "readlink", f"/srv/gdl/{APP}/current")
    assert link.strip() == f"/srv/gdl/{APP}/releases/1.0.0"
    owner = environment.run_on(APP_SERVERS[0], "ps", "-o", "user=", "-C", "gunicorn")
    assert owner.split() and set(owner.split()) == {"gdl"}, owner


def test_haproxy_socket_is_root_only(environment: Environment) -> None:
    mode = environment.run_on(LBS[0], "stat", "-c", "%a %U", "/run/haproxy/admin.sock")
    assert mode.strip() == "600 root"
    mode = environment.run_on(LBS[0], "stat", "-c", "%a", "/etc/keepalived/keepalived.conf")
    assert mode.strip() == "600"


def test_minions_fetch_the_states_and_releases_but_not_the_checkout(
    environment: Environment,
) -> None:
    """The master serves what minions need (roles, orchestration, gdl_lb, releases), no more."""
    minion = APP_SERVERS[0]
    served = environment.salt(minion, "cp.list_master")[minion]
    assert isinstance(served, list), served
    assert "gdl/app/init.sls" in served and "top.sls" in served
    assert "orch/build.sls" in served and "_modules/gdl_lb.py" in served
    assert f"gdl-releases/{APP}/{APP}-1.0.0.tar.gz" in served
    outside = ("tests/", "bench/", "apps/", "docs/", "gdl/providers/", "README.md", "setup.py")
    assert not [path for path in served if path.startswith(outside)], served
    for path in ("tests/conftest.py", "bench/run.py", f"apps/{APP}/app.yaml", "bootstrap.sh"):
        fetched = environment.salt(minion, "cp.get_file_str", f"salt://{path}")[minion]
        assert fetched is False, f"a minion fetched salt://{path}"


def _vip_holder(environment: Environment) -> tuple[str, str]:
    """(the LB holding the VIP, the other one), once exactly one holds it."""
    vip = environment.network.vip

    def holders() -> list[str]:
        answers = environment.salt(",".join(LBS), "gdl_lb.holds_vip", vip)
        return [name for name, holds in answers.items() if holds is True]

    assert wait_for(lambda: len(holders()) == 1, timeout=WAIT, interval=0.5), holders()
    (holder,) = holders()
    return holder, next(name for name in LBS if name != holder)


def _with_vrrp_profile(environment: Environment, profile: str) -> None:
    """Write the environment's pillar with ``profile`` and apply the lb role on both LBs."""
    assert environment.settings is not None and environment.record is not None
    record = environment.record.with_vrrp_profile(profile)
    env_pillar.write(
        environment.settings.pillar_dir,
        record,
        environment.network,
        environment.servers.values(),
        APP_SERVERS,
        env_pillar.built_releases(environment.settings, APP),
    )
    assert failed_states(environment.salt(",".join(LBS), "state.apply", "gdl.lb")) == []


@pytest.mark.parametrize("profile", ["fast", "default"])
def test_the_lb_taking_the_vip_tells_the_masters_event_bus(
    environment: Environment, profile: str
) -> None:
    """haproxy dies on the VRRP master: under either profile the other LB serves the VIP,
    and its keepalived fires gdl/vip/<app>-<env>/master naming it on the master's bus."""
    import salt.config
    import salt.utils.event

    tag = f"gdl/vip/{APP}-{ENV}/master"
    opts = salt.config.master_config(str(environment.master.conf_file))
    try:
        if profile != "default":
            _with_vrrp_profile(environment, profile)
        master_lb, backup_lb = _vip_holder(environment)
        assert set(poll(environment.url, 4)) == set(APP_SERVERS)
        with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
            environment.run_on(master_lb, "killall", "-KILL", "haproxy")
            moved = wait_for(
                lambda: _answering_lb(environment.url) == backup_lb, timeout=10, interval=0.05
            )
            assert moved, f"{backup_lb} did not take the VIP over ({profile})"
            event = None
            deadline = time.monotonic() + WAIT
            while event is None and time.monotonic() < deadline:
                event = bus.get_event(wait=1, tag=tag, full=True)
        assert event is not None, f"no {tag} event on the master's bus"
        assert event["tag"] == tag
        assert event["data"]["id"] == backup_lb  # the minion that sent it
        sent = event["data"]["data"]
        assert sent["holder"] == backup_lb, sent
        assert sent["vip"] == environment.network.vip
        assert (sent["app"], sent["environment"]) == (APP, ENV)
    finally:
        returns = environment.salt(",".join(LBS), "state.apply", "gdl.lb")
        assert failed_states(returns) == []
        if profile != "default":
            _with_vrrp_profile(environment, "default")
    assert wait_for(lambda: set(poll(environment.url, 4)) == set(APP_SERVERS))


# Sends VRRPv3 adverts (RFC 5798) for a router id at priority 255, from a given
# source address (forged or not), to each given address, every 50 ms for a while.
FORGED_ADVERTS = r"""
import socket, struct, sys, time

source, vrid, vip, seconds, *targets = sys.argv[1:]


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def advert(destination):
    body = struct.pack("!BBBBHH4s", 0x31, int(vrid), 255, 1, 25, 0, socket.inet_aton(vip))
    pseudo = socket.inet_aton(source) + socket.inet_aton(destination)
    pseudo += struct.pack("!BBH", 0, 112, len(body))
    body = body[:6] + struct.pack("!H", checksum(pseudo + body)) + body[8:]
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xC0, 20 + len(body), 0, 0, 255, 112, 0,
        socket.inet_aton(source), socket.inet_aton(destination),
    )
    return header + body


sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
sent = 0
deadline = time.monotonic() + float(seconds)
while time.monotonic() < deadline:
    for target in [*targets, "224.0.0.18"]:
        try:
            sock.sendto(advert(target), (target, 0))
            sent += 1
        except OSError:
            pass
    time.sleep(0.05)
print(sent)
"""


def test_vrrp_adverts_from_a_third_host_never_take_the_vip(environment: Environment) -> None:
    """Fast profile (VRRPv3, no authentication): an app server of the environment, root
    there, sends adverts at the highest priority for the pair's router id, from its own
    address and forging the backup's: the VIP stays where it is."""
    vip = environment.network.vip
    router_id = str(environment.network.router_id)
    attacker = APP_SERVERS[0]
    try:
        _with_vrrp_profile(environment, "fast")
        master_lb, backup_lb = _vip_holder(environment)
        addresses = {name: environment.servers[name].address for name in [*LBS, attacker]}
        for source in (addresses[attacker], addresses[backup_lb]):
            argv = environment.provider.run(
                attacker,
                [
                    "python3",
                    "-c",
                    FORGED_ADVERTS,
                    source,
                    router_id,
                    vip,
                    "3",
                    addresses[master_lb],
                    addresses[backup_lb],
                ],
            )
            sender = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            holders = []
            while sender.poll() is None:
                holders.append(_answering_lb(environment.url))
                time.sleep(0.1)
            assert int(sender.stdout.read() or 0) > 0, "no advert was sent"
            holders.append(_answering_lb(environment.url))
            assert set(holders) == {master_lb}, (source, holders)
            assert environment.salt(master_lb, "gdl_lb.holds_vip", vip)[master_lb] is True
            assert environment.salt(backup_lb, "gdl_lb.holds_vip", vip)[backup_lb] is False
    finally:
        _with_vrrp_profile(environment, "default")
    assert wait_for(lambda: set(poll(environment.url, 4)) == set(APP_SERVERS))


def test_servers_find_each_other_by_name_through_one_block_that_clean_removes(
    environment: Environment,
) -> None:
    server = APP_SERVERS[0]
    marker = f"# gdl {APP}-{ENV}: its servers, written by Salt"

    def hosts_file() -> str:
        return environment.run_on(server, "cat", "/etc/hosts")

    assert hosts_file().count(marker) == 1
    for name in APP_SERVERS + LBS:
        assert name in environment.run_on(server, "getent", "hosts", name).split()
    try:
        cleaned = environment.salt(server, "state.apply", "gdl.common.clean")
        assert failed_states(cleaned) == []
        assert marker not in hosts_file()
    finally:
        again = environment.salt(server, "state.apply", "gdl.common")
    assert failed_states(again) == []
    assert hosts_file().count(marker) == 1
