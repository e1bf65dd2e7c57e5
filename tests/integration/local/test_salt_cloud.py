"""Local hosts made and destroyed through salt-cloud, checked through a real master.

The tests run in order against one module-wide local cloud: three hosts are
created in parallel with ``salt-cloud -P -p``, answer ``test.ping``, prove
their filesystem, hostname and PID namespace private, and are destroyed with
``salt-cloud -d`` leaving nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gdl.providers.local import host

NAMES = ["app-0-lcl-it", "app-1-lcl-it", "app-2-lcl-it"]
PROBE = "gdl-probe-h2"


def ping(master, names: list[str]) -> dict:
    result = master.salt("--out=json", "--static", "-t", "20", "-L", ",".join(names), "test.ping")
    return json.loads(result.stdout or "{}")


def run_on(master, name: str, command: str) -> str:
    out = master.salt_json("-t", "30", name, "cmd.run", command)
    return out[name]


def pid_namespace(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def processes_in_namespace(namespace: str) -> set[tuple[int, int]]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") == namespace:
                starttime = host.process_starttime(int(entry.name))
                if starttime is not None:
                    found.add((int(entry.name), starttime))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def created(local_cloud):
    result = local_cloud.master.salt_cloud("-y", "-P", "-p", "gdl-local-app", *NAMES, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return local_cloud


def test_three_hosts_answer_through_the_master(created) -> None:
    servers = {s.name: s for s in created.provider().list_servers()}
    assert sorted(servers) == NAMES
    assert all(s.state == "running" for s in servers.values())
    assert len({s.address for s in servers.values()}) == 3
    answers = ping(created.master, NAMES)
    assert answers == dict.fromkeys(NAMES, True)
    keys = json.loads(created.master.salt_key("-L", "--out=json").stdout)
    assert sorted(keys["minions"]) == NAMES and keys["minions_pre"] == []


def test_salt_cloud_sees_the_hosts(created) -> None:
    result = created.master.salt_cloud("--out=json", "-Q")
    nodes = json.loads(result.stdout)["gdl-local"]["gdl_local"]
    assert sorted(nodes) == NAMES
    assert all(nodes[n]["state"] == "running" and nodes[n]["size"] == "m1.small" for n in NAMES)


def test_each_host_has_its_own_files(created) -> None:
    writer, *others = NAMES
    paths = [f"/{d}/{PROBE}" for d in ("etc", "var", "srv", "opt", "root", "tmp", "run")]
    run_on(created.master, writer, " && ".join(f"echo {writer} > {p}" for p in paths))
    check = "; ".join(f"test -e {p} && echo present {p}" for p in paths) + "; true"
    assert run_on(created.master, writer, check).count("present") == len(paths)
    for other in others:
        assert run_on(created.master, other, check) == ""
    for path in paths:
        assert not Path(path).exists(), f"{path} leaked onto the machine"


def test_each_host_has_its_own_hostname_and_pid_1(created) -> None:
    machine_namespace = pid_namespace("self")
    namespaces = set()
    for server in created.provider().list_servers():
        assert run_on(created.master, server.name, "hostname") == server.name
        assert "hostinit" in run_on(created.master, server.name, "cat /proc/1/cmdline")
        assert run_on(created.master, server.name, "readlink /proc/1/ns/pid") == pid_namespace(
            server.extra["pid"]
        )
        namespaces.add(pid_namespace(server.extra["pid"]))
    assert len(namespaces) == 3 and machine_namespace not in namespaces


def test_salt_cloud_refuses_an_existing_name(created) -> None:
    pid = created.provider().get_server(NAMES[0]).extra["pid"]
    result = created.master.salt_cloud("-y", "-p", "gdl-local-app", NAMES[0])
    assert f"{NAMES[0]} already exists" in result.stdout + result.stderr
    assert created.provider().get_server(NAMES[0]).extra["pid"] == pid


def test_salt_cloud_bad_size_is_one_line_and_makes_nothing(created) -> None:
    profiles = created.master.config_dir / "cloud.profiles.d" / "bad.conf"
    profiles.write_text(
        "gdl-local-huge:\n  provider: gdl-local\n  role: app\n  size: m1.huge\n  deploy: False\n"
    )
    try:
        result = created.master.salt_cloud("-y", "-p", "gdl-local-huge", "app-7-lcl-it")
    finally:
        profiles.unlink()
    assert result.returncode != 0
    output = (result.stdout + result.stderr).splitlines()
    errors = [line for line in output if "not a local size" in line]
    assert len(errors) == 1, result.stdout + result.stderr
    assert "use one of: m1.tiny, m1.small, m1.medium, m1.large, m1.xlarge" in errors[0]
    assert created.provider().get_server("app-7-lcl-it") is None
    assert not (created.master.pki_dir / "minions" / "app-7-lcl-it").exists()


def test_destroy_leaves_nothing(created) -> None:
    provider = created.provider()
    servers = provider.list_servers()
    processes = set()
    for server in servers:
        processes |= processes_in_namespace(pid_namespace(server.extra["pid"]))
    assert len(processes) >= 6  # at least PID 1 and a minion on each

    result = created.master.salt_cloud("-y", "-d", *NAMES, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    assert provider.list_servers() == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"gdl-{provider.tag}-" not in netns
    links = subprocess.run(
        ["ip", "-br", "link", "show", "master", created.bridge], capture_output=True, text=True
    ).stdout
    assert links.strip() == ""
    mountinfo = Path("/proc/self/mountinfo").read_text()
    assert str(provider.state_dir) not in mountinfo and provider.tag not in mountinfo
    for server in servers:
        names = host.HostNames.of(provider.tag, server.name)
        assert not Path("/sys/class/net", names.veth).exists()
        assert not names.netns_path.exists()
        assert not (provider.hosts_dir / server.name).exists()
        for parent in host.cgroup_parents().values():
            assert not (parent / names.cgroup).exists()
    alive = {(pid, t) for pid, t in processes if host.process_starttime(pid) == t}
    assert alive == set()
    keys = json.loads(created.master.salt_key("-L", "--out=json").stdout)
    assert all(keys[state] == [] for state in keys)
    for state_dir in ("minions", "minions_pre", "minions_rejected"):
        for name in NAMES:
            assert not (created.master.pki_dir / state_dir / name).exists()
