"""How long the VIP stops answering when the VRRP master loses keepalived or haproxy.

Builds the blog (2 app servers) on a throwaway local cloud, then for each fault:
finds the load balancer holding the VIP, starts a client asking the VIP every
50 ms, breaks that load balancer, and measures the gap: the longest time
between two answered requests in the 10 s window.  ``gdl.build`` is re-run
between faults to repair the pair.  Prints a table and writes
``bench/results/failover.json``.  Needs root.

    .venv/bin/python bench/failover.py
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.local_cloud import running_local_cloud  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results" / "failover.json"
INTERVAL = 0.05
WINDOW = 10.0

FAULTS = {
    "keepalived SIGTERM": "service keepalived stop",
    "keepalived SIGKILL": "killall -KILL keepalived",
    "haproxy SIGKILL": "killall -KILL haproxy",
}


def poll(url: str, stop: threading.Event, outcomes: list[tuple[float, bool]]) -> None:
    deadline = time.monotonic() + WINDOW + 30
    while not stop.is_set() and time.monotonic() < deadline:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                outcomes.append((started, response.status == 200))
        except Exception:
            outcomes.append((started, False))
        stop.wait(INTERVAL)


def gap(outcomes: list[tuple[float, bool]], fault_at: float) -> float:
    """The longest stretch after the fault without an answered request."""
    answered = [t for t, ok in outcomes if ok and t >= fault_at]
    if not answered:
        return WINDOW
    points = [fault_at, *answered]
    if answered[-1] < fault_at + WINDOW - 1:  # it stopped answering and never came back
        points.append(fault_at + WINDOW)
    return max(b - a for a, b in itertools.pairwise(points))


def vip_holder(master, app: str, env: str, vip: str) -> str:
    lbs = f"lb-0-{app}-{env},lb-1-{app}-{env}"
    holders = master.salt_json("-L", lbs, "gdl_lb.holds_vip", vip)
    return next(name for name, holds in sorted(holders.items()) if holds is True)


def main() -> int:
    if os.geteuid() != 0:
        print("bench/failover.py makes local hosts: run it as root", file=sys.stderr)
        return 2
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="gdl-bench-") as root,
        running_local_cloud(Path(root) / "master", tag="gdlf") as cloud,
    ):
        master = cloud.master
        build = ("gdl.build", "app=blog", "env=fo", "servers=2")
        master.run(*build, check=True, timeout=1200)
        vip = cloud.provider().find_env("blog", "fo").vip
        url = f"http://{vip}/healthz"
        for fault, command in FAULTS.items():
            holder = vip_holder(master, "blog", "fo", vip)
            outcomes: list[tuple[float, bool]] = []
            stop = threading.Event()
            client = threading.Thread(target=poll, args=(url, stop, outcomes))
            client.start()
            time.sleep(1)
            fault_at = time.monotonic()
            master.salt(holder, "cmd.run", command)
            time.sleep(WINDOW)
            stop.set()
            client.join()
            after = [(t, ok) for t, ok in outcomes if t >= fault_at]
            row = {
                "fault": fault,
                "vrrp_master": holder,
                "gap_s": round(gap(outcomes, fault_at), 2),
                "failed_requests": sum(1 for _, ok in after if not ok),
                "requests": len(after),
            }
            rows.append(row)
            print(
                f"{fault}: gap {row['gap_s']} s, {row['failed_requests']} of "
                f"{row['requests']} requests failed",
                flush=True,
            )
            master.run(*build, check=True, timeout=1200)  # repairs the pair
        master.run("gdl.destroy", "app=blog", "env=fo", timeout=600)
    print()
    print("| fault on the VRRP master | VIP gap (s) | failed requests |")
    print("| --- | ---: | ---: |")
    for row in rows:
        print(f"| {row['fault']} | {row['gap_s']} | {row['failed_requests']} / {row['requests']} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "client_interval_s": INTERVAL,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
