"""bench/run.py's report: the table of bench/results.md, its targets and its plots."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import failover
import svgplot

# Targets the table is checked against.
TARGETS = {
    "takeover_sigkill_default_s": 4.0,
    "takeover_sigkill_fast_s": 1.5,
    "failed_app_server_dies": 1,
    "failed_scaling": 0,
    "failed_deploy": 0,
    "build_2_s": 15.0,
    "build_ratio_8_to_2": 1.3,
    "build_ratio_50_to_2": 3.0,
    "noop_share_of_build": 0.2,
    "destroy_s": 3.0,
}


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "none in window"
    return f"{value}{unit}"


def check(value: object, limit: float) -> str:
    if not isinstance(value, (int, float)):
        return "not measured"
    return "met" if value <= limit else "**missed**"


def markdown(results: dict, app: str, servers: int) -> str:
    lines = [
        "# gdl benchmark results",
        "",
        f"Measured {results['measured']} on {results['machine']} with `bench/run.py` "
        f"(local provider, app `{app}`, {servers} app servers unless said otherwise). "
        f"The whole run took {results.get('total_s')} s. Raw figures: "
        "[results.json](results.json). The machine was shared with other work; its load "
        "average (1 min) when a run started: "
        + ", ".join(f"{v} at {k}" for k, v in results.get("load_average_at_start", {}).items())
        + ".",
        "",
    ]
    if results.get("remeasured"):
        lines += [
            "Measured again later with `bench/run.py --only ...`: "
            + ", ".join(f"{k} ({v})" for k, v in results["remeasured"].items())
            + ".",
            "",
        ]
    fo = results.get("failover", {})
    lines += [
        "## VIP failover (fault on the VRRP master)",
        "",
        f"Client: a fresh HTTP request to the VIP every {int(failover.INTERVAL * 1000)} ms "
        f"(timeout {failover.REQUEST_TIMEOUT:g} s), watched for {failover.WINDOW:g} s after "
        "the fault. **Takeover** = from the fault until the first answer served by the "
        "other LB (its `X-Load-Balancer` header): the failover time. **Longest silence** = "
        "the longest time without any answer. After a SIGKILL of keepalived the old master "
        "keeps the VIP and its haproxy answers until the peer's gratuitous ARPs win, so "
        "clients may see no failure at all while the pair is briefly split.",
        "",
        "| profile | fault | takeover (s) | longest silence (s) | failed / requests | "
        "old master keeps VIP |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for row in fo.get("rows", []) if isinstance(fo, dict) else []:
        if "error" in row:
            lines.append(
                f"| {row['profile']} | {row['fault']} | error: {row['error'][:200]} | | | |"
            )
            continue
        lines.append(
            f"| {row['profile']} | {row['fault']} | {_fmt(row['takeover_s'])} | "
            f"{row['longest_silence_s']} | {row['failed']} / {row['requests']} | "
            f"{'yes' if row['old_master_keeps_vip'] else 'no'} |"
        )
    if isinstance(fo, dict) and "error" in fo:
        lines.append(f"\nerror: {fo['error']}")
    lines += ["", "![client outcomes during each failover](failover.png)", ""]

    changes = [
        ("one app server's gunicorn killed (SIGKILL)", results.get("app_server_dies")),
    ]
    scale = results.get("scaling") or {}
    for key, value in scale.items() if isinstance(scale, dict) else []:
        if key != "error":
            changes.append((f"scale {key.replace('_', ' ')}", value))
    if "error" in scale:
        changes.append(("scaling", scale))
    deploy_result = results.get("deploy") or {}
    if deploy_result.get("available"):
        changes.append(
            (f"rolling deploy of {deploy_result.get('version')} (`gdl.deploy`)", deploy_result)
        )
    lines += [
        "## Requests during changes",
        "",
        "Same client, from 1 s before the change until 1 s after it ended.",
        "",
        "| change | failed / requests | change took (s) |",
        "| --- | ---: | ---: |",
    ]
    for label, row in changes:
        if not isinstance(row, dict) or "error" in (row or {}):
            lines.append(f"| {label} | error: {(row or {}).get('error', 'not run')[:200]} | |")
        else:
            lines.append(f"| {label} | {row['failed']} / {row['requests']} | {row['action_s']} |")
    if not deploy_result.get("available"):
        refused = deploy_result.get("refused") or deploy_result.get("error") or "not run"
        lines.append(f"| rolling deploy (`gdl.deploy`) | **not measured**: {refused[:200]} | |")
    lines.append("")

    tp = results.get("throughput") or {"error": "not run"}
    lines += ["## Throughput: through the VIP vs one app server", ""]
    if "error" in tp:
        lines.append(f"error: {tp['error']}")
    else:
        lines += [
            f"wrk, {tp['duration_s']} s, {tp['connections']} connections, 2 threads, page `/`, "
            "both in the same run (client, LBs and app servers share the machine's CPUs).",
            "",
            "| target | requests/s | p50 (ms) | p99 (ms) | non-2xx |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| VIP (haproxy, {tp['app_servers_behind_vip']} app servers) | "
            f"{tp['vip']['requests_per_s']} | {tp['vip']['p50_ms']} | {tp['vip']['p99_ms']} | "
            f"{tp['vip']['non_2xx']} |",
            f"| one app server (nginx) | {tp['one_app_server']['requests_per_s']} | "
            f"{tp['one_app_server']['p50_ms']} | {tp['one_app_server']['p99_ms']} | "
            f"{tp['one_app_server']['non_2xx']} |",
            f"| ratio VIP / direct | {tp['rps_ratio_vip_to_direct']} | "
            f"{tp['p50_ratio_vip_to_direct']} | {tp['p99_ratio_vip_to_direct']} | |",
        ]
    lines.append("")

    bt = results.get("build_times") or {"error": "not run"}
    lines += ["## Build, no-op re-run and destroy", ""]
    if "error" in bt:
        lines.append(f"error: {bt['error']}")
    else:
        lines += [
            f"The first build of the run, which also builds the release's wheels, took "
            f"{results.get('first_build_s')} s (not in the table).",
            "",
            "| app servers | build (s) | no-op re-run (s) | destroy (s) |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for row in bt["rows"]:
            lines.append(
                f"| {row['servers']} | {row['build_s']} | {row['noop_rerun_s']} | "
                f"{row['destroy_s']} |"
            )
        before = results.get("build_times_before") or {}
        if before.get("rows"):
            lines += [
                "",
                f"The figures these replace, measured {before['measured']}:",
                "",
                "| app servers | build (s) | no-op re-run (s) | destroy (s) |",
                "| ---: | ---: | ---: | ---: |",
            ]
            lines += [
                f"| {r['servers']} | {r['build_s']} | {r['noop_rerun_s']} | {r['destroy_s']} |"
                for r in before["rows"]
            ]
        lines += ["", "![build and no-op re-run time against app servers](build_times.svg)"]
        memory = bt.get("master_memory", {})
        if memory:
            lines += [
                "",
                f"salt-master memory with {memory.get('app_servers')} app servers (+2 LBs): "
                f"PSS {memory.get('settled_pss_mib')} MiB over {memory.get('processes')} "
                f"processes after the no-op re-run; peak "
                f"{memory.get('peak_pss_mib_during_build_rerun_destroy')} MiB while building, "
                "re-running and destroying (sampled every second; PSS from "
                "/proc/PID/smaps_rollup of the master's process group).",
            ]
            if memory.get("machine_used_mib") is not None:
                lines += [
                    "",
                    f"The machine's memory in use (MemTotal less MemAvailable) with those "
                    f"{memory.get('app_servers')} app servers, 2 LBs and the master: "
                    f"{memory.get('machine_used_mib')} MiB of {memory.get('machine_total_mib')} "
                    f"after the no-op re-run, {memory.get('machine_peak_used_mib')} MiB at the "
                    f"peak, {memory.get('machine_used_before_mib')} MiB before the build.",
                ]
    lines.append("")

    lines += ["## Targets", "", "| target | limit | measured | |", "| --- | ---: | ---: | --- |"]
    for label, limit, value in targets(results):
        shown = "—" if value is None else value
        lines.append(f"| {label} | {limit} | {shown} | {check(value, limit)} |")
    lines.append("")
    return "\n".join(lines)


def targets(results: dict) -> list[tuple[str, float, object]]:
    rows = (results.get("failover") or {}).get("rows", [])

    def takeover(profile: str) -> object:
        return next(
            (
                r.get("takeover_s")
                for r in rows
                if r.get("profile") == profile and r.get("fault") == "keepalived SIGKILL"
            ),
            None,
        )

    def failed(row: object) -> object:
        return row.get("failed") if isinstance(row, dict) else None

    builds = {r["servers"]: r for r in (results.get("build_times") or {}).get("rows", [])}

    def build_ratio(servers: int) -> object:
        if servers in builds and 2 in builds:
            return round(builds[servers]["build_s"] / builds[2]["build_s"], 2)
        return None

    noop_shares = [r["noop_rerun_s"] / r["build_s"] for r in builds.values()]
    scale = results.get("scaling") or {}
    scale_failed = [failed(v) for k, v in scale.items() if k != "error"]
    deploy_result = results.get("deploy") or {}
    return [
        ("takeover after SIGKILL of keepalived, default profile (s)",
         TARGETS["takeover_sigkill_default_s"], takeover("default")),
        ("takeover after SIGKILL of keepalived, fast profile (s)",
         TARGETS["takeover_sigkill_fast_s"], takeover("fast")),
        ("failed requests when an app server dies",
         TARGETS["failed_app_server_dies"], failed(results.get("app_server_dies"))),
        ("failed requests while scaling up and down",
         TARGETS["failed_scaling"],
         sum(scale_failed) if scale_failed and None not in scale_failed else None),
        ("failed requests during a rolling deploy", TARGETS["failed_deploy"],
         failed(deploy_result) if deploy_result.get("available") else None),
        ("build of 2 app servers, release built (s)", TARGETS["build_2_s"],
         builds.get(2, {}).get("build_s")),
        ("build of 8 / build of 2", TARGETS["build_ratio_8_to_2"], build_ratio(8)),
        ("build of 50 / build of 2", TARGETS["build_ratio_50_to_2"], build_ratio(50)),
        ("no-op re-run / build, largest share", TARGETS["noop_share_of_build"],
         round(max(noop_shares), 2) if noop_shares else None),
        ("destroy, slowest (s)", TARGETS["destroy_s"],
         max((r["destroy_s"] for r in builds.values()), default=None)),
    ]  # fmt: skip


def plot_build_times(results: dict, path: Path) -> Path | None:
    """Build and no-op re-run time against app servers, the run before dashed beside it."""
    now = results.get("build_times") or {}
    if "rows" not in now:
        return None
    when = now.get("measured") or results.get("measured")
    series = svgplot.build_time_series(now["rows"], str(when)[5:16].replace("T", " "))
    before = results.get("build_times_before") or {}
    if before.get("rows"):
        then = str(before["measured"])[5:16].replace("T", " ")
        series += svgplot.build_time_series(before["rows"], then, True)
    return svgplot.write_line_chart(
        path, "gdl.build, local provider", "app servers", "seconds", series
    )


def plot(
    traces: dict[str, list[tuple[float, bool, str]]], path: Path, say: Callable[[str], None] = print
) -> bool:
    """One strip per profile and fault: each request at its time, by outcome and LB."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed (pip install .[bench]): no plot")
        return False
    if not traces:
        return False
    figure, axes = plt.subplots(len(traces), 1, figsize=(11, 1.1 * len(traces) + 1), sharex=True)
    axes = axes if len(traces) > 1 else [axes]
    # One colour per LB in every strip.
    lbs = sorted({lb for points in traces.values() for _, ok, lb in points if ok})
    for axis, (name, points) in zip(axes, traces.items(), strict=True):
        for index, lb in enumerate(lbs):
            xs = [t for t, ok, served in points if ok and served == lb]
            axis.scatter(xs, [1] * len(xs), s=6, color=f"C{index}", label=f"answered by {lb}")
        failed = [t for t, ok, _ in points if not ok]
        axis.scatter(failed, [0] * len(failed), s=10, color="red", marker="x", label="failed")
        axis.axvline(0, color="black", linewidth=0.8)
        axis.set_yticks([0, 1], ["failed", "ok"])
        axis.set_ylim(-0.5, 1.5)
        axis.set_title(name, fontsize=9, loc="left")
        axis.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xlabel("seconds since the fault (request completion time)")
    figure.suptitle("VIP client outcomes during failover (request every 50 ms)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
