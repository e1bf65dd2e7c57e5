"""orch/build.sls renders from its pillar alone, and its drain step drains the surplus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from gdl import envstore
from gdl.config import Settings
from gdl.errors import GdlError
from gdl.flows import build
from gdl.flows.context import Context
from gdl.providers.base import RUNNING, Server

REPO_ROOT = Path(__file__).resolve().parents[2]


class NoCalls:
    """Stands in for ``salt`` while the orchestration renders: any call fails the test."""

    def __getitem__(self, name: str) -> Any:
        raise AssertionError(f"orch/build.sls called {name} while it rendered")

    __getattr__ = __getitem__


def render_orchestration(name: str) -> dict[str, Any]:
    source = (REPO_ROOT / "orch" / f"{name}.sls").read_text()
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    text = environment.from_string(source).render(
        pillar={"app": "blog", "env": "dev"}, salt=NoCalls(), grains={}, opts={}
    )
    return yaml.safe_load(text)


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
    assert requires(steps["gdl_drain_surplus"]) == ["gdl_app_role"]
    assert requires(steps["gdl_lb_role"]) == ["gdl_drain_surplus"]
    assert requires(steps["gdl_remove_surplus"]) == ["gdl_lb_role"]


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
