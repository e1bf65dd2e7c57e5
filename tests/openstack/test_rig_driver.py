"""The rig's compute driver as nova-compute runs it: in eventlet green threads.

No rig is needed: the system Python that runs the rig's services (with its eventlet)
loads the driver module as nova-compute does, and green threads take its lock at once.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

DRIVER = Path(__file__).resolve().parent / "rig" / "virt" / "gdl_hosts.py"
SYSTEM_PYTHON = "/usr/bin/python3"

# Three spawns at once, each yielding while it holds the driver's lock, as one does
# while `ip` makes its bridge.
SPAWNS_AT_ONCE = """
import eventlet
eventlet.monkey_patch()
import importlib.util, sys, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("gdl_hosts", sys.argv[1])
driver = importlib.util.module_from_spec(spec)
spec.loader.exec_module(driver)
done = []

def spawn(number):
    with driver._locked(Path(sys.argv[2])):
        time.sleep(0.2)
    done.append(number)

for thread in [eventlet.spawn(spawn, n) for n in range(3)]:
    thread.wait()
print(sorted(done))
"""


def eventlet_available() -> bool:
    found = subprocess.run([SYSTEM_PYTHON, "-c", "import eventlet"], capture_output=True)
    return found.returncode == 0


@pytest.mark.skipif(
    not eventlet_available(),
    reason="the rig's packages (eventlet) are not installed: run tests/openstack/rig/rig install",
)
def test_spawns_at_once_share_the_drivers_lock_without_stopping_nova(tmp_path):
    try:
        result = subprocess.run(
            [SYSTEM_PYTHON, "-c", SPAWNS_AT_ONCE, str(DRIVER), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a green thread waiting for the lock stopped the process (and its holder)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 1, 2]"
