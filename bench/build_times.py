"""Build, no-op re-run and destroy times of whole environments on the local provider.

For each count of app servers (1, 2, 4, 8 by default) it builds the blog in a
fresh environment through ``salt-run gdl.build``, runs the same build again
(nothing to change), and destroys it, on a throwaway local cloud of its own.
Prints a table and writes ``bench/results/build_times.json``.  Needs root.

    .venv/bin/python bench/build_times.py            # 1 2 4 8
    .venv/bin/python bench/build_times.py 2 4        # chosen counts
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from svgplot import build_time_series, write_line_chart

from gdl_harness.local_cloud import running_local_cloud
from gdl_harness.salt_process import salt_script

REPO_ROOT = Path(__file__).resolve().parents[1]

RESULTS = REPO_ROOT / "bench" / "results" / "build_times.json"
PLOT = REPO_ROOT / "bench" / "results" / "build_times.svg"
APP = "blog"
RUN_TIMEOUT = 1200  # seconds; a bound, not a target
# A step's last progress line: "<step>: done in 2.1 s (2 created)".
STEP_DONE = re.compile(r"^(?P<step>.+?): (?:done in|failed after) (?P<s>[0-9.]+) s\b")


def timed_lines(master, *args: str) -> tuple[float, list[tuple[float, str]]]:
    """Run ``salt-run ARGS``: its seconds, and each line it printed with when it came."""
    cmd = [salt_script("salt-run"), "-c", str(master.config_dir), *args]
    started = time.monotonic()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=str(master.root),
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((round(time.monotonic() - started, 1), line.rstrip()))
            if time.monotonic() - started > RUN_TIMEOUT:
                proc.kill()
        code = proc.wait()
    seconds = time.monotonic() - started
    if code != 0:
        shown = "\n".join(text for _, text in lines[-40:])
        raise SystemExit(f"salt-run {' '.join(args)} failed:\n{shown}")
    return seconds, lines


def timed_run(master, *args: str) -> float:
    return timed_lines(master, *args)[0]


def step_seconds(lines: list[tuple[float, str]]) -> list[dict[str, object]]:
    """Each step that printed its last line: its name, seconds taken, and when it ended."""
    found = []
    for at, text in lines:
        done = STEP_DONE.match(text.strip())
        if done:
            found.append({"step": done["step"], "s": float(done["s"]), "ended_at_s": at})
    return found


def measure(
    master, servers: int, while_built: Callable[[str], dict] | None = None
) -> dict[str, object]:
    """Build, re-run and destroy; ``while_built(env)`` may add figures before the destroy."""
    env = f"bench{servers}"
    request = ("gdl.build", f"app={APP}", f"env={env}", f"servers={servers}")
    build, build_lines = timed_lines(master, *request)
    rerun, rerun_lines = timed_lines(master, *request)
    extra = while_built(env) if while_built else {}
    destroy, destroy_lines = timed_lines(master, "gdl.destroy", f"app={APP}", f"env={env}")
    return {
        "servers": servers,
        "build_s": round(build, 1),
        "noop_rerun_s": round(rerun, 1),
        "destroy_s": round(destroy, 1),
        **extra,
        # Where each run went: the steps' own timings, as their lines said.
        "steps": {
            "build": step_seconds(build_lines),
            "noop_rerun": step_seconds(rerun_lines),
            "destroy": step_seconds(destroy_lines),
        },
    }


def plot(rows: list[dict], measured: str, previous: dict | None, path: Path) -> Path:
    """Build time against app servers, this run's beside the one it replaces (dashed)."""
    series = build_time_series(rows, measured[5:16].replace("T", " "))
    if previous and previous.get("rows"):
        when = str(previous.get("measured"))[5:16].replace("T", " ")
        series += build_time_series(previous["rows"], when, True)
    return write_line_chart(path, "gdl.build, local provider", "app servers", "seconds", series)


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("bench/build_times.py makes local hosts: run it as root", file=sys.stderr)
        return 2
    counts = [int(a) for a in argv] or [1, 2, 4, 8]
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="gdl-bench-") as root,
        running_local_cloud(Path(root) / "master", tag="gdlb") as cloud,
    ):
        # The release's wheels are built once per master: do it outside the timings.
        warm = timed_run(cloud.master, "gdl.build", f"app={APP}", "env=warm", "servers=1")
        timed_run(cloud.master, "gdl.destroy", f"app={APP}", "env=warm")
        for servers in counts:
            row = measure(cloud.master, servers)
            rows.append(row)
            print(
                f"servers={servers}: build {row['build_s']} s, no-op re-run "
                f"{row['noop_rerun_s']} s, destroy {row['destroy_s']} s",
                flush=True,
            )
    print()
    print("| app servers | build (s) | no-op re-run (s) | destroy (s) |")
    print("| ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['servers']} | {row['build_s']} | {row['noop_rerun_s']} | {row['destroy_s']} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
    measured = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.write_text(
        json.dumps(
            {
                "measured": measured,
                "load_average_at_end": round(os.getloadavg()[0], 1),
                "machine": f"{platform.node()} {os.cpu_count()} cpus",
                "first_build_with_wheels_s": round(warm, 1),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    plot(rows, measured, previous, PLOT)
    print(f"\nwritten to {RESULTS.relative_to(REPO_ROOT)} and {PLOT.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
