"""A local host whose making was cut short.

A host record is written before the host boots, with no PID 1 yet.  While the
process making it lives, the host is "building"; once that process is gone
nothing will finish it, and it must read as broken so a re-run replaces it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gdl.providers.base import BUILDING, STOPPED
from gdl.providers.local import LocalProvider, host, network


def provider(tmp_path: Path) -> LocalProvider:
    return LocalProvider(
        state_dir=tmp_path / "local",
        bridge="gdlut0",
        cidr="10.77.0.0/24",
        master_port=4506,
        publish_port=4505,
    )


def half_made(p: LocalProvider, name: str, creator: int | None) -> None:
    network.write_json(
        p.hosts_dir / name / "host.json",
        {
            "name": name,
            "app": "blog",
            "env": "dev",
            "role": "app",
            "size": "m1.small",
            "address": "10.77.0.9",
            "pid": None,
            "starttime": None,
            "creator": creator,
            "creator_starttime": host.process_starttime(creator) if creator else None,
        },
    )


def test_a_host_being_made_by_a_live_process_is_building(tmp_path: Path) -> None:
    p = provider(tmp_path)
    half_made(p, "app-0-blog-dev", os.getpid())
    assert p.get_server("app-0-blog-dev").state == BUILDING


def test_a_host_whose_maker_died_is_stopped_so_a_rerun_replaces_it(tmp_path: Path) -> None:
    p = provider(tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    half_made(p, "app-0-blog-dev", gone.pid)
    half_made(p, "app-1-blog-dev", None)
    assert {s.name: s.state for s in p.list_servers("blog", "dev")} == {
        "app-0-blog-dev": STOPPED,
        "app-1-blog-dev": STOPPED,
    }
