"""gdl.build, scale, a second environment, and destroy, end to end on the local provider.

The tests in this module run in order and share one local cloud: they are the
story an operator lives through, each step starting from where the last ended.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdl import keys
from gdl.providers.local import LocalProvider

pytestmark = pytest.mark.integration


class Poller:
    """A client asking the URL every 50 ms, counting what failed (bounded in time)."""

    def __init__(self, url: str, interval: float = 0.05, limit: float = 600) -> None:
        self.url = url
        self.interval = interval
        self.limit = limit
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        self.ok += 1
                    else:
                        self.failed.append(f"status {response.status}")
            except Exception as error:
                self.failed.append(repr(error))
            self._stop.wait(self.interval)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def served_by(url: str, count: int) -> list[str]:
    hosts = []
    for _ in range(count):
        with urllib.request.urlopen(url, timeout=5) as response:
            hosts.append(response.headers["X-Served-By"])
    return hosts


def json_documents(text: str) -> list[object]:
    """salt-run --out=json prints each progress event, then the return: one document each."""
    decoder = json.JSONDecoder()
    documents, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return documents
        try:
            document, position = decoder.raw_decode(text, position)
        except ValueError:
            return documents
        documents.append(document)


def run_json(master, *args: str, timeout: float = 900) -> tuple[int, object, str]:
    """Exit status, the runner's return (the last document) and all output."""
    result = master.run("--out=json", *args, timeout=timeout)
    documents = json_documents(result.stdout)
    data = documents[-1] if documents else result.stdout
    return result.returncode, data, result.stdout + result.stderr


def env_processes(provider: LocalProvider, app: str, env: str) -> list[str]:
    return [s.name for s in provider.list_servers(app, env)]


@pytest.fixture(scope="module")
def built(local_cloud) -> Iterator[dict]:
    master = local_cloud.master
    started = time.monotonic()
    code, data, output = run_json(master, "gdl.build", "app=blog", "env=dev", "servers=2")
    seconds = time.monotonic() - started
    assert code == 0, output
    yield {"result": data, "seconds": seconds}
    run_json(master, "gdl.destroy", "app=blog", "env=dev")
    run_json(master, "gdl.destroy", "app=hello_world", "env=qa")


def test_build_serves_the_blog_from_both_app_servers(built):
    url = built["result"]["url"]
    assert url.startswith("http://")
    hosts = served_by(url, 20)
    assert Counter(hosts) == {"app-0-blog-dev": 10, "app-1-blog-dev": 10}
    assert all(a != b for a, b in itertools.pairwise(hosts)), hosts


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed")
def test_a_browser_shows_the_posts_and_the_serving_host(built, tmp_path):
    """Headless Chromium renders the index through the VIP: posts and serving host shown."""
    url = built["result"]["url"]
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,900",
    ]
    screenshot = tmp_path / "index.png"
    shot = subprocess.run(
        [str(CHROMIUM), *flags, f"--screenshot={screenshot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    dom = subprocess.run(
        [str(CHROMIUM), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert "How a rollout works" in dom
    assert "One address, two load balancers" in dom or "one-address-two-load-balancers" in dom
    assert re.search(r"app-[01]-blog-dev", dom), dom[-2000:]


def test_unchanged_build_changes_nothing_and_is_quick(local_cloud, built):
    started = time.monotonic()
    code, data, output = run_json(
        local_cloud.master, "gdl.build", "app=blog", "env=dev", "servers=2"
    )
    seconds = time.monotonic() - started
    assert code == 0, output
    assert data["changes"] is False
    print(f"first build {built['seconds']:.1f} s, unchanged re-run {seconds:.1f} s")


def test_test_mode_lists_the_plan_and_changes_nothing(local_cloud):
    provider = local_cloud.provider()
    before = sorted(env_processes(provider, "blog", "dev"))
    code, data, output = run_json(
        local_cloud.master, "gdl.build", "app=blog", "env=dev", "servers=3", "test=True"
    )
    assert code == 0, output
    assert "create app-2-blog-dev" in data["plan"]
    assert sorted(env_processes(provider, "blog", "dev")) == before


def test_scale_up_then_down_without_a_failed_request(local_cloud, built):
    url = built["result"]["url"]
    master = local_cloud.master
    with Poller(url) as poller:
        code, _, output = run_json(master, "gdl.build", "app=blog", "env=dev", "servers=3")
    assert code == 0, output
    assert poller.failed == [], poller.failed[:5]
    assert set(served_by(url, 9)) == {"app-0-blog-dev", "app-1-blog-dev", "app-2-blog-dev"}

    with Poller(url) as poller:
        code, _, output = run_json(master, "gdl.build", "app=blog", "env=dev", "servers=1")
    assert code == 0, output
    assert poller.failed == [], poller.failed[:5]
    assert set(served_by(url, 6)) == {"app-0-blog-dev"}
    names = env_processes(local_cloud.provider(), "blog", "dev")
    assert sorted(names) == ["app-0-blog-dev", "lb-0-blog-dev", "lb-1-blog-dev"]


def test_second_environment_coexists_and_survives_the_first_ones_destroy(local_cloud, built):
    master = local_cloud.master
    code, data, output = run_json(master, "gdl.build", "app=hello_world", "env=qa", "servers=1")
    assert code == 0, output
    qa_url = data["url"]
    assert set(served_by(qa_url, 4)) == {"app-0-hello_world-qa"}
    assert set(served_by(built["result"]["url"], 2)) == {"app-0-blog-dev"}

    result = master.run(
        "state.orch", "orch.destroy", 'pillar={"app": "blog", "env": "dev"}', timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    provider = local_cloud.provider()
    assert env_processes(provider, "blog", "dev") == []
    assert keys.env_minions(master.pki_dir, "blog", "dev") == set()
    assert not list((master.state_dir / "pillar").rglob("blog-dev*"))
    assert set(served_by(qa_url, 2)) == {"app-0-hello_world-qa"}

    again = master.run(
        "state.orch", "orch.destroy", 'pillar={"app": "blog", "env": "dev"}', timeout=600
    )
    assert again.returncode == 0, again.stdout + again.stderr
