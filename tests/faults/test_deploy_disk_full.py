"""An app host's disk fills up during a deploy: the deploy stops, traffic keeps flowing.

The environment's hosts are ``m1.tiny`` (a 1 GiB private writable layer), and
one app server's layer is filled from inside the host just before the
deploy, as a runaway log would, leaving a few MiB: enough for its minion to
run jobs, not for the new release, which carries data that does not compress.
The app role measures the space before it unpacks anything (unpacking into a
full disk would leave the minion unable even to return its job), so the
server is put back in rotation on its release.  It is the first server the
deploy reaches, so the test also shows that the servers after it are never
touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from typing import Any

import pytest

from gdl.providers.local import host
from gdl_harness.poller import Poller
from tests.support.leftovers import HostTrace
from tests.support.runs import refusal, run

pytestmark = pytest.mark.integration

APP, ENV = "hello_world", "gdf4"


def names(role: str, count: int) -> list[str]:
    return [f"{role}-{i}-{APP}-{ENV}" for i in range(count)]


class VersionPoller(Poller):
    """Asks the URL every 50 ms, keeping every failure and every version seen."""

    def __init__(self, url: str) -> None:
        super().__init__(url, limit=900, timeout=3)
        self.versions: set[str] = set()

    def answered(self, response: Any) -> bool:
        self.versions.add(json.loads(response.read())["version"])
        return True


def versions(url: str, count: int) -> dict[str, str]:
    seen = {}
    for _ in range(count):
        with urllib.request.urlopen(url, timeout=5) as response:
            seen[response.headers["X-Served-By"]] = json.loads(response.read())["version"]
    return seen


def test_a_full_disk_stops_the_deploy_and_traffic_keeps_flowing(
    local_cloud, tmp_path, nothing_left
):
    master = local_cloud.master
    provider = local_cloud.provider()
    trace = HostTrace()
    try:
        code, built, output = run(
            master, "gdl.build", f"app={APP}", f"env={ENV}", "servers=2", "size=m1.tiny"
        )
        assert code == 0, output[-3000:]
        trace.note(provider, APP, ENV)
        health = f"http://{built['vip']}/healthz"

        source = tmp_path / APP
        shutil.copytree(local_cloud.settings.apps_dir / APP, source)
        manifest = source / "app.yaml"
        manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))
        # Data that does not compress: the new release can never fit in the few MiB left.
        (source / "payload.bin").write_bytes(os.urandom(16 << 20))

        full = names("app", 2)[0]
        pid = int(provider.get_server(full).extra["pid"])
        filled = subprocess.run(
            host.nsenter_argv(pid, ["dd", "if=/dev/zero", "of=/var/fill", "bs=1M"]),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "No space left on device" in filled.stderr, filled.stderr
        # A few MiB stay free: the minion still runs jobs, the new release does not fit.
        subprocess.run(
            host.nsenter_argv(pid, ["truncate", "-s", "-4M", "/var/fill"]), check=True, timeout=60
        )

        with VersionPoller(health) as poller:
            code, _, output = run(
                master, "gdl.deploy", f"app={APP}", f"env={ENV}", f"source={source}"
            )
        assert code != 0, output[-3000:]
        line = refusal(output)
        print(f"deploy with {full}'s disk full: {line} ({poller.ok} requests served meanwhile)")
        assert full in line and "\n" not in line, output[-3000:]
        assert "do not answer" not in line, line
        assert "MiB free and release 1.0.1 needs about" in line, line
        assert poller.failed == [], poller.failed[:5]
        assert poller.ok > 0
        # The deploy stopped at the full server: nothing runs the new release.
        assert versions(health, 6) == {n: "1.0.0" for n in names("app", 2)}
    finally:
        trace.note(provider, APP, ENV)
        code, _, output = run(master, "gdl.destroy", f"app={APP}", f"env={ENV}")
    assert code == 0, output[-3000:]
    nothing_left(APP, ENV, trace)
