"""gdl.deploy and gdl.rollback end to end on the local provider.

One environment of four app servers serves the whole module; the tests run in
order, each starting from where the last ended: a new release rolls out while
a client asks the VIP every 50 ms, a re-run of the build keeps it, a broken
release stops at the first server, and a rollback returns to the release
before.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gdl import envstore
from gdl_harness.local_cloud import LocalCloud, running_local_cloud
from gdl_harness.poller import Poller
from gdl_harness.salt_daemons import REPO_ROOT
from tests.support.runs import run as run_json

pytestmark = pytest.mark.integration

APP, ENV, SERVERS = "blog", "gdd1", 4
NAMES = [f"app-{i}-{APP}-{ENV}" for i in range(SERVERS)]


@pytest.fixture(scope="module")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with running_local_cloud(tmp_path_factory.mktemp("gddmaster"), tag="gdd") as cloud:
        yield cloud


@pytest.fixture(scope="module")
def env(local_cloud: LocalCloud) -> Iterator[dict]:
    master = local_cloud.master
    build = ("gdl.build", f"app={APP}", f"env={ENV}", f"servers={SERVERS}")
    code, data, output = run_json(master, *build)
    if code != 0:
        # Six minions syncing at once can outlast a step's timeout on a busy
        # machine; a build re-run continues where it stopped.
        code, data, output = run_json(master, *build)
    assert code == 0, output
    try:
        yield data
    finally:
        run_json(master, "gdl.destroy", f"app={APP}", f"env={ENV}")


def release_copy(root: Path, version: str, broken: bool = False) -> Path:
    """apps/blog at another version; ``broken`` makes its /healthz answer 500."""
    target = root / f"blog-{version}"
    shutil.copytree(REPO_ROOT / "apps" / APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = target / "app.yaml"
    manifest.write_text(
        re.sub(r"^version:.*$", f"version: {version}", manifest.read_text(), flags=re.M)
    )
    if broken:
        code = target / "blog" / "__init__.py"
        text = code.read_text()
        healthy = 'return jsonify(status="ok", host=host, app="blog", version=version)'
        assert healthy in text
        code.write_text(
            text.replace(
                healthy, 'return jsonify(status="broken", host=host, version=version), 500'
            )
        )
    return target


def versions(local_cloud: LocalCloud) -> dict[str, str]:
    """{server: the version its /healthz names}, asked of each server directly."""
    found = {}
    for server in local_cloud.provider().list_servers(APP, ENV):
        if server.role == "app":
            with urllib.request.urlopen(f"http://{server.address}/healthz", timeout=5) as answer:
                found[server.name] = json.loads(answer.read())["version"]
    return found


def recorded(local_cloud: LocalCloud) -> tuple[str | None, str | None]:
    record = envstore.load(local_cloud.master.state_dir, APP, ENV)
    assert record is not None
    return record.release, record.previous_release


def test_bad_requests_are_refused_in_one_line(local_cloud, env, tmp_path):
    master = local_cloud.master
    # A release whose static would add to nginx's site, its directory there to pass.
    hostile = release_copy(tmp_path, "1.0.9")
    static = "static;} server { listen 81; } #"
    (hostile / static).mkdir()
    manifest = hostile / "app.yaml"
    manifest.write_text(
        re.sub(r"^static:.*$", f"static: '{static}'", manifest.read_text(), flags=re.M)
    )
    for args, message in (
        (("app=blog", "env=nope"), "environment blog-nope does not exist"),
        (("app=blog", f"env={ENV}", "batch=0"), "batch=0 is out of range"),
        (("app=blog", f"env={ENV}", "version=9.9.9"), "release 9.9.9 of blog is not on"),
        (("app=blog", f"env={ENV}", f"source={hostile}"), "not a plain path inside the app"),
    ):
        result = master.run("gdl.deploy", *args, timeout=120)
        assert result.returncode != 0, result.stdout
        assert message in result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
    assert versions(local_cloud) == dict.fromkeys(NAMES, "1.0.0")
    # Refused before anything was built.
    assert not list((master.state_dir / "files").rglob("blog-1.0.9*"))


def test_deploy_rolls_out_without_a_failed_request(local_cloud, env, tmp_path):
    source = release_copy(tmp_path, "1.1.0")
    with Poller(env["url"]) as poller:
        code, data, output = run_json(
            local_cloud.master, "gdl.deploy", f"app={APP}", f"env={ENV}", f"source={source}"
        )
    assert code == 0, output
    assert poller.failed == [], poller.failed[:5]
    assert poller.ok > 50
    assert data["switched"] == NAMES
    assert versions(local_cloud) == dict.fromkeys(NAMES, "1.1.0")
    assert recorded(local_cloud) == ("1.1.0", "1.0.0")
    with urllib.request.urlopen(env["url"], timeout=5) as page:
        assert page.headers["X-App-Version"] == "1.1.0"
        assert 'class="version">1.1.0<' in page.read().decode()


def test_a_build_rerun_keeps_the_deployed_release(local_cloud, env):
    code, _, output = run_json(
        local_cloud.master, "gdl.build", f"app={APP}", f"env={ENV}", f"servers={SERVERS}"
    )
    assert code == 0, output
    assert versions(local_cloud) == dict.fromkeys(NAMES, "1.1.0")


def test_a_failing_release_stops_at_the_first_server(local_cloud, env, tmp_path):
    source = release_copy(tmp_path, "1.2.0", broken=True)
    with Poller(env["url"]) as poller:
        result = local_cloud.master.run(
            "gdl.deploy", f"app={APP}", f"env={ENV}", f"source={source}", timeout=900
        )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"{NAMES[0]} failed" in output and "answered 500" in output, output
    assert "back on 1.1.0 and in rotation" in output, output
    assert poller.failed == [], poller.failed[:5]
    assert versions(local_cloud) == dict.fromkeys(NAMES, "1.1.0")
    assert recorded(local_cloud) == ("1.1.0", "1.0.0")


def test_rollback_returns_to_the_previous_release(local_cloud, env):
    with Poller(env["url"]) as poller:
        code, data, output = run_json(
            local_cloud.master, "gdl.rollback", f"app={APP}", f"env={ENV}", "batch=2"
        )
    assert code == 0, output
    assert poller.failed == [], poller.failed[:5]
    assert data["release"] == "1.0.0"
    assert versions(local_cloud) == dict.fromkeys(NAMES, "1.0.0")
    assert recorded(local_cloud) == ("1.0.0", "1.1.0")
