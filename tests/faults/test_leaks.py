"""Build, scale and destroy again and again: nothing of the environment accumulates.

Ten cycles of build (1 app server), scale to 2, destroy, on one environment
name, then a check that nothing of it remains: hosts, network namespaces,
veths, mounts, cgroups and their processes, minion keys and the master's
cache of them, pillar, records and the lock file.  ``GDL_LEAK_CYCLES``
changes the number of cycles.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gdl.providers.local import host
from tests.support.leftovers import HostTrace, leftovers
from tests.support.runs import run

pytestmark = [pytest.mark.integration, pytest.mark.long]

APP, ENV = "hello_world", "gdf9"
CYCLES = int(os.environ.get("GDL_LEAK_CYCLES", "10"))


def test_build_scale_destroy_cycles_leave_nothing_behind(local_cloud, nothing_left):
    master = local_cloud.master
    provider = local_cloud.provider()
    trace = HostTrace()
    timings = []
    try:
        for cycle in range(CYCLES):
            started = time.monotonic()
            for servers in (1, 2):
                code, _, output = run(
                    master, "gdl.build", f"app={APP}", f"env={ENV}", f"servers={servers}"
                )
                assert code == 0, f"cycle {cycle}, servers={servers}:\n{output[-3000:]}"
                trace.note(provider, APP, ENV)
            built = time.monotonic()
            code, _, output = run(master, "gdl.destroy", f"app={APP}", f"env={ENV}")
            assert code == 0, f"cycle {cycle}, destroy:\n{output[-3000:]}"
            # Each destroy must be complete on its own, not only the last one.
            assert leftovers(local_cloud, APP, ENV, trace) == [], f"cycle {cycle}"
            timings.append((built - started, time.monotonic() - built))
    finally:
        run(master, "gdl.destroy", f"app={APP}", f"env={ENV}")
        for cycle, (build, destroy) in enumerate(timings):
            print(f"cycle {cycle}: build+scale {build:.1f} s, destroy {destroy:.1f} s")

    nothing_left(APP, ENV, trace)
    # Nothing of the cloud's own either: it holds no other environment.
    tag = provider.tag
    assert [p.name for p in Path("/run/netns").iterdir() if p.name.startswith(f"gdl-{tag}-")] == []
    assert not any((parent / f"gdl-{tag}").exists() for parent in host.cgroup_parents().values())
    if provider.hosts_dir.exists():
        assert list(provider.hosts_dir.iterdir()) == []
    assert len(trace.pids) >= 3 * CYCLES, trace.pids
