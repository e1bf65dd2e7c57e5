"""gdl.build, scale, a second environment, and destroy, end to end on the local provider.

The tests in this module run in order and share one local cloud: they are the
story an operator lives through, each step starting from where the last ended.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest

from gdl.providers.local import LocalProvider
from gdl_harness.browser import CHROMIUM, chromium_flags
from gdl_harness.poller import Poller
from tests.support.runs import run as run_json
from tests.support.runs import served_by

pytestmark = pytest.mark.integration


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


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed")
def test_a_browser_shows_the_posts_and_the_serving_host(built, tmp_path):
    """Headless Chromium renders the index through the VIP: posts and serving host shown."""
    url = built["result"]["url"]
    flags = chromium_flags(tmp_path / "profile", "--window-size=1280,900")
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
    # Nothing to make and no role due: no orchestration, no minion asked to do anything.
    assert "nothing to change, no orchestration needed" in output
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


def haproxy_cfg(local_cloud, lb: str) -> str:
    argv = local_cloud.provider().run(lb, ["cat", "/etc/haproxy/haproxy.cfg"])
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout


def served_with(url: str, cookie: str | None) -> tuple[str, str | None]:
    """(the serving host, the sticky cookie haproxy set, if any) of one request."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        set_cookie = response.headers.get("Set-Cookie")
        return response.headers["X-Served-By"], set_cookie.split(";")[0] if set_cookie else None


def test_tuning_reaches_haproxy_sticks_clients_and_is_kept(local_cloud, built):
    url = built["result"]["url"]
    master = local_cloud.master
    tuned = ("sticky=true", "health_interval=0.25", "health_fall=3", "timeout_server=45")
    code, _, output = run_json(master, "gdl.build", "app=blog", "env=dev", "servers=2", *tuned)
    assert code == 0, output
    try:
        for lb in ("lb-0-blog-dev", "lb-1-blog-dev"):
            cfg = haproxy_cfg(local_cloud, lb)
            assert "cookie GDLSERVER insert indirect nocache httponly" in cfg, cfg
            assert "check inter 250ms fall 3 rise 2 " in cfg, cfg
            assert "timeout server 45s" in cfg, cfg
        # A client that sends the cookie back stays on its server; one without it does not.
        first, cookie = served_with(url, None)
        assert cookie and cookie.startswith("GDLSERVER="), cookie
        assert {served_with(url, cookie)[0] for _ in range(10)} == {first}
        assert set(served_by(url, 4)) == {"app-0-blog-dev", "app-1-blog-dev"}

        # A build without the arguments keeps them.
        code, _, output = run_json(master, "gdl.build", "app=blog", "env=dev", "servers=2")
        assert code == 0, output
        assert "check inter 250ms fall 3 rise 2 " in haproxy_cfg(local_cloud, "lb-0-blog-dev")
        assert "cookie GDLSERVER" in haproxy_cfg(local_cloud, "lb-0-blog-dev")
    finally:
        # Back to the role's values for the tests after this one.
        code, _, output = run_json(
            master,
            "gdl.build",
            "app=blog",
            "env=dev",
            "servers=2",
            "sticky=false",
            "health_interval=0.5",
            "health_fall=2",
            "timeout_server=30",
        )
        assert code == 0, output
    cfg = haproxy_cfg(local_cloud, "lb-0-blog-dev")
    assert "cookie" not in cfg and "check inter 500ms fall 2 rise 2 " in cfg, cfg


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
    assert master.keys.env_minions("blog", "dev") == set()
    assert not list((master.state_dir / "pillar").rglob("blog-dev*"))
    assert set(served_by(qa_url, 2)) == {"app-0-hello_world-qa"}

    again = master.run(
        "state.orch", "orch.destroy", 'pillar={"app": "blog", "env": "dev"}', timeout=600
    )
    assert again.returncode == 0, again.stdout + again.stderr
