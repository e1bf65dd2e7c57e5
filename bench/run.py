"""The benchmark suite: every figure of bench/README.md in one run on the local provider.

Makes one throwaway local cloud (its own bridge and salt-master), and on it:

1. builds the blog with 2 app servers (``env=fo``; the first build also makes
   the release's wheels, reported apart);
2. throughput and p50/p99 latency with wrk through the VIP and straight to one
   app server's nginx, in the same run, and their ratio;
3. failed requests while one app server's gunicorn dies, while scaling 2 -> 3
   -> 2, and during a rolling deploy (``gdl.deploy``, when it is available);
4. VIP failover for four faults of the VRRP master under both VRRP profiles
   (bench/failover.py);
5. build, no-op re-run and destroy times for 1, 2, 4, 8 and 50 app servers
   (bench/build_times.py), the salt-master's memory (PSS) and the machine's with 50.

Writes ``bench/results.json``, the table ``bench/results.md`` and the plot
``bench/failover.png``.  Everything it makes is removed at the end, also on
failure or Ctrl-C: hosts, master, bridge (gdl_harness/local_cloud.py); wrk
runs under a timeout.  Needs root; about 20 minutes on 2 cores.

    .venv/bin/python bench/run.py
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import build_times
import failover
import report

from gdl_harness.local_cloud import LocalCloud, running_local_cloud

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

RESULTS_JSON = BENCH_DIR / "results.json"
RESULTS_MD = BENCH_DIR / "results.md"
PLOT = BENCH_DIR / "failover.png"
BUILD_PLOT = BENCH_DIR / "build_times.svg"
APP = "blog"
ENV = "fo"
SERVERS = 2
BUILD_COUNTS = (1, 2, 4, 8, 50)
WRK_SECONDS = 5
WRK_CONNECTIONS = 16
SETTLE = 1.0  # seconds the client runs before and after an action


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def section(results: dict, key: str, action: Callable[[], object]) -> None:
    """Run one part of the suite; a failure is recorded and the suite goes on."""
    started = time.monotonic()
    try:
        results[key] = action()
    except Exception as error:
        results[key] = {"error": f"{type(error).__name__}: {error}"[-1500:]}
    progress(f"{key}: done in {time.monotonic() - started:.0f} s")


# -- wrk ------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return round(float(number) * _UNITS[unit], 2)


def wrk(url: str) -> dict[str, object]:
    command = [
        "wrk", "-t2", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s", "--timeout", "2s",
        "--latency", url,
    ]  # fmt: skip
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=WRK_SECONDS + 30, check=True
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    return {
        "url": url,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "none",
    }


def throughput(cloud: LocalCloud) -> dict[str, object]:
    provider = cloud.provider()
    vip = provider.find_env(APP, ENV).vip
    app_server = next(s for s in provider.list_servers(APP, ENV) if s.name.startswith("app-0-"))
    # The same page both ways; the app's index is what users ask for.
    through_vip = wrk(f"http://{vip}/")
    direct = wrk(f"http://{app_server.address}/")
    return {
        "duration_s": WRK_SECONDS,
        "connections": WRK_CONNECTIONS,
        "app_servers_behind_vip": SERVERS,
        "vip": through_vip,
        "one_app_server": direct,
        "rps_ratio_vip_to_direct": round(
            through_vip["requests_per_s"] / direct["requests_per_s"], 2
        ),
        "p50_ratio_vip_to_direct": round(through_vip["p50_ms"] / direct["p50_ms"], 2),
        "p99_ratio_vip_to_direct": round(through_vip["p99_ms"] / direct["p99_ms"], 2),
    }


# -- requests during changes ------------------------------------------------------------------


def while_polling(cloud: LocalCloud, action: Callable[[], object]) -> dict[str, object]:
    """Failed requests to the VIP from just before ``action`` until just after it."""
    vip = cloud.provider().find_env(APP, ENV).vip
    with failover.vip_client(f"http://{vip}/healthz") as poller:
        time.sleep(SETTLE)
        started = time.monotonic()
        detail = action()
        seconds = time.monotonic() - started
        time.sleep(SETTLE)
    failed, requests = poller.failed_since(started - SETTLE)
    return {"failed": failed, "requests": requests, "action_s": round(seconds, 1), **(detail or {})}


def app_server_dies(cloud: LocalCloud) -> dict[str, object]:
    victim = f"app-0-{APP}-{ENV}"

    def kill_gunicorn() -> dict[str, object]:
        failover.in_host(cloud, victim, ["killall", "-KILL", "gunicorn"], check=True)
        time.sleep(failover.WINDOW)
        return {"server": victim, "fault": "SIGKILL of every gunicorn process"}

    row = while_polling(cloud, kill_gunicorn)
    failover.in_host(cloud, victim, ["service", f"gdl-{APP}", "start"])
    time.sleep(failover.READY)  # haproxy's check takes it back after 2 passes
    return row


def scaling(cloud: LocalCloud) -> dict[str, object]:
    return {
        f"up_{SERVERS}_to_{SERVERS + 1}": while_polling(
            cloud,
            lambda: {"build_s": round(failover.build(cloud, APP, ENV, SERVERS + 1, "default"), 1)},
        ),
        f"down_{SERVERS + 1}_to_{SERVERS}": while_polling(
            cloud,
            lambda: {"build_s": round(failover.build(cloud, APP, ENV, SERVERS, "default"), 1)},
        ),
    }


def new_release(root: Path) -> tuple[Path, str]:
    """A copy of the app with its version bumped: a release the servers do not run yet."""
    source = root / f"{APP}-bench"
    shutil.copytree(REPO_ROOT / "apps" / APP, source)
    manifest = source / "app.yaml"
    text = manifest.read_text()
    version = re.search(r"^version: *(\S+)", text, re.MULTILINE).group(1) + ".1"
    manifest.write_text(re.sub(r"^version: *\S+", f"version: {version}", text, flags=re.MULTILINE))
    return source, version


def deploy(cloud: LocalCloud, root: Path) -> dict[str, object]:
    """A rolling deploy of a new release under load, when this version of gdl has one."""
    source, version = new_release(root)
    outcome: dict[str, object] = {}

    def run_deploy() -> dict[str, object]:
        result = cloud.master.run(
            "gdl.deploy", f"app={APP}", f"env={ENV}", f"source={source}", timeout=1200
        )
        outcome["returncode"] = result.returncode
        outcome["output"] = (result.stdout + result.stderr).strip()[-500:]
        return {}

    row = while_polling(cloud, run_deploy)
    if outcome["returncode"] != 0:
        if "not available" in str(outcome["output"]):
            return {"available": False, "refused": outcome["output"]}
        return {"available": True, "error": f"gdl.deploy failed: {outcome['output']}"}
    return {"available": True, "version": version, **row}


# -- the salt-master's memory -------------------------------------------------------------------


def master_pids(cloud: LocalCloud) -> list[int]:
    """The salt-master and the processes it forked (its own process group)."""
    group = os.getpgid(cloud.master.pid)
    if group == os.getpgrp():
        raise RuntimeError("the salt-master shares this process group: PSS would count it")
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def machine_used_mib() -> float:
    """The machine's memory in use: MemTotal less MemAvailable, in MiB."""
    info = dict(
        (line.split(":")[0], int(line.split()[1]))
        for line in open("/proc/meminfo")  # noqa: SIM115
    )
    return round((info["MemTotal"] - info["MemAvailable"]) / 1024, 1)


def master_pss_mib(cloud: LocalCloud) -> tuple[float, int]:
    """(summed PSS in MiB, number of processes) of the salt-master."""
    total_kib = 0
    pids = master_pids(cloud)
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total_kib += int(re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE).group(1))
    return round(total_kib / 1024, 1), len(pids)


class PssPeak:
    """Samples the master's PSS every second in a thread: the peak of the ``with`` block."""

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud
        self.peak = 0.0
        self.machine_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1):
            # A process may exit between listing and reading: skip that sample.
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, master_pss_mib(self.cloud)[0])
                self.machine_peak = max(self.machine_peak, machine_used_mib())

    def __enter__(self) -> PssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


def build_times_and_memory(cloud: LocalCloud) -> dict[str, object]:
    rows = []
    memory: dict[str, object] = {}
    for servers in BUILD_COUNTS:
        if servers == max(BUILD_COUNTS):

            def settled_pss(env: str) -> dict[str, object]:
                pss, processes = master_pss_mib(cloud)
                memory.update(
                    {
                        "environment": env,
                        "app_servers": max(BUILD_COUNTS),
                        "settled_pss_mib": pss,
                        "processes": processes,
                        "machine_used_mib": machine_used_mib(),
                    }
                )
                return {}

            memory["machine_used_before_mib"] = machine_used_mib()
            pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            memory["machine_total_mib"] = round(pages / 2**20)
            with PssPeak(cloud) as peak:
                row = build_times.measure(cloud.master, servers, settled_pss)
            memory["peak_pss_mib_during_build_rerun_destroy"] = peak.peak
            memory["machine_peak_used_mib"] = peak.machine_peak
        else:
            row = build_times.measure(cloud.master, servers)
        rows.append(row)
        progress(f"servers={servers}: {row}")
    return {"rows": rows, "master_memory": memory}


SECTIONS = ("throughput", "app_server_dies", "scaling", "deploy", "failover", "build_times")


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("bench/run.py makes local hosts: run it as root", file=sys.stderr)
        return 2
    # `--only failover,deploy` measures those again and keeps the rest of results.json.
    only = set(argv[1].split(",")) if len(argv) == 2 and argv[0] == "--only" else set(SECTIONS)
    if argv and (only - set(SECTIONS) or argv[0] != "--only"):
        print(f"usage: run.py [--only {','.join(SECTIONS)}]", file=sys.stderr)
        return 2
    started = time.monotonic()
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results: dict[str, object] = {}
    if only != set(SECTIONS):
        results = json.loads(RESULTS_JSON.read_text())
        results.setdefault("remeasured", {}).update(dict.fromkeys(sorted(only), now))
    old_builds = results.get("build_times") or {}
    if "build_times" in only and "rows" in old_builds:
        # The figures these replace stay beside them, in the table and the plot.
        results["build_times_before"] = {
            "measured": old_builds.get("measured") or results.get("measured"),
            "rows": old_builds["rows"],
        }
    else:
        results["measured"] = now
    results["machine"] = f"{platform.node()}, {os.cpu_count()} CPUs"
    results.setdefault("load_average_at_start", {})[now] = round(os.getloadavg()[0], 1)
    traces: dict[str, list[tuple[float, bool, str]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="gdl-bench-") as root,
        running_local_cloud(Path(root) / "master", tag="gdlr") as cloud,
    ):

        def failovers() -> dict[str, object]:
            rows, found = failover.failover_rows(
                cloud,
                APP,
                ENV,
                SERVERS,
                built_with="default",
                on_row=lambda row: progress(f"failover {row}"),
            )
            traces.update(found)
            return {
                "client_interval_s": failover.INTERVAL,
                "window_s": failover.WINDOW,
                "rows": rows,
            }

        actions: dict[str, Callable[[], object]] = {
            "throughput": lambda: throughput(cloud),
            "app_server_dies": lambda: app_server_dies(cloud),
            "scaling": lambda: scaling(cloud),
            "deploy": lambda: deploy(cloud, Path(root)),
            "failover": failovers,
        }
        if only - {"build_times"}:
            progress(f"local cloud on bridge {cloud.bridge}; first build of {APP}/{ENV}")
            first = failover.build(cloud, APP, ENV, SERVERS, "default")
            # The figure of a whole run; a partial one keeps it.
            results.setdefault("first_build_s", round(first, 1))
            for key, action in actions.items():
                if key in only:
                    section(results, key, action)
            cloud.master.run("gdl.destroy", f"app={APP}", f"env={ENV}", timeout=600)
        if "build_times" in only:
            section(
                results, "build_times", lambda: {**build_times_and_memory(cloud), "measured": now}
            )
    if only == set(SECTIONS):
        results["total_s"] = round(time.monotonic() - started)
    else:
        results.setdefault("partial_runs_s", {})[now] = round(time.monotonic() - started)
    results["targets"] = [
        {
            "target": label,
            "limit": limit,
            "measured": value,
            "met": report.check(value, limit) == "met",
        }
        for label, limit, value in report.targets(results)
    ]
    RESULTS_JSON.write_text(json.dumps(results, indent=2) + "\n")
    plotted = report.plot(traces, PLOT, say=progress)
    build_plot = report.plot_build_times(results, BUILD_PLOT)
    RESULTS_MD.write_text(report.markdown(results, APP, SERVERS))
    print(RESULTS_MD.read_text())
    written = [RESULTS_JSON, RESULTS_MD] + ([PLOT] if plotted else [])
    written += [build_plot] if build_plot else []
    progress("written: " + ", ".join(str(p.relative_to(REPO_ROOT)) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
