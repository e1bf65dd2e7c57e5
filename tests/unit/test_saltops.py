"""MasterOps: salt-cloud's servers made one process each, and state runs, within a bound."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gdl import saltops
from gdl.errors import ProviderError

HUNG, FAILING, MADE = "lb-0-blog-dev", "lb-1-blog-dev", "app-0-blog-dev"


def fake_profile(cloud_config: str, profile: str, name: str, overrides: dict) -> str:
    """Stands in for salt-cloud: one server made, one refused, one hung with a child."""
    if name == FAILING:
        return "the cloud said no\nits console: kernel panic"
    if name == HUNG:
        child = subprocess.Popen(["sleep", "600"])
        written = Path(overrides["pids"], f".{name}")
        written.write_text(f"{os.getpid()} {child.pid}")
        written.rename(Path(overrides["pids"], name))  # whole, or not there
        time.sleep(600)
    return ""


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def master(tmp_path, monkeypatch):
    monkeypatch.setattr(saltops.salt.cloud, "CloudClient", lambda path: None)
    monkeypatch.setattr(saltops, "_profile_one", fake_profile)
    return saltops.MasterOps({"conf_file": str(tmp_path / "master")})


def test_a_hung_salt_cloud_is_stopped_at_the_deadline_and_named(master, tmp_path):
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        master.cloud_create(
            "gdl-local-lb", [MADE, FAILING, HUNG], {"pids": str(tmp_path)}, timeout=1.0
        )
    assert time.monotonic() - started < 15
    error = caught.value
    assert error.line.startswith(
        f"salt-cloud could not make {FAILING}: the cloud said no; "
        f"{HUNG}: not made within 1 s (stopped)"
    )
    assert MADE not in error.line
    assert error.details == ("its console: kernel panic",)
    # Nothing it started outlives the call: neither the worker nor its child.
    worker, child = (int(pid) for pid in (tmp_path / HUNG).read_text().split())
    deadline = time.monotonic() + 5
    while not (gone(worker) and gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(worker) and gone(child)


def test_servers_made_in_time_are_no_error(master, tmp_path):
    master.cloud_create("gdl-local-lb", [MADE], {"pids": str(tmp_path)}, timeout=30)
    master.cloud_create("gdl-local-lb", [], {}, timeout=30)


def test_a_caller_killed_outright_leaves_no_worker(master, tmp_path):
    def caller() -> None:
        master.cloud_create("gdl-local-lb", [HUNG], {"pids": str(tmp_path)}, timeout=600)

    # The caller (a salt-run holding the environment's lock) is killed with SIGKILL:
    # no finally runs in it, and the lock goes with it.
    process = multiprocessing.get_context("fork").Process(target=caller)
    process.start()
    pids = tmp_path / HUNG
    deadline = time.monotonic() + 10
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker, child = (int(pid) for pid in pids.read_text().split())
    try:
        process.kill()
        process.join()
        deadline = time.monotonic() + 5
        while not gone(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(worker)
    finally:
        # The worker's own children end by their own timeouts; this one never would.
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


class SilentJobClient:
    """A LocalClient whose state run never returns: its job died on the minion."""

    def __init__(self) -> None:
        self.published: list[tuple[list[str], str, list]] = []

    def cmd_iter_no_block(self, minions, function, arg, kwarg, tgt_type, timeout, jid):
        self.published.append((minions, function, arg))
        self.jid = jid
        yield {"app-1-blog-dev": {"ret": {"a state": {"result": True}}, "retcode": 0}}
        while True:
            yield None

    def run_job(self, minions, function, arg, tgt_type, listen):
        self.published.append((minions, function, arg))
        return {"jid": "2", "minions": minions}


def test_a_state_run_that_never_returns_is_given_up_at_the_deadline_and_killed(tmp_path):
    client = SilentJobClient()
    master = saltops.MasterOps({"conf_file": str(tmp_path / "master")})
    master._client = client
    started = time.monotonic()
    returns = master.apply_state(["app-0-blog-dev", "app-1-blog-dev"], "gdl.app", {}, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert returns == {"app-1-blog-dev": {"a state": {"result": True}}}
    state_run, kill = client.published
    assert state_run == (["app-0-blog-dev", "app-1-blog-dev"], "state.apply", ["gdl.app"])
    assert kill == (["app-0-blog-dev"], "saltutil.kill_job", [client.jid])
