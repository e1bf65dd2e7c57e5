"""Metrics on a built environment: haproxy's Prometheus exporter and stats page on each LB's
own address, port 8404, not on the VIP; gdl.status with each app server's sessions and rate.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdl_harness.poller import Poller
from tests.support.runs import run as run_json

pytestmark = pytest.mark.integration

APP, ENV = "hello_world", "mtr"
APP_SERVERS = [f"app-{i}-{APP}-{ENV}" for i in range(2)]
METRICS_PORT = 8404
GDL = Path(sys.executable).parent / "gdl"


@pytest.fixture(scope="module")
def built(local_cloud) -> Iterator[dict]:
    master = local_cloud.master
    code, data, output = run_json(master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=2")
    assert code == 0, output
    try:
        yield data
    finally:
        run_json(master, "gdl.destroy", f"app={APP}", f"env={ENV}")


def lbs(local_cloud) -> dict[str, str]:
    """{LB name: its own address}."""
    found = local_cloud.provider().list_servers(APP, ENV)
    return {s.name: s.address for s in found if s.role == "lb"}


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode(errors="replace")


def test_each_lb_serves_prometheus_metrics_on_its_own_address(local_cloud, built):
    own = lbs(local_cloud)
    assert len(own) == 2, own
    for name, address in own.items():
        status, body = get(f"http://{address}:{METRICS_PORT}/metrics")
        assert status == 200, name
        assert "# TYPE haproxy_process_" in body, f"{name}: {body[:500]}"
        # The series docs/metrics.md suggests.
        for metric in (
            "haproxy_server_http_responses_total",
            "haproxy_backend_active_servers",
            "haproxy_frontend_http_requests_total",
        ):
            assert f"# TYPE {metric} " in body, f"{name}: {metric}"
        for server in APP_SERVERS:
            # Every app server is a series of the environment's backend.
            series = f'haproxy_server_current_sessions{{proxy="be_{APP}_{ENV}",server="{server}"}}'
            assert series in body, f"{name}: {server}"


def test_each_lb_serves_a_read_only_stats_page_on_its_own_address(local_cloud, built):
    for name, address in lbs(local_cloud).items():
        status, page = get(f"http://{address}:{METRICS_PORT}/stats")
        assert status == 200, name
        assert "Statistics Report" in page, f"{name}: {page[:500]}"
        assert all(server in page for server in APP_SERVERS), name
        # With `stats admin`, the page would offer to change servers' states.
        assert "Choose the action to perform" not in page, name


def test_the_vip_does_not_answer_on_the_metrics_port(built):
    vip = built["url"].split("//", 1)[1].split("/", 1)[0]
    status, _ = get(f"http://{vip}/healthz")
    assert status == 200  # the VIP is up: only the metrics port is closed there
    with pytest.raises(OSError):
        socket.create_connection((vip, METRICS_PORT), timeout=5).close()


def status_with_traffic(master, url: str) -> dict:
    """gdl.status asked while a client keeps the app servers busy."""
    with Poller(f"{url}healthz", interval=0.02) as poller:
        time.sleep(2)  # haproxy's rate counts the last whole second
        code, data, output = run_json(master, "gdl.status", f"app={APP}", f"env={ENV}")
    assert code == 0, output
    assert poller.ok > 0, poller.failed[:5]
    return data


def test_status_shows_each_app_servers_sessions_and_request_rate(local_cloud, built):
    data = status_with_traffic(local_cloud.master, built["url"])
    backends = {row["name"]: row for row in data["backends"]}
    assert sorted(backends) == APP_SERVERS, data
    for name, row in backends.items():
        assert isinstance(row["sessions"], int) and row["sessions"] >= 0, (name, row)
        assert isinstance(row["request_rate"], int) and row["request_rate"] >= 0, (name, row)
    # Requests were arriving while haproxy was asked: round robin gave both servers some.
    if sum(row["request_rate"] for row in backends.values()) == 0:
        data = status_with_traffic(local_cloud.master, built["url"])  # a busy machine: once more
        backends = {row["name"]: row for row in data["backends"]}
    assert all(row["request_rate"] > 0 for row in backends.values()), backends


def test_gdl_status_prints_a_line_per_app_server_with_sessions_and_rate(local_cloud, built):
    master = local_cloud.master
    shown = subprocess.run(
        [str(GDL), "-c", str(master.config_dir), "status", APP, ENV],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(master.root),
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("backends (haproxy on lb-"))
    assert lines[title + 1].split()[:4] == ["SERVER", "STATUS", "SESSIONS", "REQ/S"]
    rows = {line.split()[0]: line.split() for line in lines[title + 2 :]}
    assert sorted(rows) == APP_SERVERS, shown.stdout
    for name, cells in rows.items():
        assert cells[1] == "UP", (name, cells)
        assert cells[2].isdigit() and cells[3].isdigit(), (name, cells)
