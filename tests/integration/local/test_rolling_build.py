"""A re-run of gdl.build whose app role restarts gunicorn, on an environment that serves.

The module's master searches a directory of the test's before the repository's
states: a changed ``gdl/parameters/defaults.yaml`` put there is a new input of
the app role, as a gdl upgrade or a changed setting would be. The build then
runs the app role one server at a time, each out of haproxy's rotation, while a
client asks the VIP every 50 ms: no request fails.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gdl_harness.local_cloud import LocalCloud, running_local_cloud
from gdl_harness.poller import Poller
from gdl_harness.salt_daemons import REPO_ROOT
from tests.integration.local.test_build import built  # noqa: F401 - the module's environment
from tests.support.runs import run as run_json

pytestmark = pytest.mark.integration

APP_SERVERS = ["app-0-blog-dev", "app-1-blog-dev"]
DEFAULTS = Path("gdl") / "parameters" / "defaults.yaml"


@pytest.fixture(scope="module")
def overrides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("roots")


@pytest.fixture(scope="module")
def local_cloud(tmp_path_factory: pytest.TempPathFactory, overrides: Path) -> Iterator[LocalCloud]:
    root = tmp_path_factory.mktemp("grbmaster")
    with running_local_cloud(root, tag="grb", first_file_root=overrides) as cloud:
        yield cloud


def gunicorn_args(local_cloud: LocalCloud, name: str) -> list[str]:
    argv = local_cloud.provider().run(name, ["ps", "-o", "args=", "-C", "gunicorn"])
    found = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return found.splitlines()


def with_workers(workers: int) -> str:
    defaults = yaml.safe_load((REPO_ROOT / "states" / DEFAULTS).read_text())
    defaults["gdl"]["roles"]["app"]["gunicorn"]["workers"] = workers
    return yaml.safe_dump(defaults, default_flow_style=False)


def test_a_changed_app_role_restarts_one_server_at_a_time_without_a_failed_request(
    local_cloud: LocalCloud,
    overrides: Path,
    built: dict,  # noqa: F811 - the fixture imported above
) -> None:
    master = local_cloud.master
    url = built["result"]["url"]
    for name in APP_SERVERS:
        lines = gunicorn_args(local_cloud, name)
        assert lines and all("--workers 2 " in line for line in lines), (name, lines)
    changed = overrides / DEFAULTS
    changed.parent.mkdir(parents=True)
    changed.write_text(with_workers(3))

    with Poller(url) as poller:
        code, _, output = run_json(master, "gdl.build", "app=blog", "env=dev", "servers=2")
    assert code == 0, output
    assert poller.failed == [], poller.failed[:5]
    assert poller.ok > 100, poller.ok

    assert (
        "app role on app-0-blog-dev, app-1-blog-dev: due, its states, modules or pillar "
        "changed (one server at a time, out of rotation)"
    ) in output, output
    # Never on both at once: each server's drain, app role and return to rotation,
    # and the second server's drain only once the first is back.
    assert "app role on app-0-blog-dev, app-1-blog-dev ..." not in output, output
    order = []
    for name in APP_SERVERS:
        order += [
            f"{name}: drain ...",
            f"{name}: drain: done in ",
            f"app role on {name} ...",
            f"app role on {name}: done in ",
            f"{name}: back in rotation: done in ",
        ]
    found = [output.find(line) for line in order]
    assert -1 not in found, list(zip(order, found, strict=True))
    assert found == sorted(found), list(zip(order, found, strict=True))
    assert "app role, one server at a time: done in " in output
    rolled = re.findall(r"(?:app role on )?app-\d-blog-dev: [^\"]*done in [^\"]*", output)
    print(f"{poller.ok} requests answered during the build, none failed:", *rolled, sep="\n  ")
    for name in APP_SERVERS:
        lines = gunicorn_args(local_cloud, name)
        assert lines and all("--workers 3 " in line for line in lines), (name, lines)

    # Recorded: the next build does not run the app role again.
    code, data, output = run_json(master, "gdl.build", "app=blog", "env=dev", "servers=2")
    assert code == 0, output
    assert "app role on app-0-blog-dev, app-1-blog-dev: unchanged since" in output, output
    assert data["changes"] is False
