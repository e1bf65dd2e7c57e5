"""The test harness's short socket directories (Unix socket paths are short) never outlive it."""

from __future__ import annotations

import gc
from pathlib import Path

from gdl_harness.salt_daemons import SaltMaster


def deep_root(tmp_path: Path) -> Path:
    return tmp_path / ("a-root-too-deep-for-unix-socket-paths" * 2) / "master"


def test_a_configuration_asked_for_and_dropped_leaves_no_socket_directory(tmp_path):
    master = SaltMaster(deep_root(tmp_path))
    sockets = Path(master.config()["sock_dir"])
    assert sockets.is_dir() and not sockets.is_relative_to(tmp_path)
    del master
    gc.collect()
    assert not sockets.exists()


def test_stopping_a_daemon_never_started_removes_its_socket_directory(tmp_path):
    master = SaltMaster(deep_root(tmp_path))
    sockets = master.sock_dir
    master.stop()
    assert not sockets.exists()
