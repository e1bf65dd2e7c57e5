"""The whole product on OpenStack: gdl.build and gdl.destroy through the runner, on the rig.

The rig is a cloud network (Neutron's Linux bridge, DHCP, L3 and metadata agents): its
instances boot as local hosts plugged in by tap devices, take their addresses by DHCP,
and cloud-init reads gdl's user data from the metadata service; the minions join a real
master with their preseeded keys, the states run, and keepalived moves the VIP between
the load balancers, as port security allows. The master is outside the cloud, on the
external network's gateway address: it reaches the environment only through floating
IPs, and the minions reach it through their router's SNAT.

The tests run in order and share one master: the story of an operator on a cloud.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import itertools
import json
import os
import re
import secrets
import ssl
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from gdl import certs, naming
from gdl.providers.openstack import MARK_SERVER, group_name, vip_port_name
from gdl_harness.salt_daemons import SaltMaster
from gdl_harness.salt_process import salt_script
from tests.openstack.masters import outside_master
from tests.support.runs import run, served_by

pytestmark = [pytest.mark.integration, pytest.mark.long]

APP = "blog"
ENV = "dev"
# The other project's shared network (the rig's own networks are 10.231.0.0/24 and up).
SHARED_CIDR = "10.236.0.0/24"
OTHER_CLOUD = "gdl-rig-other"
BUILD_TIMEOUT = 1200
DEMO_CLOUD = "gdl-rig-demo"
NETWORK = "private"


def cli(rig: dict[str, Any], cloud: str, *args: str) -> Any:
    """The ``openstack`` command line, as an operator would read the cloud; JSON out."""
    result = subprocess.run(
        ["openstack", "--os-cloud", cloud, *args, "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(rig["clouds_file"])},
        check=False,
    )
    assert result.returncode == 0, f"openstack {' '.join(args)}: {result.stderr}"
    return json.loads(result.stdout)


def cli_change(rig: dict[str, Any], *args: str) -> None:
    """An ``openstack`` command that changes the demo project and prints nothing."""
    result = subprocess.run(
        ["openstack", "--os-cloud", DEMO_CLOUD, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(rig["clouds_file"])},
        check=False,
    )
    assert result.returncode == 0, f"openstack {' '.join(args)}: {result.stderr}"


def host_pid(rig: dict[str, Any], server_id: str) -> int:
    """PID 1 of the local host an instance runs as (the rig driver's record)."""
    record = json.loads((rig["state"] / "data" / "hosts" / server_id / "host.json").read_text())
    return int(record["pid"])


def in_host(pid: int, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "-u", "-n", "-p", "--", *command],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def holds(pid: int, address: str) -> bool:
    shown = in_host(pid, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    return f" {address}/" in shown


def floating_ip(demo, env: str) -> str:
    """The environment's floating IP: the address on the VIP port, seen from outside."""
    vip_port = demo.network.find_port(vip_port_name(APP, env))
    (fip,) = demo.network.ips(port_id=vip_port.id)
    return fip.floating_ip_address


def answers(url: str, timeout: float = 1, context: ssl.SSLContext | None = None) -> str | None:
    """Who served one request to ``url`` (its X-Served-By), None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.headers["X-Served-By"]
    except OSError:
        return None


def until(check, seconds: float) -> float | None:
    """Seconds until ``check()`` is true (polled every 0.1 s), None if not within ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def cloud_taps(rig: dict[str, Any]) -> set[str]:
    """The tap devices in the rig's cloud namespace."""
    shown = subprocess.run(
        ["ip", "-n", rig["cloud_netns"], "-o", "link", "show"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    names = {line.split(": ")[1].split("@")[0] for line in shown.splitlines()}
    return {name for name in names if name.startswith("tap")}


def taps_of(demo, app: str, env: str) -> set[str]:
    """The tap devices of the environment's servers' ports (the VIP port has none)."""
    marks = naming.ownership(app, env, "app")
    tag = f"gdl_app={marks['gdl_app']},gdl_env={marks['gdl_env']}"
    return {f"tap{p.id[:11]}" for p in demo.network.ports(tags=tag) if p.device_id}


def lb_hosts(rig: dict[str, Any], demo, env: str) -> dict[str, int]:
    """The environment's load balancers: name -> PID 1 of its host."""
    servers = env_servers(demo, APP, env)
    return {s.name: host_pid(rig, s.id) for s in servers if s.name.startswith("lb-")}


def vip_holder(rig: dict[str, Any], demo, env: str) -> tuple[str, int]:
    vip = demo.network.find_port(vip_port_name(APP, env)).fixed_ips[0]["ip_address"]
    holders = [(name, pid) for name, pid in lb_hosts(rig, demo, env).items() if holds(pid, vip)]
    assert len(holders) == 1, holders
    return holders[0]


def env_servers(demo, app: str, env: str) -> list:
    return [s for s in demo.compute.servers() if naming.owned_by(s.metadata or {}, app, env)]


def leftovers(demo, rig: dict[str, Any], app: str, env: str) -> list[str]:
    """Whatever of the environment is still in the cloud or on the machine."""
    marks = naming.ownership(app, env, "app")
    tag = f"gdl_app={marks['gdl_app']},gdl_env={marks['gdl_env']}"
    found = [f"server {s.name}" for s in env_servers(demo, app, env)]
    found += [f"port {p.name or p.id}" for p in demo.network.ports(tags=tag)]
    found += [f"floating ip {f.floating_ip_address}" for f in demo.network.ips(tags=tag)]
    found += [f"security group {g.name}" for g in demo.network.security_groups(tags=tag)]
    groups = {group_name(app, env, role) for role in ("app", "lb")}
    found += [f"server group {g.name}" for g in demo.compute.server_groups() if g.name in groups]
    if demo.network.find_port(vip_port_name(app, env)) is not None:
        found.append("VIP port")
    netns = Path("/run/netns")
    suffix = f"-{app}-{env}-"
    if netns.is_dir():
        found += [f"namespace {n.name}" for n in netns.iterdir() if suffix in n.name]
    return found


def build(
    master: SaltMaster, env: str, servers: int, *more: str, timeout: float = BUILD_TIMEOUT
) -> tuple[int, Any, str]:
    """``gdl.build`` of the blog on the rig, as the operator types it."""
    return run(
        master,
        "gdl.build",
        f"app={APP}",
        f"env={env}",
        f"servers={servers}",
        "provider=openstack",
        *more,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def os_master(tmp_path_factory, rig, admin, openstack_section) -> Iterator[SaltMaster]:
    """A master outside the cloud, with gdl's OpenStack settings."""
    settings = {
        **openstack_section,
        # The rig's images have Salt: a minion answers in seconds when the machine
        # is quiet, in minutes when the whole test suite runs beside it.
        "minion_timeout": 600,
    }
    with outside_master(tmp_path_factory, admin, "osmaster", settings) as master:
        try:
            yield master
        finally:
            run(master, "gdl.destroy", f"app={APP}", f"env={ENV}")


@pytest.fixture(scope="module")
def built(os_master: SaltMaster, demo) -> dict:
    """The first environment, served over HTTPS with a certificate of the master's CA."""
    started = time.monotonic()
    code, data, output = build(os_master, ENV, 2, "tls=auto")
    assert code == 0, output
    return {"result": data, "seconds": time.monotonic() - started, "output": output}


@pytest.fixture(scope="module")
def trusted(built, os_master: SaltMaster) -> ssl.SSLContext:
    """A client that trusts the master's CA, as the operator's browser is told to."""
    return ssl.create_default_context(cafile=str(certs.ca_paths(os_master.state_dir)[0]))


def test_a_request_the_cloud_cannot_carry_is_one_line_and_makes_nothing(os_master, demo, rig):
    result = os_master.run(
        "gdl.build", f"app={APP}", "env=bad", "servers=2", "size=m9.nope", "provider=openstack"
    )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert result.returncode != 0
    assert len(lines) == 1 and "m9.nope" in lines[0], result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert leftovers(demo, rig, APP, "bad") == []
    assert not list((os_master.pki_dir / "minions").glob("*"))


def test_build_serves_the_blog_at_its_floating_ip_from_both_app_servers(built, demo, trusted):
    url = f"https://{floating_ip(demo, ENV)}/"
    assert built["result"]["url"] == url
    hosts = served_by(url, 20, trusted)
    assert Counter(hosts) == {f"app-0-{APP}-{ENV}": 10, f"app-1-{APP}-{ENV}": 10}
    assert all(a != b for a, b in itertools.pairwise(hosts)), hosts


def test_the_cloud_shows_the_environment(built, rig, os_master, demo):
    cloud = DEMO_CLOUD
    names = [naming.server_name(role, i, APP, ENV) for role in ("app", "lb") for i in (0, 1)]
    lb_names = [n for n in names if n.startswith("lb-")]
    # What an operator would type; at once, since each command starts a whole client.
    commands = {
        "servers": ("server", "list"),
        "groups": ("server", "group", "list", "--long"),
        "vip_port": ("port", "show", vip_port_name(APP, ENV)),
        "floating_ips": ("floating", "ip", "list"),
        "rules": ("security", "group", "rule", "list", f"gdl-{APP}-{ENV}-app", "--long"),
        **{name: ("port", "show", name) for name in lb_names},  # ports carry their server's name
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {key: pool.submit(cli, rig, cloud, *args) for key, args in commands.items()}
        shown = {key: future.result() for key, future in futures.items()}

    servers = {s["Name"]: s for s in shown["servers"]}
    for name in names:
        assert servers[name]["Status"] == "ACTIVE", servers[name]
        # The key was preseeded and accepted; none waits for acceptance.
        assert (os_master.pki_dir / "minions" / name).is_file()
    assert not list((os_master.pki_dir / "minions_pre").glob("*"))

    groups = {g["Name"]: g for g in shown["groups"]}

    def policy_and_members(role: str) -> tuple[str, set[str]]:
        group = groups[group_name(APP, ENV, role)]
        members = group["Members"] if "Members" in group else group["Member IDs"]
        return str(group.get("Policy", group)), set(members)

    policy, members = policy_and_members("app")
    assert "soft-anti-affinity" in policy
    assert {servers[n]["ID"] for n in names[:2]} <= members
    # The rig has one compute host: the pair's hard anti-affinity group had no valid host
    # for the second LB, which was made again in a soft one (test_the_pair_shares_...).
    policy, members = policy_and_members("lb")
    assert "soft-anti-affinity" in policy
    assert members and members <= {servers[n]["ID"] for n in lb_names}

    vip_port = shown["vip_port"]
    vip = vip_port["fixed_ips"][0]["ip_address"]
    for name in lb_names:
        port = shown[name]
        assert port["device_id"] == servers[name]["ID"]
        pairs = [p["ip_address"] for p in port["allowed_address_pairs"] or []]
        assert pairs == [vip] or pairs == [f"{vip}/32"], port["allowed_address_pairs"]
    for name in names[:2]:  # the app servers' ports carry no pair (read through the SDK)
        (port,) = demo.network.ports(device_id=servers[name]["ID"])
        assert not port.allowed_address_pairs
    fips = [f for f in shown["floating_ips"] if f["Port"] == vip_port["id"]]
    assert len(fips) == 1
    assert built["result"]["url"] == f"https://{fips[0]['Floating IP Address']}/"

    rules = shown["rules"]
    assert {(r["IP Protocol"], r["Port Range"]) for r in rules} >= {("tcp", "80:80")}


def test_the_pair_shares_the_one_host_in_a_soft_group_with_a_warning_and_both_serve(
    built, rig, demo, os_master
):
    output = built["output"]
    assert "warning: the load balancers are placed with soft-anti-affinity" in output, output
    lbs = lb_hosts(rig, demo, ENV)
    assert "warning: " + " and ".join(sorted(lbs)) + " run on the same host" in output
    for name, pid in lbs.items():
        for daemon in ("haproxy", "keepalived"):
            assert in_host(pid, "pgrep", "-x", daemon).returncode == 0, (name, daemon)
    # Both serve: each one's haproxy has both app servers in rotation.
    (status_code, status, shown) = run(os_master, "gdl.status", f"app={APP}", f"env={ENV}")
    assert status_code == 0, shown
    assert any("run on the same host" in w for w in status["warnings"]), status
    assert [b["status"] for b in status["backends"]] == ["UP", "UP"], status


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """One request from the master with curl (its exit status tells refused from dropped)."""
    return subprocess.run(
        ["curl", "-sS", "--max-time", "5", "-o", "/dev/null", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# curl's exit statuses: nothing listens (a reset) / no answer at all (a dropped packet).
CURL_REFUSED, CURL_TIMED_OUT = 7, 28


def test_https_at_the_floating_ip_verifies_against_the_masters_ca(built, demo, os_master):
    fip = floating_ip(demo, ENV)
    url = built["result"]["url"]
    assert url == f"https://{fip}/"
    ca_file = certs.ca_paths(os_master.state_dir)[0]
    done = curl("-w", "%{http_code} %{ssl_verify_result}", "--cacert", str(ca_file), url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "200 0"
    assert curl(url).returncode != 0  # without the CA the certificate is not trusted
    done = curl("-w", "%{http_code} %{redirect_url}", f"http://{fip}/posts?page=2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"301 https://{fip}/posts?page=2"


def test_metrics_are_on_each_load_balancers_own_address_for_the_master_only(built, rig, demo):
    servers = env_servers(demo, APP, ENV)
    lbs = {s.name: server_address(demo, s.id) for s in servers if s.name.startswith("lb-")}
    vip = demo.network.find_port(vip_port_name(APP, ENV)).fixed_ips[0]["ip_address"]
    # The floating IP leads to the VIP, where haproxy serves no metrics.
    assert curl(f"http://{floating_ip(demo, ENV)}:8404/metrics").returncode == CURL_REFUSED
    # A master outside the cloud reaches the fixed addresses through a route (docs/metrics.md).
    with route_to_fixed_addresses(demo):
        for name, address in lbs.items():
            with urllib.request.urlopen(f"http://{address}:8404/metrics", timeout=10) as got:
                metrics = got.read().decode()
            # Both app servers in rotation, as this LB's own haproxy sees them.
            active = rf'haproxy_backend_active_servers\{{[^}}]*proxy="be_{APP}_{ENV}"[^}}]*\}} 2\b'
            assert re.search(active, metrics), (name, metrics[-2000:])
            done = curl("-w", "%{http_code}", f"http://{address}:8404/stats")
            assert done.stdout == "200", (name, done.stderr)
        assert curl(f"http://{vip}:8404/metrics").returncode == CURL_REFUSED
    # From inside the cloud the security group drops it: only the master is admitted.
    (app_server,) = [s for s in servers if s.name == f"app-0-{APP}-{ENV}"]
    pid = host_pid(rig, app_server.id)
    for name, address in lbs.items():
        fetched = in_host(
            pid, "curl", "-s", "-o", "/dev/null", "--max-time", "3", f"http://{address}:8404/"
        )
        assert fetched.returncode == CURL_TIMED_OUT, (name, fetched.returncode)


def test_user_data_carries_the_minion_identity(built, rig, os_master, admin):
    for role in ("app", "lb"):
        name = naming.server_name(role, 0, APP, ENV)
        (server,) = [s for s in admin.compute.servers(all_projects=True) if s.name == name]
        shown = admin.compute.get(f"/servers/{server.id}", microversion="2.3").json()["server"]
        document = yaml.safe_load(
            base64.b64decode(shown["OS-EXT-SRV-ATTR:user_data"]).decode().split("\n", 1)[1]
        )
        files = {f["path"]: f["content"] for f in document["write_files"]}
        config = yaml.safe_load(files["/etc/salt/minion.d/gdl.conf"])
        assert config["id"] == name
        assert config["master"] == os_master.interface
        accepted = (os_master.pki_dir / "minions" / name).read_text().strip()
        assert files["/etc/salt/pki/minion/minion.pub"].strip() == accepted
        assert "PRIVATE KEY" in files["/etc/salt/pki/minion/minion.pem"]


def test_only_root_on_a_server_reaches_the_metadata_service(built, rig, demo):
    # The user data above, minion key included, is the metadata service's to give:
    # after first boot a process of any other user on the server is refused it.
    fetch = (
        "import urllib.request; "
        "urllib.request.urlopen('http://169.254.169.254/openstack/latest/user_data', timeout=5)"
    )
    for server in env_servers(demo, APP, ENV):
        pid = host_pid(rig, server.id)
        as_root = in_host(pid, "python3", "-c", fetch)
        assert as_root.returncode == 0, f"{server.name}: {as_root.stderr}"
        nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        as_nobody = in_host(pid, *nobody, "python3", "-c", fetch)
        assert as_nobody.returncode != 0, f"{server.name}: nobody read the user data"
        assert "Connection refused" in as_nobody.stderr, as_nobody.stderr


def test_a_port_with_no_rule_for_it_refuses(built, rig, demo, trusted):
    holder, pid = vip_holder(rig, demo, ENV)
    fip = floating_ip(demo, ENV)
    # Something listens on the load balancer at a port its security group has no rule for
    # (in the host's network namespace only: nsenter then runs it as its own process).
    listener = subprocess.Popen(
        ["nsenter", "-t", str(pid), "-n", "--", "python3", "-m", "http.server", "8089"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        inside = until(
            lambda: (
                in_host(pid, "curl", "-s", "-o", "/dev/null", "http://127.0.0.1:8089/").returncode
                == 0
            ),
            15,
        )
        assert inside is not None, f"nothing listens on {holder}:8089"
        assert answers(f"https://{fip}/", 5, trusted)  # the port with a rule does answer
        assert answers(f"http://{fip}:8089/", timeout=3) is None
    finally:
        listener.kill()
        listener.wait(10)


def test_an_address_that_is_not_its_own_is_not_heard(built, rig, demo):
    (server,) = [s for s in env_servers(demo, APP, ENV) if s.name == f"app-0-{APP}-{ENV}"]
    pid = host_pid(rig, server.id)
    vip = demo.network.find_port(vip_port_name(APP, ENV)).fixed_ips[0]["ip_address"]
    subnet = demo.network.find_subnet("private-subnet")
    taken = {ip["ip_address"] for p in demo.network.ports() for ip in p.fixed_ips}
    spoofed = next(
        str(a)
        for a in reversed(list(ipaddress.ip_network(subnet.cidr).hosts()))
        if str(a) not in taken
    )

    def get_vip(source: str) -> bool:
        fetched = in_host(
            pid,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "3",
            "--interface",
            source,
            f"http://{vip}/",
        )
        return fetched.returncode == 0

    own = server_address(demo, server.id)
    assert get_vip(own)  # the load balancers hear the app server at its own address
    added = in_host(pid, "ip", "addr", "add", f"{spoofed}/32", "dev", "eth0")
    assert added.returncode == 0, added.stderr
    try:
        assert not get_vip(spoofed), f"{server.name} was heard at {spoofed}, not its address"
    finally:
        in_host(pid, "ip", "addr", "del", f"{spoofed}/32", "dev", "eth0")


def server_address(demo, server_id: str) -> str:
    (port,) = demo.network.ports(device_id=server_id)
    return port.fixed_ips[0]["ip_address"]


def test_a_load_balancer_without_the_vip_in_its_pairs_cannot_serve_it(built, rig, demo, trusted):
    holder, _pid = vip_holder(rig, demo, ENV)
    url = f"https://{floating_ip(demo, ENV)}/"
    (port,) = demo.network.ports(tags=f"{MARK_SERVER}={holder}")
    (pair,) = port.allowed_address_pairs
    # As an operator would take it away.
    taken = f"ip-address={pair['ip_address']},mac-address={pair['mac_address']}"
    cli_change(rig, "port", "unset", "--allowed-address", taken, port.id)
    try:
        assert until(lambda: answers(url, 1, trusted) is None, 60) is not None, (
            f"{holder} still serves"
        )
        # Still the VRRP master (keepalived cannot know), and yet nothing is served.
        assert vip_holder(rig, demo, ENV)[0] == holder
        assert answers(url, 3, trusted) is None
    finally:
        # By id: the port object still lists the pair, so the SDK would send no change.
        demo.network.update_port(port.id, allowed_address_pairs=[pair])
    assert until(lambda: answers(url, 1, trusted) is not None, 60) is not None, (
        "the VIP did not come back"
    )


def test_a_disassociated_floating_ip_stops_answering(built, rig, demo, trusted):
    vip_port = demo.network.find_port(vip_port_name(APP, ENV))
    (fip,) = demo.network.ips(port_id=vip_port.id)
    url = f"https://{fip.floating_ip_address}/"
    assert answers(url, 5, trusted)
    cli_change(rig, "floating", "ip", "unset", "--port", fip.id)
    try:
        assert until(lambda: answers(url, 1, trusted) is None, 60) is not None, "it still answers"
    finally:
        demo.network.update_ip(fip.id, port_id=vip_port.id)  # by id, as above
    assert until(lambda: answers(url, 1, trusted) is not None, 60) is not None, (
        "it did not answer again"
    )


def test_killing_the_vrrp_masters_keepalived_moves_the_vip(built, rig, demo, os_master, trusted):
    vip = demo.network.find_port(vip_port_name(APP, ENV)).fixed_ips[0]["ip_address"]
    url = f"https://{floating_ip(demo, ENV)}/"
    lbs = lb_hosts(rig, demo, ENV)
    holder, _pid = vip_holder(rig, demo, ENV)
    (other,) = set(lbs) - {holder}
    assert answers(url, 5, trusted)
    killed = in_host(lbs[holder], "pkill", "-TERM", "-x", "keepalived")
    assert killed.returncode == 0, killed.stderr
    started = time.monotonic()
    moved_after = until(lambda: holds(lbs[other], vip), 10)
    assert moved_after is not None, f"{other} did not take {vip}"
    # The floating IP answers again, through the other load balancer.
    while answers(url, 0.5, trusted) is None and time.monotonic() - started < 10:
        time.sleep(0.05)
    answered_after = time.monotonic() - started
    assert answered_after <= 4, (
        f"the floating IP answered {answered_after:.1f} s after the kill "
        f"(the VIP moved after {moved_after:.1f} s)"
    )
    assert not holds(lbs[holder], vip)
    # A re-run converges: keepalived runs again on the old holder.
    code, data, output = build(os_master, ENV, 2)
    assert code == 0, output
    assert in_host(lbs[holder], "pgrep", "-x", "keepalived").returncode == 0
    assert data["url"] == url  # a build without TLS arguments keeps HTTPS


@contextlib.contextmanager
def route_to(cidr: str, gateway: str) -> Iterator[None]:
    """The machine (the master) reaches ``cidr`` through ``gateway``, a router's outside address.

    As a master on a routed network or a VPN has one: no floating IP is needed to
    reach the servers' fixed addresses.
    """
    subprocess.run(["ip", "route", "replace", cidr, "via", gateway], check=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run(["ip", "route", "del", cidr, "via", gateway], check=False, timeout=30)


def route_to_fixed_addresses(demo) -> contextlib.AbstractContextManager[None]:
    """A route to the demo project's private network, through router1."""
    router = demo.network.find_router("router1")
    gateway = router.external_gateway_info["external_fixed_ips"][0]["ip_address"]
    return route_to(demo.network.find_subnet("private-subnet").cidr, gateway)


@pytest.fixture
def other_project(rig, admin, tmp_path) -> Iterator[dict[str, Any]]:
    """A second project the admin user works in with its admin role, on a shared network.

    The admin project owns the network, shared with every project, and the router from it
    to the external network; the machine (a master on a routed network) reaches its fixed
    addresses directly. Yields the project's connection, its clouds.yaml entry and the
    network; everything goes at the end.
    """
    project = admin.identity.create_project(
        name=f"gdl-other-{secrets.token_hex(3)}", domain_id="default"
    )
    network = subnet = router = None
    gateway = ""
    try:
        user = admin.identity.find_user("admin")
        admin.identity.assign_project_role_to_user(project, user, admin.identity.find_role("admin"))
        network = admin.network.create_network(name=f"gdl-shared-{project.name}", shared=True)
        subnet = admin.network.create_subnet(
            network_id=network.id, ip_version=4, cidr=SHARED_CIDR, name=f"{network.name}-subnet"
        )
        public = admin.network.find_network("public")
        router = admin.network.create_router(
            name=network.name, external_gateway_info={"network_id": public.id}
        )
        admin.network.add_interface_to_router(router, subnet=subnet.id)
        gateway = router.external_gateway_info["external_fixed_ips"][0]["ip_address"]
        clouds = yaml.safe_load(Path(rig["clouds_file"]).read_text())
        entry = clouds["clouds"]["gdl-rig"]
        entry["auth"]["project_name"] = project.name
        clouds_file = tmp_path / "clouds.yaml"
        clouds_file.write_text(yaml.safe_dump({"clouds": {OTHER_CLOUD: entry}}))
        clouds_file.chmod(0o600)
        conn = admin.connect_as_project(
            {"id": project.id, "name": project.name, "domain_id": "default"}
        )
        with route_to(SHARED_CIDR, gateway):
            yield {"conn": conn, "clouds_file": clouds_file, "network": network, "id": project.id}
    finally:
        if router is not None:
            if subnet is not None:
                admin.network.remove_interface_from_router(router, subnet=subnet.id)
            admin.network.delete_router(router)
        if network is not None:
            for port in admin.network.ports(network_id=network.id):
                admin.network.delete_port(port)
            admin.network.delete_network(network)
        admin.identity.delete_project(project)


@pytest.fixture
def other_master(tmp_path_factory, admin, os_master, other_project) -> Iterator[SaltMaster]:
    """Another operator's master, for the same app and env in the other project.

    It works with the admin user's credentials, which see every project's ports and
    groups: whatever it lists, makes or removes must be its own project's. It names
    the shared network by its id and wants no floating IP: the VIP's fixed address is
    the environment's address. No key pair is named: none is given.
    """
    settings = {
        **os_master.gdl_settings["openstack"],
        "cloud": OTHER_CLOUD,
        "clouds_file": str(other_project["clouds_file"]),
        "network": other_project["network"].id,
        "floating_ip": False,
        "key_name": None,
    }
    with outside_master(tmp_path_factory, admin, "osother", settings) as master:
        try:
            yield master
        finally:
            run(master, "gdl.destroy", f"app={APP}", f"env={ENV}")


def project_parts(conn, project_id: str) -> list[str]:
    """Whatever of the blog's dev environment is in one project, seen with admin credentials."""
    marks = naming.ownership(APP, ENV, "app")
    tag = f"gdl_app={marks['gdl_app']},gdl_env={marks['gdl_env']}"
    found = [f"server {s.name}" for s in env_servers(conn, APP, ENV)]
    found += [f"port {p.name or p.id}" for p in conn.network.ports(tags=tag, project_id=project_id)]
    found += [f"floating ip {f.id}" for f in conn.network.ips(tags=tag, project_id=project_id)]
    found += [
        f"security group {g.name}"
        for g in conn.network.security_groups(tags=tag, project_id=project_id)
    ]
    found += [
        f"VIP port {p.id}"
        for p in conn.network.ports(name=vip_port_name(APP, ENV), project_id=project_id)
    ]
    groups = {group_name(APP, ENV, role) for role in ("app", "lb")}
    found += [f"server group {g.name}" for g in conn.compute.server_groups() if g.name in groups]
    return found


def test_the_same_environment_in_another_project_is_built_and_destroyed_apart(
    built, rig, demo, other_project, other_master, trusted
):
    ours = {s.id: s.name for s in env_servers(demo, APP, ENV)}
    parts = sorted(project_parts(demo, demo.current_project_id))
    url = f"https://{floating_ip(demo, ENV)}/"
    assert len(ours) == 4 and served_by(url, 4, trusted)

    conn, project_id = other_project["conn"], other_project["id"]
    code, data, output = build(other_master, ENV, 1)
    assert code == 0, output
    theirs = env_servers(conn, APP, ENV)
    assert len(theirs) == 3 and not set(s.id for s in theirs) & set(ours)
    assert [s.key_name for s in theirs] == [None] * 3
    vip_port = conn.network.find_port(vip_port_name(APP, ENV), project_id=project_id)
    vip = vip_port.fixed_ips[0]["ip_address"]
    assert vip_port.network_id == other_project["network"].id
    assert data["url"] == f"http://{vip}/"
    assert not list(conn.network.ips(project_id=project_id))
    assert served_by(f"http://{vip}/", 2) == [f"app-0-{APP}-{ENV}"] * 2
    code, status, output = run(other_master, "gdl.status", f"app={APP}", f"env={ENV}")
    assert code == 0, output
    # Nova lists addresses under the network's name; the setting is its id.
    assert status["url"] == f"http://{vip}/"
    addresses = {s["name"]: s["address"] for s in status["servers"]}
    assert sorted(addresses) == sorted(s.name for s in theirs)
    shared = ipaddress.ip_network(SHARED_CIDR)
    assert all(a and ipaddress.ip_address(a) in shared for a in addresses.values()), status

    code, _data, output = run(other_master, "gdl.destroy", f"app={APP}", f"env={ENV}")
    assert code == 0, output
    assert project_parts(conn, project_id) == []
    assert not [s for s in theirs if (rig["state"] / "data" / "hosts" / s.id).exists()]
    # The demo project's environment of the same name is whole and serving.
    assert {s.id: s.name for s in env_servers(demo, APP, ENV)} == ours
    assert sorted(project_parts(demo, demo.current_project_id)) == parts
    assert sorted(set(served_by(url, 4, trusted))) == [f"app-{i}-{APP}-{ENV}" for i in (0, 1)]


def test_destroy_removes_the_environment_and_its_hosts(built, rig, demo, os_master):
    taps = taps_of(demo, APP, ENV)
    assert len(taps) == 4 and taps <= cloud_taps(rig)
    ids = [s.id for s in env_servers(demo, APP, ENV)]
    code, _data, output = run(os_master, "gdl.destroy", f"app={APP}", f"env={ENV}")
    assert code == 0, output
    assert leftovers(demo, rig, APP, ENV) == []
    assert not taps & cloud_taps(rig)
    gone = [naming.server_name(r, i, APP, ENV) for r in ("app", "lb") for i in (0, 1)]
    assert not [n for n in gone if (os_master.pki_dir / "minions" / n).exists()]
    assert not [i for i in ids if (rig["state"] / "data" / "hosts" / i).exists()]


def test_destroy_after_a_build_killed_half_way_leaves_nothing(rig, demo, os_master):
    env = "half"
    build = subprocess.Popen(
        [
            salt_script("salt-run"),
            "-c",
            str(os_master.config_dir),
            "gdl.build",
            f"app={APP}",
            f"env={env}",
            "servers=1",
            "provider=openstack",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not env_servers(demo, APP, env) and time.monotonic() < deadline:
            assert build.poll() is None, "the build ended before making a server"
            time.sleep(0.5)
        assert env_servers(demo, APP, env), "the build made no server within 300 s"
    finally:
        os.killpg(build.pid, 9)
        build.wait(30)
    code, _data, output = run(os_master, "gdl.destroy", f"app={APP}", f"env={env}")
    assert code == 0, output
    assert leftovers(demo, rig, APP, env) == []
    assert not list((os_master.pki_dir / "minions").glob(f"*-{APP}-{env}"))
