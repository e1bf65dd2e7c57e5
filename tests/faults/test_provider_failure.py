"""The provider fails on the 3rd of 4 server creates: reported, nothing forgotten, re-run completes.

The fault is injected into the salt-run process (tests/support/faults): the
named host boots and is then reported as failed to boot, so the provider's own
clean-up of a failed host and the workflow's handling of a partial create are
what is exercised.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.faults import failing_hosts
from tests.support.runs import refusal, run, served_by

pytestmark = pytest.mark.integration

APP, ENV = "hello_world", "gdf1"


def test_a_create_failing_half_way_is_reported_kept_track_of_and_completed(
    local_cloud, nothing_left
):
    master = local_cloud.master
    provider = local_cloud.provider()
    third = f"app-2-{APP}-{ENV}"
    try:
        code, _, output = run(
            master,
            "gdl.build",
            f"app={APP}",
            f"env={ENV}",
            "servers=4",
            env=failing_hosts(third),
        )
        assert code != 0, output
        line = refusal(output)
        assert third in line and "\n" not in line, output[-3000:]
        assert "fault injected" in line, line

        # Nothing half-made: the failed host is gone, the others are whole and listed.
        servers = {s.name: s.state for s in provider.list_servers(APP, ENV)}
        assert servers == {f"app-{i}-{APP}-{ENV}": "running" for i in (0, 1, 3)}, servers
        code, listed, output = run(master, "gdl.list")
        assert code == 0, output
        mine = [e for e in listed if e["app"] == APP and e["env"] == ENV]
        assert mine and mine[0]["app_servers"] == 3 and mine[0]["requested"] == 4, listed
        code, status, output = run(master, "gdl.status", f"app={APP}", f"env={ENV}")
        assert code == 0, output
        assert sorted(s["name"] for s in status["servers"]) == sorted(servers), status
        # The failed server's key went with it: no accepted key without a server.
        assert third not in master.keys.env_minions(APP, ENV)

        # The same request without the fault completes the environment.
        code, result, output = run(master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=4")
        assert code == 0, output
        names = sorted(s.name for s in provider.list_servers(APP, ENV))
        assert names == sorted(
            [f"app-{i}-{APP}-{ENV}" for i in range(4)] + [f"lb-{i}-{APP}-{ENV}" for i in range(2)]
        )
        assert set(Counter(served_by(result["url"], 8))) == {
            f"app-{i}-{APP}-{ENV}" for i in range(4)
        }
    finally:
        code, _, output = run(master, "gdl.destroy", f"app={APP}", f"env={ENV}")
    assert code == 0, output
    nothing_left(APP, ENV)
