"""How long the whole product takes on the OpenStack test rig, the rig's start included.

Stops the rig if it runs (so its start is measured from nothing), starts it
(``rig_up``), runs ``tests/openstack/test_build.py`` against it (``tests``: build,
CLI checks, failover, a second environment, destroys), and stops it again
(``rig_down``, not counted in ``total``).  Prints the figures and writes them to
``bench/results/openstack_e2e.json``.  Needs root and the rig's packages
(``tests/openstack/rig/rig install``).

    .venv/bin/python bench/openstack_e2e.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RIG = REPO_ROOT / "tests" / "openstack" / "rig" / "rig"
TEST_FILE = "tests/openstack/test_build.py"
RESULTS = REPO_ROOT / "bench" / "results" / "openstack_e2e.json"
TARGET_SECONDS = 20 * 60


def timed(command: list[str], log: Path) -> tuple[float, int]:
    """Run ``command`` with its output in ``log``; (seconds, exit status)."""
    started = time.monotonic()
    with log.open("w") as out:
        status = subprocess.call(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    return time.monotonic() - started, status


def main() -> int:
    if os.geteuid() != 0:
        print("bench/openstack_e2e.py needs root (the rig's instances are local hosts)")
        return 1
    logs = REPO_ROOT / "bench" / "results"
    logs.mkdir(parents=True, exist_ok=True)
    subprocess.call([str(RIG), "down"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    figures: dict[str, object] = {"machine": f"{os.cpu_count()} cores, {platform.machine()}"}
    try:
        rig_up, status = timed([str(RIG), "up"], logs / "openstack_e2e.rig-up.log")
        figures["rig_up"] = round(rig_up, 1)
        if status != 0:
            print(f"rig up failed ({status}); see bench/results/openstack_e2e.rig-up.log")
            return 1
        tests, status = timed(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST_FILE],
            logs / "openstack_e2e.pytest.log",
        )
        figures["tests"] = round(tests, 1)
        figures["tests_passed"] = status == 0
        figures["total"] = round(rig_up + tests, 1)
    finally:
        rig_down, _ = timed([str(RIG), "down"], logs / "openstack_e2e.rig-down.log")
        figures["rig_down"] = round(rig_down, 1)
    figures["target"] = TARGET_SECONDS
    figures["met"] = bool(figures["tests_passed"]) and figures["total"] <= TARGET_SECONDS
    figures["measured"] = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(
        f"rig up {figures['rig_up']} s + {TEST_FILE} {figures['tests']} s "
        f"= {figures['total']} s (target {TARGET_SECONDS} s); tests "
        f"{'passed' if figures['tests_passed'] else 'FAILED'}; rig down {figures['rig_down']} s"
    )
    print(f"written to {RESULTS.relative_to(REPO_ROOT)}")
    return 0 if figures["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
