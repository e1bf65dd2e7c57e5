"""Progress lines: timed steps, waits that say what they wait for, the relay, Salt's noise."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import threading
import time

import pytest
import salt.utils.event

from gdl import progress, terminal
from gdl.relay import EventRelay, JobFollower, job_label


def collect() -> tuple[progress.Reporter, list[tuple[str, dict]]]:
    lines: list[tuple[str, dict]] = []
    return progress.Reporter(lambda message, marks: lines.append((message, marks))), lines


def test_a_step_says_when_it_starts_and_ends_with_seconds():
    reporter, lines = collect()
    with progress.step(reporter, "VRRP pair") as note:
        assert reporter.open_steps[0][0] == "VRRP pair"
        note.text = "2 created"
    assert reporter.open_steps == []
    assert lines[0] == ("VRRP pair ...", {"step": "VRRP pair", "phase": "start"})
    assert re.fullmatch(r"VRRP pair: done in \d+\.\d s \(2 created\)", lines[1][0])
    assert lines[1][1] == {"step": "VRRP pair", "phase": "end"}


def test_a_failed_step_says_so_and_the_error_goes_on():
    plain: list[str] = []
    with pytest.raises(RuntimeError), progress.step(plain.append, "pillar"):
        raise RuntimeError("boom")
    assert plain[0] == "pillar ..."
    assert re.fullmatch(r"pillar: failed after \d+\.\d s", plain[1])


def test_a_heartbeat_names_what_is_awaited_only_after_a_silence():
    reporter, lines = collect()
    beat = progress.Heartbeat(reporter, every=0.05)
    beat.beat("lb-0-blog-dev to answer")
    assert lines == []
    time.sleep(0.06)
    beat.beat("lb-0-blog-dev to answer")
    assert re.fullmatch(r"waiting for lb-0-blog-dev to answer \(\d+ s\)", lines[0][0])
    # Another line just went out: no beat yet.
    reporter("lb-0-blog-dev ... ok")
    time.sleep(0.03)
    beat.beat("lb-0-blog-dev to answer")
    assert len(lines) == 2


def job_new(fun: str, minions: list[str], arg: list | None = None) -> dict:
    return {"fun": fun, "minions": minions, "arg": arg or [], "tgt": "x", "jid": "1"}


def test_the_follower_reports_a_role_on_each_server_of_its_environment():
    follower = JobFollower("blog", "dev")
    servers = ["app-0-blog-dev", "app-1-blog-dev"]
    started = follower.lines("salt/job/11/new", job_new("state.sls", servers, ["gdl.app"]), 100.0)
    assert started == ["app role on app-0-blog-dev, app-1-blog-dev ..."]
    assert follower.waiting_for(105.0, []) == "app role on app-0-blog-dev, app-1-blog-dev (5 s)"
    ret = {"retcode": 0, "success": True, "return": {"a": {"changes": {"x": 1}}, "b": {}}}
    assert follower.lines("salt/job/11/ret/app-1-blog-dev", ret, 107.5) == [
        "app role on app-1-blog-dev: done in 7.5 s (1 of 2 states changed)"
    ]
    assert follower.waiting_for(108.0, []) == "app role on app-0-blog-dev (8 s)"
    failed = {"retcode": 2, "success": True, "return": {"a": {"result": False}}}
    assert follower.lines("salt/job/11/ret/app-0-blog-dev", failed, 109.0) == [
        "app role on app-0-blog-dev: failed after 9.0 s"
    ]
    assert follower.jobs == {}
    # Answered twice (a re-sent return): one line only.
    assert follower.lines("salt/job/11/ret/app-0-blog-dev", ret, 110.0) == []


def test_the_follower_leaves_other_environments_and_salts_own_jobs_alone():
    follower = JobFollower("blog", "dev")
    assert follower.lines("salt/job/1/new", job_new("state.sls", ["app-0-blog-qa"]), 1) == []
    mixed = ["app-0-blog-dev", "app-0-blog-qa"]
    assert follower.lines("salt/job/2/new", job_new("state.sls", mixed), 1) == []
    assert follower.lines("salt/job/3/new", job_new("test.ping", ["app-0-blog-dev"]), 1) == []
    assert (
        follower.lines("salt/job/4/new", job_new("saltutil.find_job", ["lb-0-blog-dev"]), 1) == []
    )
    assert follower.jobs == {}
    # A gdl_lb call gets no line of its own, but a wait on it names it.
    quiet = follower.lines(
        "salt/job/5/new", job_new("gdl_lb.wait_drained", ["lb-0-blog-dev"], ["app-1-blog-dev"]), 1
    )
    assert quiet == []
    assert (
        follower.waiting_for(3, []) == "gdl_lb.wait_drained app-1-blog-dev on lb-0-blog-dev (2 s)"
    )


def test_the_follower_relays_the_nested_steps_lines_and_knows_which_are_open():
    follower = JobFollower("blog", "dev")
    tag = progress.tag("blog", "dev")
    start = {"message": "VRRP pair ...", "step": "VRRP pair", "phase": "start"}
    assert follower.lines(tag, start, 10.0) == ["VRRP pair ..."]
    assert follower.lines(progress.tag("blog", "qa"), start, 10.0) == []
    assert follower.waiting_for(16.0, [("orchestration", 1.0)]) == "VRRP pair (6 s)"
    end = {"message": "VRRP pair: done in 7.0 s", "step": "VRRP pair", "phase": "end"}
    assert follower.lines(tag, end, 17.0) == ["VRRP pair: done in 7.0 s"]
    assert follower.waiting_for(18.0, [("orchestration", 1.0)]) == "orchestration (17 s)"
    assert follower.waiting_for(18.0, []) is None


def test_job_labels():
    assert job_label("state.sls", ["gdl.lb", {"queue": True}]) == "LB role"
    assert job_label("state.apply", ["gdl.app"]) == "app role"
    assert job_label("state.sls", ["other"]) == "state other"
    assert job_label("saltutil.sync_modules", []) == "module sync"


def test_the_relay_prints_every_line_from_its_thread_and_beats_when_quiet(monkeypatch):
    """Without a master to follow, lines still go out in order, and a silence is filled."""

    def no_bus(*args, **kwargs):
        raise OSError("no master here")

    monkeypatch.setattr(salt.utils.event, "get_master_event", no_bus)
    threads: list[str] = []
    printed: list[str] = []

    def show(message: str, marks: dict) -> None:
        threads.append(threading.current_thread().name)
        printed.append(message)

    reporter = progress.Reporter(show)
    relay = EventRelay({"sock_dir": "/nonexistent"}, "blog", "dev", reporter, quiet_after=0.3)
    with relay, progress.step(reporter, "orchestration orch.build"):
        time.sleep(0.8)
    assert printed[0] == "orchestration orch.build ..."
    assert any(re.fullmatch(r"waiting for orchestration orch.build \(\d+ s\)", p) for p in printed)
    assert printed[-1].startswith("orchestration orch.build: done in")
    assert set(threads) == {"gdl-progress"}
    # After the relay, lines go straight out again.
    reporter("after")
    assert threads[-1] == threading.current_thread().name


def test_a_fork_waits_until_the_relays_thread_is_out_of_its_work(monkeypatch):
    """A child forked while the relay prints would inherit stdout's lock, held for good."""

    def no_bus(*args, **kwargs):
        raise OSError("no master here")

    monkeypatch.setattr(salt.utils.event, "get_master_event", no_bus)
    printing = threading.Event()
    state = {"in_print": False}

    def slow_show(message: str, marks: dict) -> None:
        state["in_print"] = True
        printing.set()
        time.sleep(0.3)
        state["in_print"] = False

    reporter = progress.Reporter(slow_show)
    with EventRelay({"sock_dir": "/nonexistent"}, "blog", "dev", reporter):
        reporter("a line the relay's thread prints")
        assert printing.wait(5)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # the child: tell what the relay was doing when it was forked
            os.write(write_end, b"1" if state["in_print"] else b"0")
            os._exit(0)
        os.close(write_end)
        seen = os.read(read_end, 1)
        os.close(read_end)
        os.waitpid(child, 0)
    assert seen == b"0"


def test_salts_stray_lines_are_dropped_and_the_rest_passes(monkeypatch):
    target = io.StringIO()
    monkeypatch.setattr(sys, "stdout", target)
    with terminal.quiet_stray_lines():
        print("blog-dev: pillar ...")
        print("No minions matched the target. No command was sent, no jid was assigned.")
        print("No minions", end="")
        sys.stdout.flush()
        print(" matched the target. No command was sent, no jid was assigned.")
        print("the end", end="")
    assert sys.stdout is target
    assert target.getvalue() == "blog-dev: pillar ...\nthe end"


def warned_with_salt_quieted(capsys, logger_name: str, *warnings: str) -> str:
    """What reaches stderr of ``warnings`` logged with no handler but Python's last resort."""
    terminal.quiet_salt_noise()
    logger = logging.getLogger(logger_name)
    handlers, logging.root.handlers = logging.root.handlers, []
    try:
        for warning in warnings:
            logger.warning(warning)
    finally:
        logging.root.handlers = handlers
    return capsys.readouterr().err


def test_salts_leak_warnings_are_dropped_even_by_the_last_resort_handler(capsys):
    err = warned_with_salt_quieted(
        capsys, "salt.utils.event", "unclosed MasterEvent <x>; call destroy()", "a real warning"
    )
    assert "unclosed" not in err
    assert "a real warning" in err


def test_the_orchestrations_not_highstate_warning_is_dropped(capsys):
    err = warned_with_salt_quieted(
        capsys, "salt.loaded.int.states.saltmod", "Output from salt state not highstate"
    )
    assert "highstate" not in err


class LateBus:
    """A bus on which a nested step's last line arrives only after its command is done."""

    def __init__(self, done: threading.Event) -> None:
        self.done = done
        step_tag = progress.tag("blog", "dev")
        start = {"step": "VIP check", "phase": "start", "message": "VIP check ..."}
        end = {"step": "VIP check", "phase": "end", "message": "VIP check: done in 1.0 s"}
        self.early = [{"tag": step_tag, "data": start}]
        self.late = [{"tag": step_tag, "data": end}]

    def get_event(self, no_block: bool, full: bool) -> dict | None:
        if self.early:
            return self.early.pop(0)
        if self.done.is_set() and self.late:
            time.sleep(0.3)  # still in transit when the command ended
            return self.late.pop(0)
        return None

    def destroy(self) -> None:
        pass


def test_the_last_line_of_a_nested_step_is_printed_when_it_comes_after_the_command(monkeypatch):
    done = threading.Event()
    bus = LateBus(done)
    monkeypatch.setattr(salt.utils.event, "get_master_event", lambda *a, **k: bus)
    printed: list[str] = []
    reporter = progress.Reporter(lambda message, marks: printed.append(message))
    with EventRelay({"sock_dir": "/x"}, "blog", "dev", reporter, quiet_after=60):
        while not printed:
            time.sleep(0.05)
        done.set()
    assert printed == ["VIP check ...", "VIP check: done in 1.0 s"]
