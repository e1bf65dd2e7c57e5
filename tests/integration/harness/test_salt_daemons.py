"""The test harness itself: real daemons answer through Salt's own CLIs and leave nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gdl_harness import salt_daemons, salt_process
from gdl_harness.salt_daemons import SaltMaster, SaltMinion
from gdl_harness.salt_process import port_open


def _pids_naming(config_dir: Path) -> set[int]:
    """Live processes whose command line names ``config_dir``."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and f"-c {config_dir}".encode() in cmdline:
            pids.add(int(entry))
    return pids


def _listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP listeners the given processes own (from ``ss``)."""
    out = subprocess.run(["ss", "-Htlnp"], capture_output=True, text=True, check=True).stdout
    return {
        line.split()[3].rsplit(":", 1)[0]
        for line in out.splitlines()
        if any(f"pid={pid}," in line for pid in pids)
    }


def test_master_listens_only_on_its_interface(salt_master: SaltMaster) -> None:
    assert port_open("127.0.0.1", salt_master.ret_port)
    assert port_open("127.0.0.1", salt_master.publish_port)
    assert _listening_addresses(_pids_naming(salt_master.config_dir)) == {"127.0.0.1"}


def test_master_config_carries_gdl_settings(salt_master_factory) -> None:
    master = salt_master_factory(gdl_settings={"provider": "openstack"}, start=False)
    settings = master.config()["gdl"]
    assert settings["provider"] == "openstack"
    assert settings["state_dir"] == str(master.state_dir)
    assert Path(settings["source_dir"], "setup.py").is_file()
    assert master.config()["auto_accept"] is False


def test_minion_answers_a_ping(module_salt_master: SaltMaster, module_salt_minion) -> None:
    result = module_salt_master.salt_json(module_salt_minion.minion_id, "test.ping")
    assert result == {module_salt_minion.minion_id: True}
    # The key was preseeded: nothing waits for acceptance.
    keys = json.loads(module_salt_master.salt_key("--out=json", "-L", check=True).stdout)
    assert keys["minions"] == [module_salt_minion.minion_id]
    assert keys["minions_pre"] == []


def test_runner_answers(module_salt_master: SaltMaster) -> None:
    assert module_salt_master.run_json("test.arg", "1")["args"] == [1]


def test_gdl_runner_is_loaded(module_salt_master: SaltMaster) -> None:
    result = module_salt_master.run("-d", "gdl", check=True)
    assert "gdl." in result.stdout


def test_minion_syncs_modules_from_file_roots(
    salt_master_factory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    extra_root = tmp_path_factory.mktemp("roots")
    (extra_root / "_modules").mkdir()
    (extra_root / "_modules" / "harness_probe.py").write_text(
        'def hello():\n    """salt \'*\' harness_probe.hello"""\n    return "synced"\n'
    )
    repo = salt_daemons.REPO_ROOT
    master = salt_master_factory(
        extra_config={"file_roots": {"base": [str(extra_root), str(repo), str(repo / "states")]}}
    )
    minion = SaltMinion(tmp_path_factory.mktemp("minion"), master, "app-0-harness-sync")
    try:
        minion.start()
        synced = master.salt_json(minion.minion_id, "saltutil.sync_modules")
        assert "modules.harness_probe" in synced[minion.minion_id]
        answer = master.salt_json(minion.minion_id, "harness_probe.hello")
        assert answer == {minion.minion_id: "synced"}
    finally:
        minion.stop()


def test_stop_leaves_no_process(tmp_path_factory: pytest.TempPathFactory) -> None:
    master = SaltMaster(tmp_path_factory.mktemp("master"))
    minion = SaltMinion(tmp_path_factory.mktemp("minion"), master, "app-0-harness-stop")
    try:
        master.start()
        minion.start()
        assert len(_pids_naming(master.config_dir)) > 2  # main process and its workers
        assert _pids_naming(minion.config_dir)
    finally:
        minion.stop()
        master.stop()
    assert _pids_naming(master.config_dir) == set()
    assert _pids_naming(minion.config_dir) == set()
    assert not port_open("127.0.0.1", master.ret_port)
    assert master not in salt_process.running_daemons()
    master.stop()  # idempotent
    minion.stop()


def test_daemons_left_running_are_stopped_at_exit(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A process that starts a master and exits without stopping it: the atexit
    # safety net must take the master down with it.
    root = tmp_path_factory.mktemp("master")
    script = (
        "from gdl_harness.salt_daemons import SaltMaster\n"
        f"master = SaltMaster({str(root)!r})\n"
        "master.start()\n"
        "print(master.pid)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().isdigit()
    assert _pids_naming(root / "etc" / "salt") == set()


def test_a_master_that_cannot_start_says_why(tmp_path_factory: pytest.TempPathFactory) -> None:
    master = SaltMaster(tmp_path_factory.mktemp("master"), extra_config={"user": "no-such-user"})
    with pytest.raises(salt_process.DaemonError, match="did not start"):
        master.start(timeout=30)
    assert _pids_naming(master.config_dir) == set()
