"""The ``gdl`` command against a real master: build, status, destroy, and a refusal."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from gdl import envstore, naming
from gdl_harness.salt_process import run_client

pytestmark = pytest.mark.integration

GDL = Path(sys.executable).parent / "gdl"
APP = "hello_world"


def gdl(master, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return run_client(
        [str(GDL), "-c", str(master.config_dir), *args], timeout, cwd=str(master.root)
    )


def test_build_status_and_destroy(local_cloud):
    master = local_cloud.master
    provider = local_cloud.provider()
    env = f"cli{uuid.uuid4().hex[:4]}"
    env_id = naming.env_id(APP, env)
    try:
        built = gdl(master, "build", APP, env, "1", "m1.tiny")
        assert built.returncode == 0, built.stdout + built.stderr
        lines = built.stdout.splitlines()
        # salt-run's progress lines, then the summary, the URL first.
        assert f"{env_id}: preparing the environment's network parts" in lines
        assert f"app-0-{env_id} ... ok" in lines
        # The orchestration's steps too, as salt-run shows them.
        assert "VRRP pair ..." in lines
        assert any(re.fullmatch(r"VRRP pair: done in \d+\.\d s .*", line) for line in lines)
        assert any(
            re.fullmatch(rf"app role on app-0-{env_id}: done in \d+\.\d s.*", line)
            for line in lines
        ), built.stdout
        # The summary after them: the URL first, then the runner's return.
        urls = [line for line in lines if line.startswith("http://")]
        assert len(urls) == 1, built.stdout
        url = urls[0]
        assert lines[lines.index(url) + 1] == "result: true"
        assert url == f"http://{provider.find_env(APP, env).public_address}/"
        with urllib.request.urlopen(f"{url}healthz", timeout=10) as response:
            assert response.status == 200
        assert sorted(s.name for s in provider.list_servers(APP, env)) == [
            f"app-0-{env_id}",
            f"lb-0-{env_id}",
            f"lb-1-{env_id}",
        ]

        status = gdl(master, "status", APP, env, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.splitlines()[0] == url
        assert f"app-0-{env_id}" in status.stdout
    finally:
        destroyed = gdl(master, "build", APP, env, "1", "m1.tiny", "--destroy")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert provider.list_servers(APP, env) == []
    assert envstore.load(master.state_dir, APP, env) is None


@pytest.mark.parametrize(
    ("servers", "size", "words"),
    [("0", "m1.tiny", "servers"), ("1", "m1.enormous", "m1.enormous")],
)
def test_bad_input_is_refused_in_one_line_and_nothing_is_made(local_cloud, servers, size, words):
    master = local_cloud.master
    env = f"clibad{uuid.uuid4().hex[:4]}"
    refused = gdl(master, "build", APP, env, servers, size, timeout=120)
    assert refused.returncode != 0
    assert refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert words in refused.stderr
    assert local_cloud.provider().list_servers(APP, env) == []
    assert envstore.load(master.state_dir, APP, env) is None
    assert master.keys.env_minions(APP, env) == set()
