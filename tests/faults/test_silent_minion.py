"""A server whose first boot is broken: the build shows its console, the next one replaces it.

The fault is injected into the salt-run process (tests/support/faults): the named host
boots with a console that prints numbered lines and hangs instead of starting its
salt-minion, so its minion never answers.  The build fails with one line naming the
server, and below it the end of the server's console; the server stays (running, its
key accepted, its minion never heard of). The same build without the fault replaces it
(destroyed with its key, made again) and serves.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.faults import silent_hosts
from tests.support.faults.sitecustomize import SILENT_CONSOLE_LINES
from tests.support.runs import refusal, run, served_by

pytestmark = pytest.mark.integration

APP, ENV = "hello_world", "gdf5"
TIMEOUT = 20


def test_a_server_whose_minion_never_answers_is_shown_then_replaced(local_cloud, nothing_left):
    master = local_cloud.master
    provider = local_cloud.provider()
    broken = f"app-0-{APP}-{ENV}"
    try:
        code, _, output = run(
            master,
            "gdl.build",
            f"app={APP}",
            f"env={ENV}",
            "servers=1",
            env=silent_hosts(broken, minion_timeout=TIMEOUT),
        )
        assert code != 0, output
        first, *console = refusal(output).splitlines()
        assert f"the minions of {broken} did not answer within {TIMEOUT} s" in first, output
        assert "check the servers' console" in first and len(first) < 300, first
        # The server's console: its last line first, the 19 before it indented below.
        assert console[0] == (
            f"{broken}: first boot broken by the test: salt-minion not started"
        ), console
        numbered = [
            f"    console line {i} of {broken}" for i in range(12, SILENT_CONSOLE_LINES + 1)
        ]
        assert console[1:] == numbered, console

        # The VRRP pair is made beside the app servers, so it may exist too.
        server = provider.get_server(broken)
        assert server is not None and server.state == "running"
        assert broken in master.keys.env_minions(APP, ENV)
        assert broken not in master.keys.cached_minions()

        code, result, output = run(master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=1")
        assert code == 0, output
        assert f"replace {broken} (broken)" in result["plan"], result["plan"]
        replaced = provider.get_server(broken)
        assert replaced is not None and replaced.extra["pid"] != server.extra["pid"]
        assert broken in master.keys.cached_minions()
        assert set(Counter(served_by(result["url"], 4))) == {broken}
    finally:
        code, _, output = run(master, "gdl.destroy", f"app={APP}", f"env={ENV}")
    assert code == 0, output
    nothing_left(APP, ENV)


def test_a_load_balancer_whose_minion_never_answers_is_shown_through_salt_cloud_then_replaced(
    local_cloud, nothing_left
):
    """The pair is made by salt-cloud in orch.build and waited for in its LB minions step."""
    master = local_cloud.master
    provider = local_cloud.provider()
    env = "gdf6"
    broken = f"lb-1-{APP}-{env}"
    try:
        code, _, output = run(
            master,
            "gdl.build",
            f"app={APP}",
            f"env={env}",
            "servers=1",
            env=silent_hosts(broken, minion_timeout=TIMEOUT),
        )
        assert code != 0, output
        first, *console = refusal(output).splitlines()
        assert "step gdl_lb_minions failed" in first, output
        assert f"the minions of {broken} did not answer within" in first, first
        assert console[0] == (
            f"{broken}: first boot broken by the test: salt-minion not started"
        ), console
        assert console[-1] == f"    console line {SILENT_CONSOLE_LINES} of {broken}", console
        server = provider.get_server(broken)
        assert server is not None and server.state == "running"

        code, result, output = run(master, "gdl.build", f"app={APP}", f"env={env}", "servers=1")
        assert code == 0, output
        replaced = provider.get_server(broken)
        assert replaced is not None and replaced.extra["pid"] != server.extra["pid"]
        assert broken in master.keys.cached_minions()
        assert set(Counter(served_by(result["url"], 4))) == {f"app-0-{APP}-{env}"}
    finally:
        code, _, output = run(master, "gdl.destroy", f"app={APP}", f"env={env}")
    assert code == 0, output
    nothing_left(APP, env)


def test_a_state_run_past_the_limit_is_stopped_and_the_next_build_converges(
    local_cloud, nothing_left
):
    """A minion that answers but whose state run never ends: gdl stops the run at its bound.

    The bound is set to one second, below what a first app role takes, so the run
    is cut short half-way (as a hung state would be, later): the build fails with one
    line naming it, and the same build with the default bound finishes the role.
    """
    master = local_cloud.master
    env = "gdf7"
    app_server = f"app-0-{APP}-{env}"
    master.gdl_settings["state_run_limit"] = 1
    master.write_config()
    try:
        code, _, output = run(master, "gdl.build", f"app={APP}", f"env={env}", "servers=1")
        assert code != 0, output
        line = refusal(output)
        assert line.startswith(f"{APP}-{env}: stopped after 1 s, still running: "), output
        assert "\n" not in line and "gdl:state_run_limit" in line, line
        assert "still running after 1 s, stopped" in output, output

        del master.gdl_settings["state_run_limit"]
        master.write_config()
        code, result, output = run(master, "gdl.build", f"app={APP}", f"env={env}", "servers=1")
        assert code == 0, output
        assert set(Counter(served_by(result["url"], 4))) == {app_server}
    finally:
        master.gdl_settings.pop("state_run_limit", None)
        master.write_config()
        code, _, output = run(master, "gdl.destroy", f"app={APP}", f"env={env}")
    assert code == 0, output
    nothing_left(APP, env)
