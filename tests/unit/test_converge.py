"""What a build applies again: module syncs and role runs only where something changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gdl import applied, envstore
from gdl.config import Settings
from gdl.errors import GdlError
from gdl.flows import converge
from gdl.flows.context import Context
from gdl.providers.base import RUNNING, Server


class FakeProvider:
    name = "local"
    minion_timeout = 5.0

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers

    def list_servers(self, app=None, env=None):
        return list(self.servers)


class FakeSalt:
    def __init__(self) -> None:
        self.waited: list[list[str]] = []
        self.calls: list[tuple[tuple[str, ...], str]] = []
        self.sync_answer: Any = ["modules.gdl_lb"]

    def wait_for_minions(self, minions, timeout, progress):
        self.waited.append(list(minions))

    def call(self, minions, function, args, timeout=10):
        self.calls.append((tuple(minions), function))
        return dict.fromkeys(minions, self.sync_answer)


def server(role: str, index: int, provider_id: str = "") -> Server:
    name = f"{role}-{index}-blog-dev"
    return Server(name, "blog", "dev", role, RUNNING, f"10.9.0.{index}", "m", provider_id or name)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    files, pillars = tmp_path / "states", tmp_path / "pillar-roots"
    (files / "_modules").mkdir(parents=True)
    (files / "_modules" / "gdl_lb.py").write_text("# v1\n")
    (files / "gdl" / "app").mkdir(parents=True)
    (files / "gdl" / "app" / "init.sls").write_text("# app\n")
    pillars.mkdir()
    (pillars / "top.sls").write_text("base: {}\n")
    state_dir = tmp_path / "state"
    opts = {
        "file_roots": {"base": [str(files)]},
        "pillar_roots": {"base": [str(pillars), str(state_dir / "pillar")]},
    }
    settings = Settings(state_dir=state_dir, opts=opts)
    envstore.save(state_dir, envstore.new_record("blog", "dev", "local", 2, "m1.small"))
    servers = [server("app", 0), server("app", 1), server("lb", 0), server("lb", 1)]
    lines: list[str] = []
    salt = FakeSalt()
    ctx = Context(settings=settings, salt=salt, progress=lines.append)
    provider = FakeProvider(servers)
    ctx.provider = lambda name: provider  # type: ignore[method-assign]
    failing: list[str] = []
    monkeypatch.setattr(converge, "_failing_checks", lambda ctx, app, role, found: list(failing))
    monkeypatch.setattr(converge, "_vip_serves", lambda ctx, app, env: False)
    return ctx, salt, provider, files, lines, failing


def test_modules_are_synced_once_per_server_and_again_when_they_change(setup):
    ctx, salt, provider, files, _, _ = setup
    converge.lb_modules(ctx, "blog", "dev")
    assert salt.calls == [(("lb-0-blog-dev", "lb-1-blog-dev"), "saltutil.sync_modules")]
    # The same modules: nothing is synced.
    assert converge.lb_modules(ctx, "blog", "dev")["synced"] == []
    assert len(salt.calls) == 1
    # A server made again under the same name has nothing synced yet.
    provider.servers[2] = server("lb", 0, provider_id="new-id")
    assert converge.lb_modules(ctx, "blog", "dev")["synced"] == ["lb-0-blog-dev"]
    (files / "_modules" / "gdl_lb.py").write_text("# v2\n")
    assert len(converge.lb_modules(ctx, "blog", "dev")["synced"]) == 2


def test_waiting_for_minions_syncs_nothing(setup):
    """App servers run no module of gdl's; the pair's are synced in a step of their own."""
    ctx, salt, _, _, _, _ = setup
    converge.minions_ready(ctx, "blog", "dev", "app")
    converge.minions_ready(ctx, "blog", "dev", "lb")
    assert salt.waited == [["app-0-blog-dev", "app-1-blog-dev"], ["lb-0-blog-dev", "lb-1-blog-dev"]]
    assert salt.calls == []


def test_a_failed_sync_fails_the_step_and_is_not_recorded(setup):
    ctx, salt, _, _, _, _ = setup
    salt.sync_answer = "Minion did not return"
    with pytest.raises(GdlError, match="could not be synced to lb-0-blog-dev, lb-1-blog-dev"):
        converge.lb_modules(ctx, "blog", "dev")
    assert applied.synced_modules(ctx.settings.state_dir, "blog", "dev") == {}


def succeeded(ctx: Context, run: str) -> None:
    """What orch/build.sls does once a due run succeeded: its file becomes the role's."""
    due = applied.due_path(ctx.settings.state_dir, "blog", "dev", run)
    due.replace(applied.role_path(ctx.settings.state_dir, "blog", "dev", applied.RUNS[run]))


def due_runs(ctx: Context) -> list[str]:
    return sorted(
        run
        for run in applied.RUNS
        if applied.due_path(ctx.settings.state_dir, "blog", "dev", run).exists()
    )


def test_a_role_runs_until_it_succeeded_then_only_when_something_changed(setup):
    ctx, _, provider, files, lines, failing = setup
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app", "lb-first"]
    assert due_runs(ctx) == ["app", "lb-first"]
    assert "app role on app-0-blog-dev, app-1-blog-dev: due, first run" in lines
    # Not recorded while its run has not succeeded: due again.
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app", "lb-first"]
    succeeded(ctx, "app")
    succeeded(ctx, "lb-first")
    assert converge.mark_due_roles(ctx, "blog", "dev") == []
    assert due_runs(ctx) == []
    assert lines[-1].endswith("unchanged since it last succeeded, not run again")

    (files / "gdl" / "app" / "init.sls").write_text("# app, changed\n")
    # The LB role was configured before: it runs after the app role now ("lb").
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app", "lb"]
    assert any("states, modules or pillar changed" in line for line in lines[-2:])
    succeeded(ctx, "app")
    succeeded(ctx, "lb")

    provider.servers.append(server("app", 2))
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app"]
    assert "its servers changed" in lines[-2]
    succeeded(ctx, "app")

    failing.append("app-1-blog-dev")
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app", "lb"]
    assert "app-1-blog-dev failed a check" in lines[-2]
    # A run no longer due loses its file: a stale one never runs a role.
    failing.clear()
    assert converge.mark_due_roles(ctx, "blog", "dev") == []
    assert due_runs(ctx) == []


def test_the_pillar_of_the_environment_is_an_input_of_its_roles(setup):
    ctx, _, _, _, _, _ = setup
    converge.mark_due_roles(ctx, "blog", "dev")
    succeeded(ctx, "app")
    succeeded(ctx, "lb-first")
    lb_pillar = ctx.settings.pillar_dir / "gdl" / "envs" / "lb" / "blog-dev.sls"
    lb_pillar.parent.mkdir(parents=True)
    lb_pillar.write_text("#!yaml\ngdl: {}\n")
    # The LB-only file is not the app role's input.
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["lb"]
    succeeded(ctx, "lb")
    common = ctx.settings.pillar_dir / "gdl" / "envs" / "blog-dev.sls"
    common.write_text("#!yaml\ngdl: {version: 1.0.1}\n")
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app", "lb"]


def test_the_lb_role_goes_beside_the_app_role_only_while_nothing_is_served(setup, monkeypatch):
    ctx, _, _, _, lines, _ = setup
    # An environment built before the master kept what it applied: its VIP serves.
    monkeypatch.setattr(converge, "_vip_serves", lambda ctx, app, env: True)
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app-rolling", "lb"]
    assert "(beside the app role)" not in lines[-1]
    monkeypatch.setattr(converge, "_vip_serves", lambda ctx, app, env: False)
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app", "lb-first"]
    assert lines[-1].endswith("due, first run (beside the app role)")
    assert due_runs(ctx) == ["app", "lb-first"]


def test_the_app_role_goes_one_server_at_a_time_where_the_environment_serves(setup, monkeypatch):
    ctx, _, _, files, lines, _ = setup
    asked: list[str] = []

    def serves(ctx, app, env):
        asked.append(env)
        return True

    monkeypatch.setattr(converge, "_vip_serves", serves)
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app-rolling", "lb"]
    assert (
        "app role on app-0-blog-dev, app-1-blog-dev: due, first run "
        "(one server at a time, out of rotation)"
    ) in lines
    # Asked once for both roles.
    assert asked == ["dev"]
    succeeded(ctx, "app-rolling")
    succeeded(ctx, "lb")
    assert converge.mark_due_roles(ctx, "blog", "dev") == []
    assert asked == ["dev"]

    # The app role's inputs change (a new gunicorn setting): one server at a time again.
    (files / "gdl" / "app" / "init.sls").write_text("# app, gunicorn settings changed\n")
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app-rolling", "lb"]
    assert due_runs(ctx) == ["app-rolling", "lb"]
    # Nothing served any more: all at once, and the other run's file is gone.
    monkeypatch.setattr(converge, "_vip_serves", lambda ctx, app, env: False)
    assert converge.mark_due_roles(ctx, "blog", "dev") == ["app", "lb"]
    assert due_runs(ctx) == ["app", "lb"]


def test_the_address_is_not_asked_when_no_role_is_due(setup, monkeypatch):
    ctx = setup[0]
    converge.mark_due_roles(ctx, "blog", "dev")
    succeeded(ctx, "app")
    succeeded(ctx, "lb-first")
    monkeypatch.setattr(converge, "_vip_serves", lambda ctx, app, env: pytest.fail("asked"))
    assert converge.mark_due_roles(ctx, "blog", "dev") == []


def test_an_unknown_role_is_refused(setup):
    ctx = setup[0]
    with pytest.raises(GdlError, match="no role 'db'"):
        converge.role_due(ctx, "blog", "dev", "db")


def test_destroy_forgets_what_was_applied(tmp_path):
    applied.record_synced(tmp_path, "blog", "dev", ["id-1"], "digest")
    assert applied.applied_dir(tmp_path, "blog", "dev").is_dir()
    applied.remove(tmp_path, "blog", "dev")
    assert not applied.applied_dir(tmp_path, "blog", "dev").exists()
    assert applied.synced_modules(tmp_path, "blog", "dev") == {}
