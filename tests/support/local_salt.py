"""salt-call --local on the repository's states, with a pillar of the test's own.

Renders and applies the roles without a master, the way the runner's pillar
(gdl/pillar.py) and pillar/top.sls hand it to an environment's servers.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jinja2
import yaml

from gdl import apps, release_build, spec
from gdl import pillar as env_pillar
from gdl_harness.salt_daemons import file_roots, pillar_roots

REPO_ROOT = Path(__file__).resolve().parents[2]
SALT_CALL = Path(sys.executable).parent / "salt-call"


def release_entry(app: str, version: str) -> dict[str, Any]:
    """A release's entry in pillar gdl:releases, as gdl.pillar.releases writes it."""
    manifest = apps.load_manifest(REPO_ROOT / "apps", app).as_dict()
    return {
        "source": release_build.release_url(app, version),
        "sha256": hashlib.sha256(f"{app}-{version}".encode()).hexdigest(),
        "room": 0,  # not measured: no archive behind it
        "layout": "site-packages",
        **{key: manifest[key] for key in env_pillar.MANIFEST_KEYS},
    }


# An environment's common pillar as the runner writes it: blog/dev, 2 app servers.
SAMPLE_PILLAR = {
    "gdl": {
        "app": "blog",
        "env": "dev",
        "version": "1.0.0",
        "releases": {"1.0.0": release_entry("blog", "1.0.0")},
        "servers": [
            {"name": "app-0-blog-dev", "address": "10.20.0.11"},
            {"name": "app-1-blog-dev", "address": "10.20.0.12"},
        ],
        "lbs": [
            {"name": "lb-0-blog-dev", "address": "10.20.0.2"},
            {"name": "lb-1-blog-dev", "address": "10.20.0.3"},
        ],
        "vip": "10.20.0.10",
        "vrrp": {"router_id": 42, "interface": "eth0", **spec.vrrp_settings("default")},
    }
}


def salt_jinja() -> jinja2.Environment:
    """A jinja environment that renders the role's file templates as Salt's renderer does."""
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    environment.filters["quote"] = shlex.quote  # as Salt's jinja renderer has it
    return environment


class LocalSalt:
    """salt-call --local with the master's file_roots and a pillar of the test's own."""

    def __init__(self, root: Path, common: dict[str, Any], lb_only: dict[str, Any]) -> None:
        self.root = root
        # The layout the runner writes (gdl/pillar.py), read through pillar/top.sls.
        common_file, lb_file = env_pillar.pillar_files(
            root / "pillar", common["gdl"]["app"], common["gdl"]["env"]
        )
        for path, data in ((common_file, common), (lb_file, lb_only)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("#!yaml\n" + yaml.safe_dump(data))
        # <root>/files stands for <state_dir>/files, the release archives' root.
        (root / "files").mkdir(parents=True, exist_ok=True)
        config = {
            "file_client": "local",
            "root_dir": str(root),
            "cachedir": str(root / "cache"),
            "pki_dir": str(root / "pki"),
            "sock_dir": str(root / "run"),
            "pidfile": str(root / "run" / "minion.pid"),
            "log_file": str(root / "minion.log"),
            # The master's roots (gdl_harness/salt_daemons.py), <root> as its state dir.
            "file_roots": file_roots(root),
            "pillar_roots": pillar_roots(root),
        }
        (root / "conf").mkdir()
        (root / "conf" / "minion").write_text(yaml.safe_dump(config))

    def call(self, minion_id: str, *args: str) -> subprocess.CompletedProcess:
        command = [
            str(SALT_CALL),
            "--local",
            "--config-dir",
            str(self.root / "conf"),
            "--id",
            minion_id,
            "--out",
            "json",
            "--retcode-passthrough",
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    def show_sls(self, minion_id: str, mods: str) -> dict[str, Any]:
        done = self.call(minion_id, "state.show_sls", mods)
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)["local"]
        assert isinstance(result, dict), result
        return result
