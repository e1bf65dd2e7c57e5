"""What clients of the VIP see when the VRRP master breaks, for each VRRP profile.

For each fault it finds the load balancer holding the VIP, starts a client
asking the VIP every 50 ms (one fresh connection per request, 1 s timeout),
breaks that load balancer, and reports:

- ``takeover_s``: from the fault until the first answer served by the *other*
  load balancer (haproxy's ``X-Load-Balancer`` header says which one answered).
  This is the failover time.  It is measured this way because a master whose
  keepalived was SIGKILLed keeps the VIP on its interface and its haproxy keeps
  answering until the peer's gratuitous ARPs move the clients: a client-side
  "silence" would then be zero and say nothing about the failover.
- ``longest_silence_s``: the longest time without an answered request.
- ``failed``: requests that got no 200 answer, of ``requests`` made.
- ``old_master_keeps_vip``: whether the broken LB still has the VIP address at
  the end of the window.

The broken LB is repaired after each fault (its daemon started again, its
link mended; ``gdl.build`` when that is not enough).  The library part
(``vip_client``, ``measure_failover``) is used by ``bench/run.py``; run alone it
measures both profiles and writes ``bench/results/failover.json``.  Needs root.

    .venv/bin/python bench/failover.py
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from gdl.providers.local import host as local_host
from gdl_harness.local_cloud import LocalCloud, running_local_cloud
from gdl_harness.poller import Outcome, Poller

REPO_ROOT = Path(__file__).resolve().parents[1]

RESULTS = REPO_ROOT / "bench" / "results" / "failover.json"
INTERVAL = 0.05  # seconds between the client's requests
REQUEST_TIMEOUT = 1.0
WINDOW = 8.0  # seconds watched after each fault
POLL_LIMIT = 600.0  # no client runs longer than this, whatever happens
PROFILES = ("default", "fast")
# Commands run inside the VRRP master; None: the link is cut from the bridge side.
FAULTS: dict[str, list[str] | None] = {
    "keepalived SIGTERM": ["sh", "-c", "kill -TERM $(cat /run/keepalived.pid)"],
    # The whole process group at once (the daemon in the pidfile leads it):
    # killall signals the parent first, and the VRRP child, told of its parent's
    # death, may still stop cleanly and hand the VIP over at once: a graceful
    # stop, not the crash this fault stands for.
    "keepalived SIGKILL": ["sh", "-c", "/bin/kill -KILL -- -$(cat /run/keepalived.pid)"],
    "haproxy SIGKILL": ["killall", "-KILL", "haproxy"],
    "link cut": None,
}
# What brings the broken LB back (the link is mended as soon as the window ends).
# gdl.build would do the same, in ten times the time; it stays the fallback.
REPAIRS: dict[str, list[str] | None] = {
    "keepalived SIGTERM": ["service", "keepalived", "start"],
    "keepalived SIGKILL": ["service", "keepalived", "start"],
    "haproxy SIGKILL": ["service", "haproxy", "start"],
    "link cut": None,
}
# Seconds for a repaired LB to be a ready backup: keepalived's check rises after 2 s.
READY = 3.0


def vip_client(url: str) -> Poller:
    """The benchmark's client: a request every INTERVAL, each given REQUEST_TIMEOUT."""
    return Poller(url, interval=INTERVAL, limit=POLL_LIMIT, timeout=REQUEST_TIMEOUT)


def longest_silence(outcomes: list[Outcome], since: float, until: float) -> float:
    """The longest stretch in [since, until] without an answered request."""
    answered = [o.done for o in outcomes if o.ok and since <= o.done <= until]
    points = [since, *answered, until]
    return max(b - a for a, b in itertools.pairwise(points))


def summarize(outcomes: list[Outcome], fault_at: float, old_master: str) -> dict[str, object]:
    end = fault_at + WINDOW
    after = [o for o in outcomes if o.started >= fault_at]
    takeover = next(
        (o.done - fault_at for o in after if o.ok and o.served_by and o.served_by != old_master),
        None,
    )
    return {
        "takeover_s": None if takeover is None else round(takeover, 2),
        "longest_silence_s": round(longest_silence(outcomes, fault_at, end), 2),
        "failed": sum(1 for o in after if not o.ok),
        "requests": len(after),
    }


def in_host(
    cloud: LocalCloud, name: str, command: list[str], timeout: float = 20, check: bool = False
) -> str:
    """Run ``command`` inside local host ``name``; its output."""
    argv = cloud.provider().run(name, command)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed in {name}: {done.stderr.strip()}")
    return done.stdout


def holds_vip(cloud: LocalCloud, name: str, vip: str) -> bool:
    out = in_host(cloud, name, ["ip", "-o", "-4", "addr", "show"])
    return any(f" {vip}/" in line for line in out.splitlines())


def lb_names(app: str, env: str) -> list[str]:
    return [f"lb-{i}-{app}-{env}" for i in range(2)]


def settled_holder(cloud: LocalCloud, app: str, env: str, vip: str, timeout: float = 60) -> str:
    """The one LB holding the VIP, once the same one has for a second and the VIP answers."""
    deadline = time.monotonic() + timeout
    holders: list[str] = []
    previous: list[str] = []
    while time.monotonic() < deadline:
        holders = [n for n in lb_names(app, env) if holds_vip(cloud, n, vip)]
        if len(holders) == 1 and holders == previous:
            try:
                with urllib.request.urlopen(f"http://{vip}/healthz", timeout=2) as response:
                    if response.headers.get("X-Load-Balancer") == holders[0]:
                        return holders[0]
            except Exception:
                pass
        previous = holders
        time.sleep(1)
    raise RuntimeError(f"the VIP {vip} did not settle on one LB (holders: {holders})")


def set_link(cloud: LocalCloud, name: str, up: bool) -> None:
    """Cut or mend host ``name``'s link: its veth's end on the bridge."""
    veth = local_host.HostNames.of(cloud.provider().tag, name).veth
    subprocess.run(["ip", "link", "set", veth, "up" if up else "down"], check=True, timeout=10)


def build(cloud: LocalCloud, app: str, env: str, servers: int, profile: str) -> float:
    """Run gdl.build; its duration in seconds (raises when it fails)."""
    started = time.monotonic()
    args = ("gdl.build", f"app={app}", f"env={env}", f"servers={servers}", f"vrrp={profile}")
    result = cloud.master.run(*args, timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(f"salt-run {' '.join(args)} failed:\n{result.stdout[-2000:]}")
    return time.monotonic() - started


def measure_failover(
    cloud: LocalCloud, app: str, env: str, fault: str, profile: str
) -> tuple[dict[str, object], list[Outcome], float]:
    """Break the VRRP master with ``fault``; (row, client outcomes, fault time)."""
    vip = cloud.provider().find_env(app, env).vip
    master = settled_holder(cloud, app, env, vip)
    command = FAULTS[fault]
    with vip_client(f"http://{vip}/healthz") as poller:
        time.sleep(1)
        before = [o.served_by for o in poller.outcomes if o.ok]
        if not before or set(before) != {master}:
            raise RuntimeError(f"{master} was not the only LB answering before the fault")
        fault_at = time.monotonic()
        try:
            if command is None:
                set_link(cloud, master, up=False)
            else:
                in_host(cloud, master, command, check=True)
            time.sleep(WINDOW)
            keeps_vip = holds_vip(cloud, master, vip)
        finally:
            if command is None:
                set_link(cloud, master, up=True)
    row = {
        "profile": profile,
        "fault": fault,
        "vrrp_master": master,
        **summarize(poller.outcomes, fault_at, master),
        "old_master_keeps_vip": keeps_vip,
    }
    return row, poller.outcomes, fault_at


def repair(cloud: LocalCloud, app: str, env: str, servers: int, profile: str, row: dict) -> None:
    """Bring the LB broken for ``row`` back as a ready backup; gdl.build if that fails."""
    command = REPAIRS.get(str(row.get("fault")))
    try:
        if command is not None and row.get("vrrp_master"):
            in_host(cloud, str(row["vrrp_master"]), command)
        time.sleep(READY)
        vip = cloud.provider().find_env(app, env).vip
        settled_holder(cloud, app, env, vip, timeout=20)
    except Exception:
        build(cloud, app, env, servers, profile)


def failover_rows(
    cloud: LocalCloud,
    app: str,
    env: str,
    servers: int,
    profiles=PROFILES,
    built_with: str | None = None,
    on_row=print,
) -> tuple[list[dict[str, object]], dict[str, list[tuple[float, bool, str]]]]:
    """Every fault under every profile, the pair repaired after each.

    ``built_with`` is the profile the environment has now (no build needed).
    Returns the rows and, per "profile/fault", the client's outcomes as
    (seconds since the fault, answered, served by).
    """
    rows: list[dict[str, object]] = []
    traces: dict[str, list[tuple[float, bool, str]]] = {}
    for profile in profiles:
        if profile != built_with:
            build(cloud, app, env, servers, profile)
        for fault in FAULTS:
            for attempt in (1, 2):  # a pair that moved before the fault gets a second try
                try:
                    row, outcomes, fault_at = measure_failover(cloud, app, env, fault, profile)
                    traces[f"{profile}/{fault}"] = [
                        (round(o.done - fault_at, 3), o.ok, o.served_by) for o in outcomes
                    ]
                    break
                except Exception as error:  # one broken measurement must not lose the others
                    row = {"profile": profile, "fault": fault, "error": str(error)[-500:]}
                    on_row({**row, "attempt": attempt})
            rows.append(row)
            on_row(row)
            repair(cloud, app, env, servers, profile, row)
    return rows, traces


def main() -> int:
    if os.geteuid() != 0:
        print("bench/failover.py makes local hosts: run it as root", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory(prefix="gdl-bench-") as root,
        running_local_cloud(Path(root) / "master", tag="gdlf") as cloud,
    ):
        rows, _ = failover_rows(cloud, "blog", "fo", 2)
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
