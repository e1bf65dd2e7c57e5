"""How long the local provider takes to make 2 hosts, then 8 (they are made in parallel).

Makes its own bridge on a free subnet and a salt-master bound to it, then for
each count: preseeds the keys (not timed: the runner does this before it asks
for servers), creates the hosts (``up``: every PID 1 running), waits until
every minion has joined the master (``joined``), checks that all of them
answer ``test.ping``, and deletes them (``deleted``).  Prints the figures and
writes them to ``bench/results/local_hosts.json``.  Needs root.

    .venv/bin/python bench/local_hosts.py
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from gdl.config import Settings
from gdl.providers.base import ServerRequest
from gdl.providers.local import LocalProvider, network
from gdl_harness.salt_daemons import SaltMaster

REPO_ROOT = Path(__file__).resolve().parent.parent

COUNTS = (2, 8)
ROUNDS = 3  # the machine is shared: report the median of a few rounds
RESULTS = REPO_ROOT / "bench" / "results" / "local_hosts.json"


def measure(provider: LocalProvider, master: SaltMaster, count: int) -> dict[str, object]:
    rounds = [measure_once(provider, master, count) for _ in range(ROUNDS)]
    figures: dict[str, object] = {
        key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]
    }
    figures["rounds"] = rounds
    return figures


def measure_once(provider: LocalProvider, master: SaltMaster, count: int) -> dict[str, float]:
    names = [f"app-{i}-bench-b{count}" for i in range(count)]
    requests = []
    for name in names:
        pair = master.preseed_minion(name)
        requests.append(
            ServerRequest(
                name=name,
                app="bench",
                env=f"b{count}",
                role="app",
                size="m1.tiny",
                minion_public_key=pair.public_pem,
                minion_private_key=pair.private_pem,
                master_address=provider.gateway,
            )
        )
    start = time.monotonic()
    provider.create_servers(requests)
    up = time.monotonic() - start
    missing = provider.wait_minions(names, timeout=120)
    joined = time.monotonic() - start
    if missing:
        raise SystemExit(f"minions did not join: {', '.join(missing)}")
    result = master.salt("--out=json", "--static", "-t", "30", "-L", ",".join(names), "test.ping")
    answers = json.loads(result.stdout or "{}")
    if answers != dict.fromkeys(names, True):
        raise SystemExit(f"not every host answered test.ping: {answers}")
    start = time.monotonic()
    provider.delete_servers(names)
    deleted = time.monotonic() - start
    for name in names:
        (master.pki_dir / "minions" / name).unlink(missing_ok=True)
    return {"up_s": round(up, 3), "joined_s": round(joined, 3), "deleted_s": round(deleted, 3)}


def main() -> int:
    bridge = f"gdlb{uuid.uuid4().hex[:8]}"
    cidr = network.choose_cidr(network.machine_networks(), seed=random.randrange(1 << 16))
    assert cidr is not None, "no free subnet"
    network.ensure_bridge(bridge, cidr)
    gateway = str(network.gateway_address(ipaddress.ip_network(cidr)))
    master = None
    provider = None
    try:
        root = Path(tempfile.mkdtemp(prefix="gdl-bench-"))
        master = SaltMaster(
            root, gateway, gdl_settings={"local": {"bridge": bridge, "cidr": str(cidr)}}
        )
        master.start()
        provider = LocalProvider.from_settings(
            Settings(
                state_dir=master.state_dir,
                pki_dir=master.pki_dir,
                master_config=master.conf_file,
                local={"bridge": bridge, "cidr": str(cidr)},
            )
        )
        figures = {f"hosts_{count}": measure(provider, master, count) for count in COUNTS}
    finally:
        if provider is not None:
            provider.delete_servers([s.name for s in provider.list_servers()])
        if master is not None:
            master.stop()
        network.remove_bridge(bridge)
    small, large = (figures[f"hosts_{count}"] for count in COUNTS)
    figures["ratio_up"] = round(large["up_s"] / small["up_s"], 2)
    figures["ratio_joined"] = round(large["joined_s"] / small["joined_s"], 2)
    figures["cpus"] = len(os.sched_getaffinity(0))
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    for count in COUNTS:
        f = figures[f"hosts_{count}"]
        print(
            f"{count} hosts (median of {ROUNDS}): up {f['up_s']:.2f} s, "
            f"minions joined {f['joined_s']:.2f} s, deleted {f['deleted_s']:.2f} s"
        )
    print(f"8 vs 2: up x{figures['ratio_up']}, joined x{figures['ratio_joined']}")
    print(f"load average {figures['load_average']} on {figures['cpus']} CPUs")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if figures["ratio_up"] < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
