"""Operations that collide: two builds at once, a destroy during a build, a lost load balancer.

The tests share one environment and run in order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gdl import naming
from gdl.providers.local import host
from tests.support.leftovers import HostTrace
from tests.support.runs import Background, refusal, run, served_by, wait_until

pytestmark = pytest.mark.integration

APP, ENV = "hello_world", "gdf2"


def names(role: str, count: int) -> list[str]:
    return [f"{role}-{i}-{APP}-{ENV}" for i in range(count)]


def host_processes(provider, name: str) -> list[str]:
    """Command lines of the processes in a host's cgroup (seen from the machine)."""
    commands = []
    for parent in host.cgroup_parents().values():
        procs = parent / host.HostNames.of(provider.tag, name).cgroup / "cgroup.procs"
        try:
            pids = procs.read_text().split()
        except OSError:
            continue
        for pid in pids:
            try:
                commands.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "))
            except OSError:
                continue
    return [c.decode(errors="replace") for c in commands]


def runs_keepalived(provider, name: str) -> bool:
    return any("keepalived" in command.split(" ")[0] for command in host_processes(provider, name))


@pytest.fixture(scope="module")
def trace() -> HostTrace:
    return HostTrace()


@pytest.fixture(scope="module", autouse=True)
def destroyed_at_the_end(local_cloud, trace):
    yield
    trace.note(local_cloud.provider(), APP, ENV)
    run(local_cloud.master, "gdl.destroy", f"app={APP}", f"env={ENV}")


def test_two_builds_at_once_one_is_refused_and_nothing_is_made_twice(local_cloud, trace, tmp_path):
    master = local_cloud.master
    args = ("gdl.build", f"app={APP}", f"env={ENV}", "servers=1")
    first = Background(master, *args, log=tmp_path / "first")
    second = Background(master, *args, log=tmp_path / "second")
    outcomes = [first.wait(), second.wait()]
    codes = sorted(code for code, _ in outcomes)
    assert codes[0] == 0 and codes[1] != 0, outcomes
    refused = next(output for code, output in outcomes if code != 0)
    line = refusal(refused)
    assert f"{naming.env_id(APP, ENV)} is busy: build by pid" in line, refused[-3000:]

    provider = local_cloud.provider()
    trace.note(provider, APP, ENV)
    servers = {s.name: s.state for s in provider.list_servers(APP, ENV)}
    assert servers == {n: "running" for n in names("app", 1) + names("lb", 2)}
    netns = [p.name for p in Path("/run/netns").iterdir() if p.name.endswith(f"-{APP}-{ENV}")]
    assert len(netns) == 3, netns
    code, result, output = run(master, "gdl.build", *args[1:])
    assert code == 0 and result["changes"] is False, output[-3000:]
    assert set(served_by(result["url"], 2)) == set(names("app", 1))


def test_a_load_balancer_lost_for_good_shows_and_a_rebuild_reforms_the_pair(local_cloud, trace):
    master = local_cloud.master
    provider = local_cloud.provider()
    lost = names("lb", 2)[0]
    # The host dies and is gone from the cloud, as a deleted VM is.
    server = provider.get_server(lost)
    pid = int(server.extra["pid"])
    host.kill(pid, host.process_starttime(pid))
    provider.delete_servers([lost])

    code, status, output = run(master, "gdl.status", f"app={APP}", f"env={ENV}")
    assert code == 0, output[-3000:]
    assert status["missing"] == [lost], status
    assert lost not in [s["name"] for s in status["servers"]]
    # The survivor took the VIP: the environment still serves meanwhile.
    assert (
        wait_until(
            lambda: run(master, "gdl.status", f"app={APP}", f"env={ENV}")[1]["vip_holder"],
            30,
            "a VIP holder",
        )
        == names("lb", 2)[1]
    )
    assert set(served_by(status["url"], 2)) == set(names("app", 1))

    code, result, output = run(master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=1")
    assert code == 0, output[-3000:]
    trace.note(provider, APP, ENV)
    servers = {s.name: s.state for s in provider.list_servers(APP, ENV)}
    assert servers == {n: "running" for n in names("app", 1) + names("lb", 2)}
    assert all(runs_keepalived(provider, lb) for lb in names("lb", 2))
    holders = master.salt_json(
        "-L", ",".join(names("lb", 2)), "gdl_lb.holds_vip", result["vip"], timeout=60
    )
    assert sorted(holders.values()) == [False, True], holders
    code, status, output = run(master, "gdl.status", f"app={APP}", f"env={ENV}")
    assert code == 0 and status["missing"] == [], output[-3000:]
    assert all(s["minion"] for s in status["servers"]), status
    assert set(served_by(result["url"], 2)) == set(names("app", 1))


def test_destroy_during_a_build_is_refused_and_a_later_destroy_removes_all(
    local_cloud, trace, tmp_path, nothing_left
):
    master = local_cloud.master
    provider = local_cloud.provider()
    build = Background(
        master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=2", log=tmp_path / "build"
    )
    wait_until(lambda: provider.get_server(names("app", 2)[1]), 120, "the new app server")
    code, _, output = run(master, "gdl.destroy", f"app={APP}", f"env={ENV}")
    assert code != 0, output[-3000:]
    assert f"{naming.env_id(APP, ENV)} is busy: build by pid" in refusal(output), output[-3000:]
    orch = master.run(
        "state.orch", "orch.destroy", f'pillar={{"app": "{APP}", "env": "{ENV}"}}', timeout=300
    )
    assert orch.returncode != 0, orch.stdout[-3000:]
    assert "is busy" in orch.stdout, orch.stdout[-3000:]
    # The build's orchestration steps are refused too when not called by the build.
    code, _, output = run(master, "gdl.write_pillar", f"app={APP}", f"environment={ENV}")
    assert code != 0, output[-3000:]
    assert f"{naming.env_id(APP, ENV)} is busy: build by pid" in refusal(output), output[-3000:]
    orch = master.run(
        "state.orch", "orch.build", f'pillar={{"app": "{APP}", "env": "{ENV}"}}', timeout=300
    )
    assert orch.returncode != 0, orch.stdout[-3000:]
    assert "is busy" in orch.stdout, orch.stdout[-3000:]

    trace.note(provider, APP, ENV)
    code, output = build.wait()
    assert code == 0, output[-3000:]
    trace.note(provider, APP, ENV)
    code, _, output = run(master, "gdl.destroy", f"app={APP}", f"env={ENV}")
    assert code == 0, output[-3000:]
    nothing_left(APP, ENV, trace)
