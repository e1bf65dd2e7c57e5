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


class SilentClient:
    """LocalClient.cmd_iter_no_block with one minion that answers and one that never does."""

    def __init__(self) -> None:
        self.asked: list[dict] = []
        self.killed: list[tuple[list[str], str, list]] = []
        self.closed = False

    def cmd_iter_no_block(
        self, minions, fun, arg=(), kwarg=None, tgt_type="glob", timeout=None, jid=""
    ):
        self.asked.append({"fun": fun, "arg": arg, "kwarg": kwarg, "timeout": timeout})
        self.jid = jid
        try:
            yield {MADE: {"ret": {"a_state": {"result": True}}, "retcode": 0}}
            while True:  # the other minion's run "still goes": Salt would wait on
                yield None
        finally:
            self.closed = True

    def run_job(self, minions, fun, arg, tgt_type, listen):
        self.killed.append((minions, fun, arg))
        return {"jid": "2", "minions": minions}


def test_a_state_run_that_never_ends_is_given_up_at_the_deadline_and_killed(master, monkeypatch):
    client = SilentClient()
    master._client = client
    monkeypatch.setattr(saltops, "ANSWER_POLL", 0.01)
    started = time.monotonic()
    answers = master.apply_state(
        [MADE, HUNG], "gdl.app", {}, timeout=0.5, queue=True, silent_after=0.2
    )
    assert 0.5 <= time.monotonic() - started < 5
    # The minion that answered keeps its answer; the silent one has none.
    assert answers == {MADE: {"a_state": {"result": True}}}
    assert client.closed
    # Salt asks the silent minion whether its run still goes after silent_after.
    assert client.asked == [
        {
            "fun": "state.apply",
            "arg": ["gdl.app"],
            "kwarg": {"pillar": {}, "queue": True},
            "timeout": 1,
        }
    ]
    # Its run is stopped there, not left going.
    assert client.killed == [([HUNG], "saltutil.kill_job", [client.jid])]


def test_a_state_run_returns_as_soon_as_every_minion_answered(master):
    client = SilentClient()
    master._client = client
    started = time.monotonic()
    assert master.apply_state([MADE], "gdl.app", {"x": 1}, timeout=60) == {
        MADE: {"a_state": {"result": True}}
    }
    assert time.monotonic() - started < 5
    assert client.asked[0]["kwarg"] == {"pillar": {"x": 1}}
    # Salt asks every JOB_CHECK_INTERVAL whether the run still goes: one whose
    # return died (a full disk) is given up within a minute, not at the deadline.
    assert client.asked[0]["timeout"] == saltops.JOB_CHECK_INTERVAL
    assert client.killed == []


def test_a_call_whose_job_never_ends_is_given_up_past_its_grace(master, monkeypatch):
    client = SilentClient()
    master._client = client
    monkeypatch.setattr(saltops, "ANSWER_POLL", 0.01)
    monkeypatch.setattr(saltops, "CALL_GRACE", 0.3)
    started = time.monotonic()
    answers = master.call([MADE, HUNG], "gdl_lb.servers", [], timeout=0.2)
    assert 0.5 <= time.monotonic() - started < 5
    assert answers == {MADE: {"a_state": {"result": True}}}
    assert client.asked == [{"fun": "gdl_lb.servers", "arg": [], "kwarg": None, "timeout": 1}]


def test_a_profiles_size_is_read_from_the_masters_salt_cloud_configuration(tmp_path):
    from gdl.saltops import profile_size

    (tmp_path / "master").write_text("")
    (tmp_path / "cloud.providers.d").mkdir()
    (tmp_path / "cloud.providers.d" / "gdl.conf").write_text(
        "gdl-openstack:\n  driver: gdl_openstack\n"
    )
    (tmp_path / "cloud.profiles.d").mkdir()
    (tmp_path / "cloud.profiles.d" / "gdl.conf").write_text(
        "gdl-openstack-lb:\n  provider: gdl-openstack\n  size: m1.nodisk\n"
    )
    opts = {"conf_file": str(tmp_path / "master")}
    assert profile_size(opts, "gdl-openstack-lb") == "m1.nodisk"
    assert profile_size(opts, "gdl-local-lb") is None
    assert profile_size({}, "gdl-openstack-lb") is None
