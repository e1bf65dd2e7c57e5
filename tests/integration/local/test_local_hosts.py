"""Local hosts made straight through LocalProvider: refusals, restarts, deletes, the CLI.

These need root and make real bridges and namespaces, but no salt-master:
the hosts' minions are started against a closed port and never join.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from gdl import keys
from gdl.errors import CapacityError, NameClash
from gdl.providers.base import RUNNING, STOPPED, ServerRequest
from gdl.providers.local import LocalProvider, host, network

# Connect to a closed port: "refused" proves the address answers (no ping needed).
REACHES = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=5)
except ConnectionRefusedError:
    print("refused", end="")
except OSError as exc:
    print(exc, end="")
"""


def request(name: str, env: str = "it", size: str = "m1.tiny") -> ServerRequest:
    pair = keys.generate(bits=1024)
    return ServerRequest(
        name=name,
        app="lcl",
        env=env,
        role=name.split("-")[0],
        size=size,
        minion_public_key=pair.public_pem,
        minion_private_key=pair.private_pem,
        master_address="",
    )


def kernel_objects(provider: LocalProvider) -> dict[str, list[str]]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(
        ["ip", "-br", "link", "show", "master", provider.bridge], capture_output=True, text=True
    ).stdout
    return {
        "netns": [line for line in netns.splitlines() if f"gdl-{provider.tag}-" in line],
        "veth": [line for line in links.splitlines() if line.strip()],
        "records": sorted(p.name for p in provider.hosts_dir.glob("*")),
    }


NOTHING = {"netns": [], "veth": [], "records": []}


def test_bad_size_makes_nothing(small_cloud: LocalProvider) -> None:
    with pytest.raises(CapacityError) as caught:
        small_cloud.create_servers([request("app-0-lcl-it"), request("app-1-lcl-it", size="big")])
    assert str(caught.value).startswith("size 'big' is not a local size: use one of: m1.tiny")
    assert kernel_objects(small_cloud) == NOTHING


def test_full_subnet_makes_nothing(small_cloud: LocalProvider) -> None:
    names = [f"app-{i}-lcl-it" for i in range(6)]  # a /29 holds 5 after the gateway
    with pytest.raises(CapacityError) as caught:
        small_cloud.create_servers([request(n) for n in names])
    assert "has 5 free addresses, 6 needed" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert kernel_objects(small_cloud) == NOTHING


def test_name_clash_makes_nothing_and_keeps_the_owner(small_cloud: LocalProvider) -> None:
    (first,) = small_cloud.create_servers([request("app-0-lcl-it")])
    before = kernel_objects(small_cloud)
    for clashing in (request("app-0-lcl-it"), request("app-0-lcl-it", env="other")):
        with pytest.raises(NameClash) as caught:
            small_cloud.create_servers([request("app-1-lcl-it"), clashing])
        assert str(caught.value) == (
            "server app-0-lcl-it exists already (environment lcl-it): "
            "delete it first (salt-cloud -d app-0-lcl-it) or choose another name"
        )
    assert kernel_objects(small_cloud) == before
    assert small_cloud.get_server("app-0-lcl-it").state == RUNNING
    assert small_cloud.get_server("app-0-lcl-it").extra["pid"] == first.extra["pid"]


def test_hosts_survive_a_new_provider_and_a_dead_pid_1_is_stopped(
    small_cloud: LocalProvider,
) -> None:
    made = small_cloud.create_servers([request("app-0-lcl-it"), request("lb-0-lcl-it")])
    assert {s.state for s in made} == {RUNNING}
    # A master restart: a new provider finds the hosts from the system and the records.
    again = LocalProvider(
        state_dir=small_cloud.state_dir, bridge=small_cloud.bridge, master_port=1, publish_port=1
    )
    assert [s.name for s in again.list_servers()] == ["app-0-lcl-it", "lb-0-lcl-it"]
    assert again.cidr == small_cloud.cidr
    lb = again.get_server("lb-0-lcl-it")
    os.kill(int(lb.extra["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while again.get_server("lb-0-lcl-it").state != STOPPED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert again.get_server("lb-0-lcl-it").state == STOPPED
    assert again.get_server("app-0-lcl-it").state == RUNNING
    assert again.delete_servers(["lb-0-lcl-it", "app-0-lcl-it", "app-9-lcl-it"]) == [
        "lb-0-lcl-it",
        "app-0-lcl-it",
    ]
    assert again.delete_servers(["lb-0-lcl-it"]) == []  # already gone: not an error
    assert kernel_objects(again) == NOTHING


# hostinit.py with a launcher that reads its host's start time only after a pause:
# what a busy machine does, when the host's PID 1 has pivoted into its own root first.
SLOW_LAUNCHER = """
import importlib.util, json, sys, time
spec = importlib.util.spec_from_file_location("hostinit", sys.argv[1])
hostinit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hostinit)
read = hostinit._read_starttime

def late_read(*args):
    time.sleep(1)
    return read(*args)

hostinit._read_starttime = late_read
print(json.dumps(hostinit.launch_all(json.load(sys.stdin))), flush=True)
"""


def test_a_launcher_slower_than_its_host_still_reads_the_hosts_pid(
    small_cloud: LocalProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapper = tmp_path / "slow_hostinit.py"
    wrapper.write_text(SLOW_LAUNCHER)
    real = host.HOSTINIT
    run = subprocess.run

    def run_slow_launcher(command, *args, **kwargs):
        if command[-1:] == [str(real)]:
            command = [*command[:-1], str(wrapper), str(real)]
        return run(command, *args, **kwargs)

    monkeypatch.setattr(host.subprocess, "run", run_slow_launcher)
    made = small_cloud.create_servers([request("app-0-lcl-it"), request("lb-0-lcl-it")])
    assert {s.state for s in made} == {RUNNING}
    # RUNNING is read back from the record: the right PID 1, with its start time.
    assert {small_cloud.get_server(s.name).state for s in made} == {RUNNING}
    small_cloud.delete_servers([s.name for s in made])
    assert kernel_objects(small_cloud) == NOTHING


def test_hosts_see_each_other_and_the_master_by_name(small_cloud: LocalProvider) -> None:
    small_cloud.create_servers([request("app-0-lcl-it"), request("app-1-lcl-it")])
    late = small_cloud.create_servers([request("lb-0-lcl-it")])[0]
    first = small_cloud.get_server("app-0-lcl-it")
    argv = small_cloud.run("app-0-lcl-it", ["sh", "-c", "getent hosts lb-0-lcl-it salt"])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    assert late.address in out and small_cloud.gateway in out
    # The bridge joins them: one host reaches another, and the machine reaches both.
    argv = small_cloud.run("lb-0-lcl-it", [sys.executable, "-c", REACHES, first.address])
    assert subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout == "refused"
    reaches = subprocess.run(
        [sys.executable, "-c", REACHES, late.address], capture_output=True, text=True, timeout=30
    )
    assert reaches.stdout == "refused"
    # Memory is capped where the kernel has a memory controller.
    memory = host.cgroup_parents().get("memory")
    if memory is not None:
        names = host.HostNames.of(small_cloud.tag, "lb-0-lcl-it")
        limit = int((memory / names.cgroup / "memory.limit_in_bytes").read_text())
        assert limit == 512 * 1024**2


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gdl.providers.local", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_network_commands() -> None:
    chosen = cli("choose-cidr", "--seed", str(uuid.uuid4().int % 100000))
    assert chosen.returncode == 0, chosen.stderr
    cidr = ipaddress.ip_network(chosen.stdout.strip())
    assert not any(cidr.overlaps(n) for n in network.machine_networks())
    bridge = f"gdlc{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(2):  # idempotent
            made = cli("ensure-network", "--bridge", bridge, "--cidr", str(cidr))
            assert made.returncode == 0, made.stderr
        assert str(network.bridge_cidr(bridge)) == f"{next(cidr.hosts())}/{cidr.prefixlen}"
        other = cli("ensure-network", "--bridge", bridge, "--cidr", "10.255.254.0/24")
        assert other.returncode == 1 and len(other.stderr.strip().splitlines()) == 1
    finally:
        assert cli("remove-network", "--bridge", bridge).returncode == 0
    assert not Path("/sys/class/net", bridge).exists()
    assert cli("remove-network", "--bridge", bridge).returncode == 0


def test_cli_list_run_delete(local_cloud) -> None:
    provider = local_cloud.provider()
    pair = local_cloud.master.preseed_minion("app-5-lcl-it")
    provider.create_servers(
        [
            ServerRequest(
                name="app-5-lcl-it",
                app="lcl",
                env="it",
                role="app",
                size="m1.tiny",
                minion_public_key=pair.public_pem,
                minion_private_key=pair.private_pem,
                master_address=provider.gateway,
            )
        ]
    )
    config = str(local_cloud.master.conf_file)
    listed = cli("list", "--config", config)
    assert listed.stdout.startswith("app-5-lcl-it\trunning\t")
    ran = cli("run", "--config", config, "app-5-lcl-it", "--", "hostname")
    assert ran.stdout.strip() == "app-5-lcl-it"
    deleted = cli("delete", "--config", config, "app-5-lcl-it")
    assert deleted.stdout.strip() == "deleted app-5-lcl-it"
    assert provider.list_servers() == []
    assert not (local_cloud.master.pki_dir / "minions" / "app-5-lcl-it").exists()


def test_check_and_env_reservation(small_cloud: LocalProvider) -> None:
    from gdl.spec import build_spec

    small_cloud.check(build_spec("lcl", "it", servers=2, size="m1.tiny"))  # 2 + 2 LBs + VIP = 5
    with pytest.raises(CapacityError, match="4 free addresses, 6 needed"):
        small_cloud.ensure_env("lcl", "it")
        small_cloud.check(build_spec("lcl", "it", servers=4))
    with pytest.raises(CapacityError, match="not a local size"):
        small_cloud.check(build_spec("lcl", "it", servers=1, size="m2.small"))
    env = small_cloud.find_env("lcl", "it")
    assert env.master_address == small_cloud.gateway and env.vip != env.master_address
    # The machine reaches the VIP's subnet through the bridge.
    route = subprocess.run(["ip", "route", "get", env.vip], capture_output=True, text=True)
    assert f"dev {small_cloud.bridge}" in route.stdout
    small_cloud.teardown_env("lcl", "it")
    assert small_cloud.find_env("lcl", "it") is None
