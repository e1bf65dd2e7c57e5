"""The whole product on OpenStack: gdl.build and gdl.destroy through the runner, on the rig.

The rig's instances boot as local hosts (``rig/virt/gdl_hosts.py``): cloud-init runs the
user data gdl wrote, the minions join a real master with their preseeded keys, the states
run, and keepalived moves the VIP's address between the load balancers. The master is
bound to the private network's gateway address, which the rig puts on the bridge that
stands for that network. The floating IP is checked at the API: the rig has no L3 agent.

The tests run in order and share one master: the story of an operator on a cloud.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from gdl import naming
from gdl.providers.openstack import group_name, vip_port_name
from gdl_harness.salt_daemons import REPO_ROOT, SaltMaster, salt_script
from tests.support.runs import run, served_by

pytestmark = [pytest.mark.integration, pytest.mark.long]

APP = "blog"
ENV = "dev"
SECOND_ENV = "qa"
BUILD_TIMEOUT = 1200


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


def build(master: SaltMaster, env: str, servers: int) -> tuple[int, Any, str]:
    """``gdl.build`` of the blog on the rig, as the operator types it."""
    return run(
        master,
        "gdl.build",
        f"app={APP}",
        f"env={env}",
        f"servers={servers}",
        "provider=openstack",
        timeout=BUILD_TIMEOUT,
    )


@pytest.fixture(scope="module")
def os_master(tmp_path_factory, rig, demo, openstack_section) -> Iterator[SaltMaster]:
    """A master on the private network's gateway address, with gdl's OpenStack settings."""
    subnet = demo.network.find_subnet("private-subnet")
    gateway = subnet.gateway_ip
    master = SaltMaster(tmp_path_factory.mktemp("osmaster", numbered=True), gateway)
    master.gdl_settings = {
        "provider": "openstack",
        "openstack": {
            **openstack_section,
            "master_address": gateway,
            "master_port": master.ret_port,
            "publish_port": master.publish_port,
            # The rig's images have Salt: a minion answers in seconds when the machine
            # is quiet, in minutes when the whole test suite runs beside it.
            "minion_timeout": 600,
        },
    }
    master.write_config()
    providers = master.config_dir / "cloud.providers.d"
    profiles = master.config_dir / "cloud.profiles.d"
    providers.mkdir(exist_ok=True)
    profiles.mkdir(exist_ok=True)
    (providers / "openstack.conf").write_text(
        yaml.safe_dump({"gdl-openstack": {"driver": "gdl_openstack"}})
    )
    shutil.copy(REPO_ROOT / "cloud.profiles.d" / "openstack.conf", profiles / "openstack.conf")
    master.start()
    try:
        yield master
    finally:
        for env in (ENV, SECOND_ENV):
            run(master, "gdl.destroy", f"app={APP}", f"env={env}")
        master.stop()


@pytest.fixture(scope="module")
def built(os_master: SaltMaster, demo) -> dict:
    started = time.monotonic()
    code, data, output = build(os_master, ENV, 2)
    assert code == 0, output
    return {"result": data, "seconds": time.monotonic() - started}


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


def test_build_serves_the_blog_at_the_vip_from_both_app_servers(built, demo):
    vip = demo.network.find_port(vip_port_name(APP, ENV)).fixed_ips[0]["ip_address"]
    hosts = served_by(f"http://{vip}/", 20)
    assert Counter(hosts) == {f"app-0-{APP}-{ENV}": 10, f"app-1-{APP}-{ENV}": 10}
    assert all(a != b for a, b in itertools.pairwise(hosts)), hosts


def test_the_cloud_shows_the_environment(built, rig, os_master, demo):
    cloud = "gdl-rig-demo"
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
    for role in ("app", "lb"):
        group = groups[group_name(APP, ENV, role)]
        assert "anti-affinity" in str(group.get("Policy", group))
        members = {servers[n]["ID"] for n in names if n.startswith(f"{role}-")}
        assert members <= set(group["Members"] if "Members" in group else group["Member IDs"])

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
    assert built["result"]["url"] == f"http://{fips[0]['Floating IP Address']}/"

    rules = shown["rules"]
    assert {(r["IP Protocol"], r["Port Range"]) for r in rules} >= {("tcp", "80:80")}


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


def test_killing_the_vrrp_masters_keepalived_moves_the_vip(built, rig, demo, os_master):
    vip = demo.network.find_port(vip_port_name(APP, ENV)).fixed_ips[0]["ip_address"]
    lbs = {s.name: host_pid(rig, s.id) for s in env_servers(demo, APP, ENV) if s.name[:3] == "lb-"}
    holders = [name for name, pid in lbs.items() if holds(pid, vip)]
    assert len(holders) == 1, holders
    (holder,) = holders
    (other,) = set(lbs) - {holder}
    killed = in_host(lbs[holder], "pkill", "-TERM", "-x", "keepalived")
    assert killed.returncode == 0, killed.stderr
    started = time.monotonic()
    while not holds(lbs[other], vip) and time.monotonic() - started < 10:
        time.sleep(0.05)
    moved_after = time.monotonic() - started
    assert holds(lbs[other], vip), f"{other} did not take {vip}"
    assert moved_after <= 4, f"the VIP moved after {moved_after:.1f} s"
    assert served_by(f"http://{vip}/", 2)
    # A re-run converges: keepalived runs again on the old holder.
    code, _data, output = build(os_master, ENV, 2)
    assert code == 0, output
    assert in_host(lbs[holder], "pgrep", "-x", "keepalived").returncode == 0


def test_a_second_environment_outlives_the_destroy_of_the_first(built, rig, demo, os_master):
    code, _data, output = build(os_master, SECOND_ENV, 1)
    assert code == 0, output
    second = {s.id: s.name for s in env_servers(demo, APP, SECOND_ENV)}
    assert len(second) == 3

    code, _data, output = run(os_master, "gdl.destroy", f"app={APP}", f"env={ENV}")
    assert code == 0, output
    assert leftovers(demo, rig, APP, ENV) == []
    gone = [naming.server_name(r, i, APP, ENV) for r in ("app", "lb") for i in (0, 1)]
    assert not [n for n in gone if (os_master.pki_dir / "minions" / n).exists()]
    assert not [n for n in gone if (rig["state"] / "data" / "hosts").joinpath(n).exists()]

    assert {s.id: s.name for s in env_servers(demo, APP, SECOND_ENV)} == second
    vip = demo.network.find_port(vip_port_name(APP, SECOND_ENV)).fixed_ips[0]["ip_address"]
    assert served_by(f"http://{vip}/", 2) == [f"app-0-{APP}-{SECOND_ENV}"] * 2

    code, _data, output = run(os_master, "gdl.destroy", f"app={APP}", f"env={SECOND_ENV}")
    assert code == 0, output
    assert leftovers(demo, rig, APP, SECOND_ENV) == []
    assert not list((os_master.pki_dir / "minions").glob(f"*-{APP}-*"))


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
