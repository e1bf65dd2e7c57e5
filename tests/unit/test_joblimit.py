"""gdl's bound on state runs: which runs are stopped, where, and the line a build fails with."""

from __future__ import annotations

import time

import salt.client
import salt.utils.event

from gdl import progress
from gdl.config import DEFAULT_STATE_RUN_LIMIT, Settings
from gdl.errors import ConfigError
from gdl.joblimit import StateRunLimit
from gdl.relay import EventRelay, Job


def seen(jid: str, function: str, started: float, *pending: str) -> Job:
    return Job(jid, function, "app role", True, started, set(pending))


def test_only_state_runs_still_awaited_past_the_limit_are_named_once():
    limit = StateRunLimit(60)
    jobs = [
        seen("1", "state.sls", 0.0, "app-0-blog-dev"),  # 100 s: overdue
        seen("2", "state.sls", 50.0, "app-1-blog-dev"),  # 50 s: not yet
        seen("3", "state.sls", 0.0),  # every minion answered
        seen("4", "saltutil.sync_modules", 0.0, "lb-0-blog-dev"),  # not a state run
    ]
    assert [job.jid for job in limit.overdue(jobs, 100.0)] == ["1"]
    assert limit.overdue(jobs, 101.0) == []  # stopped once
    assert [job.jid for job in limit.overdue(jobs, 111.0)] == ["2"]
    assert limit.line(limit.stopped[0]) == (
        "app role on app-0-blog-dev: still running after 60 s, stopped"
    )


def test_a_build_that_stopped_runs_fails_with_one_line_naming_them():
    limit = StateRunLimit(60)
    assert limit.failure("blog-dev") is None
    limit.overdue([seen("1", "state.sls", 0.0, "app-1-blog-dev", "app-0-blog-dev")], 61.0)
    failure = limit.failure("blog-dev")
    assert failure is not None and "\n" not in str(failure)
    assert str(failure).startswith(
        "blog-dev: stopped after 60 s, still running: app role on app-0-blog-dev, app-1-blog-dev: "
    )
    assert "gdl:state_run_limit" in str(failure)


def test_the_limit_is_a_master_setting_with_a_default():
    assert Settings.from_opts({}).state_run_limit == DEFAULT_STATE_RUN_LIMIT == 900
    assert Settings.from_opts({"gdl": {"state_run_limit": 5}}).state_run_limit == 5
    for bad in (0, -1, True, "60", 1.5, 86401):
        try:
            Settings.from_opts({"gdl": {"state_run_limit": bad}})
        except ConfigError as error:
            assert "gdl:state_run_limit" in str(error) and "\n" not in str(error)
        else:
            raise AssertionError(f"{bad!r} was taken")


class FakeBus:
    """The master's event bus with a state run on one server that never returns."""

    def __init__(self) -> None:
        self.events = [
            {
                "tag": "salt/job/42/new",
                "data": {"fun": "state.sls", "minions": ["app-0-blog-dev"], "arg": ["gdl.app"]},
            }
        ]

    def get_event(self, no_block: bool, full: bool) -> dict | None:
        assert no_block and full
        return self.events.pop(0) if self.events else None

    def destroy(self) -> None:
        pass


class FakeClient:
    sent: list[tuple] = []

    def run_job(self, tgt, fun, arg, tgt_type, listen):
        FakeClient.sent.append((tgt, fun, arg, tgt_type, listen))

    def destroy(self) -> None:
        pass


def test_the_relay_stops_a_run_past_the_limit_on_the_minions_still_running_it(monkeypatch):
    monkeypatch.setattr(salt.utils.event, "get_master_event", lambda *a, **k: FakeBus())
    monkeypatch.setattr(salt.client, "get_local_client", lambda **k: FakeClient())
    FakeClient.sent = []
    printed: list[str] = []
    reporter = progress.Reporter(lambda message, marks: printed.append(message))
    limit = StateRunLimit(0.2)
    with EventRelay({"sock_dir": "/x"}, "blog", "dev", reporter, quiet_after=60, limit=limit):
        deadline = time.monotonic() + 5
        while not FakeClient.sent and time.monotonic() < deadline:
            time.sleep(0.05)
    assert FakeClient.sent == [(["app-0-blog-dev"], "saltutil.kill_job", ["42"], "list", False)]
    assert "app role on app-0-blog-dev: still running after 0.2 s, stopped" in printed
    assert [job.jid for job in limit.stopped] == ["42"]
