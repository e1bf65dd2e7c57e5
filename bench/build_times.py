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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gdl_harness.local_cloud import running_local_cloud

REPO_ROOT = Path(__file__).resolve().parents[1]

RESULTS = REPO_ROOT / "bench" / "results" / "build_times.json"
APP = "blog"
RUN_TIMEOUT = 1200  # seconds; a bound, not a target


def timed_run(master, *args: str) -> float:
    started = time.monotonic()
    result = master.run(*args, timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"salt-run {' '.join(args)} failed:\n{result.stdout[-3000:]}")
    return seconds


def measure(
    master, servers: int, while_built: Callable[[str], dict] | None = None
) -> dict[str, object]:
    """Build, re-run and destroy; ``while_built(env)`` may add figures before the destroy."""
    env = f"bench{servers}"
    build = timed_run(master, "gdl.build", f"app={APP}", f"env={env}", f"servers={servers}")
    rerun = timed_run(master, "gdl.build", f"app={APP}", f"env={env}", f"servers={servers}")
    extra = while_built(env) if while_built else {}
    destroy = timed_run(master, "gdl.destroy", f"app={APP}", f"env={env}")
    return {
        "servers": servers,
        "build_s": round(build, 1),
        "noop_rerun_s": round(rerun, 1),
        "destroy_s": round(destroy, 1),
        **extra,
    }


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
    RESULTS.write_text(
        json.dumps(
            {
                "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": f"{platform.node()} {os.cpu_count()} cpus",
                "first_build_with_wheels_s": round(warm, 1),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten to {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
