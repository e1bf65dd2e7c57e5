"""A build interrupted by the master restarting or by a host dying: re-running converges.

The tests share one environment and run in order: a build interrupted by a
restart of the salt-master daemon, a scale-up whose new app host is killed
while its app role is being applied, and a scale-up whose salt-run process is
killed while it makes a host.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gdl.providers.local import host
from tests.support.leftovers import HostTrace
from tests.support.runs import (
    Background,
    refusal,
    restart_master_daemon,
    run,
    served_by,
    wait_until,
)

pytestmark = pytest.mark.integration

APP, ENV = "hello_world", "gdf3"


def names(role: str, count: int) -> list[str]:
    return [f"{role}-{i}-{APP}-{ENV}" for i in range(count)]


def applying_app_role(provider, name: str) -> bool:
    """True while the host's minion runs a state job for the app role."""
    server = provider.get_server(name)
    if server is None or server.state != "running":
        return False
    jobs = Path(f"/proc/{server.extra['pid']}/root/var/cache/salt/minion/proc")
    try:
        return any(b"gdl.app" in job.read_bytes() for job in jobs.iterdir())
    except OSError:
        return False


@pytest.fixture(scope="module")
def trace() -> HostTrace:
    return HostTrace()


@pytest.fixture(scope="module", autouse=True)
def destroyed_at_the_end(local_cloud, trace):
    yield
    trace.note(local_cloud.provider(), APP, ENV)
    run(local_cloud.master, "gdl.destroy", f"app={APP}", f"env={ENV}")


def test_a_master_restart_in_the_middle_of_a_build_then_a_rerun_converges(
    local_cloud, trace, tmp_path
):
    master = local_cloud.master
    provider = local_cloud.provider()
    build = Background(
        master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=1", log=tmp_path / "build"
    )
    wait_until(lambda: applying_app_role(provider, names("app", 1)[0]), 300, "the app role")
    trace.note(provider, APP, ENV)
    restart_master_daemon(master)
    code, output = build.wait()
    if code != 0:
        line = refusal(output)
        assert line and "\n" not in line, output[-3000:]
    print(f"build across a master restart exited {code}: {refusal(output) or 'ok'}")

    code, result, output = run(master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=1")
    assert code == 0, output[-3000:]
    servers = sorted(s.name for s in provider.list_servers(APP, ENV))
    assert servers == sorted(names("app", 1) + names("lb", 2))
    assert set(served_by(result["url"], 4)) == set(names("app", 1))


def test_a_host_killed_during_its_app_role_is_replaced_by_a_rerun(local_cloud, trace, tmp_path):
    master = local_cloud.master
    provider = local_cloud.provider()
    new = names("app", 2)[1]
    build = Background(
        master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=2", log=tmp_path / "build"
    )
    wait_until(lambda: applying_app_role(provider, new), 300, f"the app role on {new}")
    trace.note(provider, APP, ENV)
    server = provider.get_server(new)
    pid = int(server.extra["pid"])
    host.kill(pid, host.process_starttime(pid))
    started = time.monotonic()
    code, output = build.wait()
    print(f"build with {new} killed exited {code} after {time.monotonic() - started:.0f} s")
    if code != 0:
        line = refusal(output)
        assert line and "\n" not in line, output[-3000:]
    assert provider.get_server(new).state != "running"

    code, result, output = run(master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=2")
    assert code == 0, output[-3000:]
    assert f"replace {new} (broken)" in result["plan"], result["plan"]
    servers = {s.name: s.state for s in provider.list_servers(APP, ENV)}
    assert servers == {n: "running" for n in names("app", 2) + names("lb", 2)}
    assert set(served_by(result["url"], 6)) == set(names("app", 2))


def test_a_build_killed_while_it_makes_hosts_is_completed_by_a_rerun(local_cloud, trace, tmp_path):
    """The salt-run process dies (the master's machine crashes) with a host half-made."""
    master = local_cloud.master
    provider = local_cloud.provider()
    new = names("app", 3)[2]
    record = provider.hosts_dir / new / "host.json"
    build = Background(
        master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=3", log=tmp_path / "build"
    )
    wait_until(record.exists, 300, f"the record of {new}")
    build.process.kill()
    build.wait()
    half_made = provider.get_server(new)
    print(f"{new} after the build was killed: {half_made and half_made.state}")
    # Its maker is dead: a host not running is reported broken, never "building" forever.
    wait_until(
        lambda: provider.get_server(new) is None or provider.get_server(new).state != "building",
        30,
        "the half-made host's state",
    )
    trace.note(provider, APP, ENV)

    code, result, output = run(master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=3")
    assert code == 0, output[-3000:]
    servers = {s.name: s.state for s in provider.list_servers(APP, ENV)}
    assert servers == {n: "running" for n in names("app", 3) + names("lb", 2)}
    assert set(served_by(result["url"], 9)) == set(names("app", 3))


def test_destroy_after_the_interruptions_leaves_nothing(local_cloud, trace, nothing_left):
    trace.note(local_cloud.provider(), APP, ENV)
    code, _, output = run(local_cloud.master, "gdl.destroy", f"app={APP}", f"env={ENV}")
    assert code == 0, output[-3000:]
    nothing_left(APP, ENV, trace)
