"""orch/build.sls renders from its pillar alone, and its drain step drains the surplus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from gdl import envstore
from gdl.applied import RUNS
from gdl.config import Settings
from gdl.errors import GdlError
from gdl.flows import build
from gdl.flows.build import SURPLUS_RUN
from gdl.flows.context import Context
from gdl.providers.base import RUNNING, Server

REPO_ROOT = Path(__file__).resolve().parents[2]


class NoCalls:
    """Stands in for ``salt`` while the orchestration renders: any call fails the test."""

    def __getitem__(self, name: str) -> Any:
        raise AssertionError(f"orch/build.sls called {name} while it rendered")

    __getattr__ = __getitem__


def render_orchestration(name: str, **pillar: Any) -> dict[str, Any]:
    source = (REPO_ROOT / "orch" / f"{name}.sls").read_text()
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    text = environment.from_string(source).render(
        pillar={"app": "blog", "env": "dev", **pillar}, salt=NoCalls(), grains={}, opts={}
    )
    return yaml.safe_load(text)


def step_args(step: dict[str, Any]) -> dict[str, Any]:
    (body,) = step.values()
    return {k: v for item in body if isinstance(item, dict) for k, v in item.items()}


def requires(step: dict[str, Any]) -> list[str]:
    (body,) = step.values()
    found = []
    for item in body:
        if isinstance(item, dict) and "require" in item:
            found += [name for requisite in item["require"] for name in requisite.values()]
    return found


@pytest.mark.parametrize("name", ["build", "destroy"])
def test_orchestration_renders_without_calling_salt(name):
    assert render_orchestration(name)


def test_surplus_is_drained_after_the_app_role_and_before_the_lb_role():
    steps = render_orchestration("build")
    assert steps["gdl_drain_surplus"]["salt.runner"][0] == {"name": "gdl.drain_surplus"}
    assert requires(steps["gdl_drain_surplus"]) == [
        "gdl_app_role",
        "gdl_app_role_applied",
        "gdl_app_role_rolling",
        "gdl_app_role_rolling_applied",
        "gdl_lb_role_first_applied",
        "gdl_lb_modules",
    ]
    assert requires(steps["gdl_lb_role"]) == ["gdl_drain_surplus"]
    assert requires(steps["gdl_remove_surplus"]) == ["gdl_lb_role", "gdl_lb_role_applied"]
    assert requires(steps["gdl_vip_serves"]) == ["gdl_remove_surplus"]


def due_file(step: dict[str, Any]) -> str:
    (check,) = step_args(step)["onlyif"]
    assert check["fun"] == "file.file_exists"
    return check["path"]


def test_every_step_runs_as_soon_as_what_it_requires_is_done():
    steps = render_orchestration("build")
    assert all(step_args(step).get("parallel") is True for step in steps.values())
    # The pair is made while the app servers' minions are waited for.
    assert requires(steps["gdl_vrrp_pair"]) == []
    assert requires(steps["gdl_app_minions"]) == []
    assert step_args(steps["gdl_app_minions"])["role"] == "app"
    # The pillar names every address once the pair exists; each role waits for
    # its own minions only.
    assert requires(steps["gdl_pillar"]) == ["gdl_vrrp_pair"]
    assert requires(steps["gdl_lb_minions"]) == ["gdl_vrrp_pair"]
    assert step_args(steps["gdl_lb_minions"])["role"] == "lb"
    assert requires(steps["gdl_lb_role_first"]) == ["gdl_pillar", "gdl_lb_minions"]
    assert requires(steps["gdl_app_role"]) == ["gdl_pillar", "gdl_app_minions"]
    # One server at a time, drained on the LBs meanwhile: it needs their minions and modules.
    assert requires(steps["gdl_app_role_rolling"]) == [
        "gdl_pillar",
        "gdl_app_minions",
        "gdl_lb_minions",
        "gdl_lb_modules",
    ]
    # The pair's modules are synced beside its role, which needs none of them.
    assert requires(steps["gdl_lb_modules"]) == ["gdl_lb_minions"]


def test_a_role_runs_only_while_its_run_is_due_and_a_run_that_succeeded_is_recorded():
    steps = render_orchestration("build", lock_token="")
    applied = "/var/lib/gdl/envs/blog-dev.applied"
    for role_step, run, role in (
        ("gdl_lb_role_first", "lb-first", "lb"),
        ("gdl_app_role", "app", "app"),
        ("gdl_app_role_rolling", "app-rolling", "app"),
        ("gdl_lb_role", "lb", "lb"),
    ):
        assert due_file(steps[role_step]) == f"{applied}/due-{run}.json"
        recorded = steps[f"{role_step}_applied"]
        assert step_args(recorded)["source"] == f"{applied}/due-{run}.json"
        assert step_args(recorded)["name"] == f"{applied}/role-{role}.json"
        assert due_file(recorded) == f"{applied}/due-{run}.json"
        assert requires(recorded) == [role_step]
    assert step_args(steps["gdl_lb_role_first"])["sls"] == "gdl.lb"
    assert step_args(steps["gdl_lb_role"])["sls"] == "gdl.lb"
    assert step_args(steps["gdl_app_role"])["sls"] == "gdl.app"
    assert step_args(steps["gdl_app_role_rolling"])["name"] == "gdl.roll_app_role"
    # Every run a build may find due has a step that runs while its file exists.
    guarded = {
        due_file(step)
        for name, step in steps.items()
        if not name.endswith("_applied") and "onlyif" in step_args(step)
    }
    assert guarded == {f"{applied}/due-{run}.json" for run in (*RUNS, SURPLUS_RUN)}
    # The surplus steps run only while the pillar step found surplus servers.
    for step in ("gdl_drain_surplus", "gdl_remove_surplus"):
        assert due_file(steps[step]) == f"{applied}/due-{SURPLUS_RUN}.json"


def test_the_due_files_are_under_the_masters_state_dir():
    source = (REPO_ROOT / "orch" / "build.sls").read_text()
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    text = environment.from_string(source).render(
        pillar={"app": "blog", "env": "dev"},
        salt=NoCalls(),
        grains={},
        opts={"gdl": {"state_dir": "/srv/gdl-state"}},
    )
    steps = yaml.safe_load(text)
    assert due_file(steps["gdl_app_role"]) == "/srv/gdl-state/envs/blog-dev.applied/due-app.json"


class FakeProvider:
    name = "local"

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers

    def list_servers(self, app=None, env=None):
        return list(self.servers)


class FakeSalt:
    def __init__(self, answer: Any = True) -> None:
        self.answer = answer
        self.calls: list[tuple[tuple[str, ...], str, tuple]] = []

    def call(self, minions, function, args, timeout=10):
        self.calls.append((tuple(minions), function, tuple(args)))
        return dict.fromkeys(minions, self.answer)


def context(tmp_path: Path, salt: FakeSalt, requested: int) -> Context:
    settings = Settings(state_dir=tmp_path)
    envstore.save(tmp_path, envstore.new_record("blog", "dev", "local", requested, "m1.small"))
    servers = [
        Server(f"{role}-{i}-blog-dev", "blog", "dev", role, RUNNING, f"10.9.0.{i}", "m", "x")
        for role, count in (("app", 3), ("lb", 2))
        for i in range(count)
    ]
    ctx = Context(settings=settings, salt=salt, progress=lambda _: None)
    ctx.provider = lambda name: FakeProvider(servers)  # type: ignore[method-assign]
    return ctx


def test_drain_surplus_drains_each_extra_server_on_both_lbs(tmp_path):
    salt = FakeSalt()
    assert build.drain_surplus(context(tmp_path, salt, 1), "blog", "dev") == [
        "app-1-blog-dev",
        "app-2-blog-dev",
    ]
    lbs = ("lb-0-blog-dev", "lb-1-blog-dev")
    assert salt.calls == [
        (lbs, "gdl_lb.drain", ("app-1-blog-dev",)),
        (lbs, "gdl_lb.drain", ("app-2-blog-dev",)),
    ]


def test_drain_surplus_does_nothing_without_surplus(tmp_path):
    salt = FakeSalt()
    assert build.drain_surplus(context(tmp_path, salt, 3), "blog", "dev") == []
    assert salt.calls == []


def test_drain_surplus_counts_a_server_haproxy_no_longer_has_as_drained(tmp_path):
    gone = "ERROR: haproxy has no server 'app-2-blog-dev': use one of app-0-blog-dev"
    assert build.drain_surplus(context(tmp_path, FakeSalt(gone), 2), "blog", "dev") == [
        "app-2-blog-dev"
    ]
    with pytest.raises(GdlError, match="could not drain app-2-blog-dev"):
        build.drain_surplus(context(tmp_path, FakeSalt("no answer"), 2), "blog", "dev")


RUNNER_STEPS = {
    "build": [
        "gdl.vrrp_pair",
        "gdl.write_pillar",
        "gdl.minions_ready",
        "gdl.roll_app_role",
        "gdl.lb_modules",
        "gdl.drain_surplus",
        "gdl.remove_surplus",
        "gdl.check_vip",
    ],
    "destroy": ["gdl.teardown"],
}


@pytest.mark.parametrize("name", ["build", "destroy"])
def test_every_runner_step_presents_the_builds_lock_token(name):
    token = "5f" * 16
    steps = render_orchestration(name, lock_token=token)
    runners = {
        step_args(step)["name"]: step_args(step) for step in steps.values() if "salt.runner" in step
    }
    assert sorted(runners) == sorted(RUNNER_STEPS[name])
    assert all(args["lock_token"] == token for args in runners.values())
    # Run on its own (no token in pillar), each step takes the lock itself.
    alone = render_orchestration(name)
    assert all(
        step_args(step)["lock_token"] == "" for step in alone.values() if "salt.runner" in step
    )


def test_orch_destroy_holds_the_lock_across_the_whole_destroy_in_one_step():
    steps = render_orchestration("destroy")
    assert list(steps) == ["gdl_teardown"]
    assert step_args(steps["gdl_teardown"])["name"] == "gdl.teardown"


def test_a_runner_step_is_refused_while_a_build_holds_the_lock_unless_it_has_its_token(
    tmp_path,
):
    from gdl.lock import env_lock
    from gdl.runner_support import Refused
    from gdl.runner_support import locked_step as step

    ctx = context(tmp_path, FakeSalt(), 3)
    ran = []

    def write_pillar(ctx, app, env):
        ran.append((app, env))
        return True

    with env_lock(ctx.settings.lock_dir, "blog", "dev", "build") as token:
        for wrong in (None, "", "ab" * 16):
            with pytest.raises(Refused) as refused:
                step(ctx, "write_pillar", write_pillar, "blog", "dev", wrong)
            assert str(refused.value).startswith("blog-dev is busy: build by pid")
            assert "\n" not in str(refused.value)
        assert ran == []
        assert step(ctx, "write_pillar", write_pillar, "blog", "dev", token) is True
    assert ran == [("blog", "dev")]
    # Free again: a step run on its own takes the lock itself.
    assert step(ctx, "write_pillar", write_pillar, "blog", "dev", None) is True


def _state(run_num: int, result: bool, comment: str, **extra: Any) -> dict[str, Any]:
    return {"__run_num__": run_num, "result": result, "comment": comment, **extra}


def test_a_failed_runner_step_is_reported_in_its_own_one_line():
    line = "salt-cloud could not make lb-0-blog-dev: no capacity: fix the cause and run again"
    result = {
        "outputter": "highstate",
        "data": {
            "master_minion": {
                "salt_|-gdl_pillar_|-gdl.write_pillar_|-runner": _state(
                    1,
                    False,
                    "One or more requisite failed: orch.build.gdl_vrrp_pair",
                    __id__="gdl_pillar",
                    changes={},
                ),
                "salt_|-gdl_vrrp_pair_|-gdl.vrrp_pair_|-runner": _state(
                    0,
                    False,
                    "Runner function 'gdl.vrrp_pair' failed.",
                    __id__="gdl_vrrp_pair",
                    changes={"return": line},
                ),
            }
        },
        "retcode": 1,
    }
    error = build.orchestration_failure("blog-dev", result)
    assert str(error) == f"blog-dev: step gdl_vrrp_pair failed: {line}"


def test_a_failed_role_step_names_its_minions_and_where_to_look():
    result = {
        "data": {
            "master": {
                "salt_|-gdl_app_role_|-gdl_app_role_|-state": _state(
                    3,
                    False,
                    "Run failed on minions: app-1-blog-dev\nFailures:\n...",
                    __id__="gdl_app_role",
                    __jid__="20261201",
                    changes={"ret": {"x": "y" * 9000}},
                ),
            }
        }
    }
    text = str(build.orchestration_failure("blog-dev", result))
    assert "\n" not in text and len(text) < 600
    assert text.startswith("blog-dev: step gdl_app_role failed (Run failed on minions: app-1")
    assert "salt-run jobs.lookup_jid 20261201" in text
    assert text.endswith("run the same build again: it continues where it stopped")


def test_an_orchestration_that_did_not_render_is_one_line():
    result = {"data": {"master": ["Rendering SLS 'base:orch.build' failed: bad\nline"]}}
    text = str(build.orchestration_failure("blog-dev", result))
    assert "\n" not in text and "Rendering SLS" in text


def test_a_runner_steps_console_evidence_stays_below_its_line():
    line = (
        "the minions of lb-1-blog-dev did not answer within 900 s: check the servers' "
        "console or log, then run the build again"
    )
    console = ["lb-1-blog-dev: cloud-init: no route to 203.0.113.2", "    Booting Linux"]
    result = {
        "data": {
            "master": {
                "salt_|-gdl_vrrp_pair_|-gdl.vrrp_pair_|-runner": _state(
                    0,
                    False,
                    "Runner function 'gdl.vrrp_pair' failed.",
                    __id__="gdl_vrrp_pair",
                    changes={"return": "\n".join([line, *console])},
                ),
            }
        }
    }
    text = str(build.orchestration_failure("blog-dev", result))
    assert text.splitlines() == [f"blog-dev: step gdl_vrrp_pair failed: {line}", *console]


def test_the_pillar_step_leaves_the_surplus_file_only_while_there_is_surplus(tmp_path, monkeypatch):
    from gdl import applied
    from gdl.flows import converge

    ctx = context(tmp_path, FakeSalt(), 1)
    marker = applied.due_path(tmp_path, "blog", "dev", SURPLUS_RUN)
    monkeypatch.setattr(converge, "mark_due_roles", lambda ctx, app, env: [])
    monkeypatch.setattr(build, "_write_pillar", lambda ctx, app, env: (False, ["app-1-blog-dev"]))
    assert build.pillar_and_due_roles(ctx, "blog", "dev")["surplus"] == ["app-1-blog-dev"]
    assert applied.read(marker) == {"servers": ["app-1-blog-dev"]}
    monkeypatch.setattr(build, "_write_pillar", lambda ctx, app, env: (True, []))
    assert build.pillar_and_due_roles(ctx, "blog", "dev") == {
        "changed": True,
        "due": [],
        "surplus": [],
    }
    assert not marker.exists()
