"""The app role in an environment that serves: one server at a time, out of rotation meanwhile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gdl import envstore
from gdl.config import Settings
from gdl.errors import GdlError
from gdl.flows import app_role
from gdl.flows.context import Context
from gdl.providers.base import RUNNING, Server

LBS = ["lb-0-blog-dev", "lb-1-blog-dev"]
NO_SOCKET = (
    "ERROR: haproxy's runtime socket /run/haproxy/admin.sock does not exist: "
    "is haproxy running (apply gdl.lb to this server)?"
)


class FakeProvider:
    name = "local"

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers

    def list_servers(self, app=None, env=None):
        return list(self.servers)


class FakeSalt:
    """Two haproxys that know ``known`` app servers, and app servers that take the role."""

    def __init__(self, known: list[str]) -> None:
        self.known = set(known)
        self.out: set[str] = set()  # drained on some LB
        self.calls: list[tuple[str, str, Any]] = []  # (minion, function, first argument)
        self.out_while_applied: dict[str, set[str]] = {}
        self.failing_state: set[str] = set()
        self.never_up: set[str] = set()
        self.down: set[str] = set()  # failing haproxy's checks until they get the role
        self.stays_down: set[str] = set()  # failing haproxy's checks even after it
        self.no_haproxy: set[str] = set()
        self.dead: set[str] = set()  # minions whose host died: no state answer
        self.moved: dict[str, str] = {}  # name: the address haproxy has for it (not its own)
        self.apply_timeouts: list[tuple[float, float | None]] = []

    def address(self, name: str) -> str:
        return self.moved.get(name, f"10.9.0.{name.split('-')[1]}") + ":80"

    def status(self, name: str) -> str:
        if name in self.down or name in self.stays_down:
            return "DOWN"
        return "DRAIN" if name in self.out else "UP"

    def call(self, minions, function, args, timeout=10):
        answers: dict[str, Any] = {}
        for lb in minions:
            self.calls.append((lb, function, args[0] if args else None))
            if lb in self.no_haproxy:
                answers[lb] = NO_SOCKET
            elif function == "gdl_lb.servers":
                answers[lb] = [
                    {"name": name, "status": self.status(name), "address": self.address(name)}
                    for name in sorted(self.known)
                ]
            elif args[0] not in self.known:
                answers[lb] = f"ERROR: haproxy has no server {args[0]!r}: use one of ..."
            elif function == "gdl_lb.wait_up":
                answers[lb] = self.status(args[0]) == "UP" and args[0] not in self.never_up
            else:
                if function == "gdl_lb.drain":
                    self.out.add(args[0])
                elif function == "gdl_lb.ready":
                    self.out.discard(args[0])
                answers[lb] = True
        return answers

    def apply_state(self, minions, sls, pillar, timeout=600, queue=False, silent_after=None):
        # Queued behind a run still going, with the environment's own pillar.
        assert queue is True and pillar == {}
        self.apply_timeouts.append((timeout, silent_after))
        answers: dict[str, Any] = {}
        for minion in minions:
            self.calls.append((minion, "state.apply", sls))
            self.out_while_applied[minion] = set(self.out)
            if minion in self.dead:
                continue
            result = minion not in self.failing_state
            if result:
                self.down.discard(minion)
            answers[minion] = {
                "service_|-gdl-app-gunicorn-running_|-gdl-blog_|-running": {
                    "result": result,
                    "comment": "restarted" if result else "gunicorn did not start",
                    "__id__": "gdl-app-gunicorn-running",
                    "__run_num__": 20,
                }
            }
        return answers


class Health:
    """The health URLs the master asked; those in ``failing`` never answer 200."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.failing: set[str] = set()

    def http_ok(self, url: str) -> bool:
        self.asked.append(url)
        return url not in self.failing


@pytest.fixture(autouse=True)
def health(monkeypatch: pytest.MonkeyPatch) -> Health:
    found = Health()
    monkeypatch.setattr(app_role, "http_ok", found.http_ok)
    monkeypatch.setattr(app_role, "HEALTH_TIMEOUT", 0.2)
    monkeypatch.setattr(app_role, "HEALTH_INTERVAL", 0.05)
    return found


def context(tmp_path: Path, salt: FakeSalt, apps: int = 3) -> tuple[Context, list[str]]:
    settings = Settings(state_dir=tmp_path)
    envstore.save(tmp_path, envstore.new_record("blog", "dev", "local", apps, "m1.small"))
    # Out of index order, as a provider may list them; app-10 sorts after app-2.
    indexes = {"app": [10, 2, 0][:apps], "lb": [1, 0]}
    servers = [
        Server(f"{role}-{i}-blog-dev", "blog", "dev", role, RUNNING, f"10.9.0.{i}", "m", "x")
        for role, found in indexes.items()
        for i in found
    ]
    lines: list[str] = []
    ctx = Context(settings=settings, salt=salt, progress=lines.append)  # type: ignore[arg-type]
    ctx.provider = lambda name: FakeProvider(servers)  # type: ignore[method-assign]
    return ctx, lines


APPS = ["app-0-blog-dev", "app-2-blog-dev", "app-10-blog-dev"]


def test_each_server_leaves_rotation_alone_and_is_up_again_before_the_next(tmp_path, health):
    salt = FakeSalt(APPS)
    ctx, lines = context(tmp_path, salt)
    assert app_role.roll_app_role(ctx, "blog", "dev") == APPS
    # While a server got the role, it alone was out of rotation.
    assert salt.out_while_applied == {name: {name} for name in APPS}
    assert salt.out == set()
    per_server = [c for c in salt.calls if c[1] != "gdl_lb.servers"]
    expected = []
    for name in APPS:
        for function in ("gdl_lb.drain", "gdl_lb.wait_drained"):
            expected += [(lb, function, name) for lb in LBS]
        expected.append((name, "state.apply", "gdl.app"))
        for function in ("gdl_lb.ready", "gdl_lb.wait_up"):
            expected += [(lb, function, name) for lb in LBS]
    assert per_server == expected
    # Each server's drain and return to rotation end, in turn.
    ended = [line.split(": done in ")[0] for line in lines if ": done in " in line]
    assert ended[:-1] == [
        f"{name}: {what}" for name in APPS for what in ("drain", "back in rotation")
    ]
    assert lines[-1].startswith("app role, one server at a time: done in ")
    assert lines[-1].endswith("(3 servers)")
    # Each answered its health URL, asked from the master, before it was rolled
    # (it serves) and again before it was back.
    urls = [f"http://10.9.0.{n}:80/healthz" for n in (0, 2, 10)]
    assert health.asked == urls + urls
    # Each state run is bounded; a minion that died is given up long before.
    assert salt.apply_timeouts == [(app_role.STATE_TIMEOUT, app_role.SILENT_AFTER)] * 3
    assert app_role.SILENT_AFTER < app_role.STATE_TIMEOUT


def test_the_last_server_that_serves_is_never_drained(tmp_path):
    salt = FakeSalt(APPS)
    # Two servers fail haproxy's checks, before and after their role: they serve
    # nothing, get the role together first, and the one that serves keeps
    # serving during its own.
    salt.stays_down.update(APPS[1:])
    ctx, lines = context(tmp_path, salt)
    assert app_role.roll_app_role(ctx, "blog", "dev") == [*APPS[1:], APPS[0]]
    assert "app-0-blog-dev: no other server serves, not drained" in lines
    assert salt.out_while_applied == {name: set() for name in APPS}
    assert not [c for c in salt.calls if c[1] == "gdl_lb.drain"]
    # Nothing waits for the servers that serve nothing to come UP.
    assert not [c for c in salt.calls if c[1] == "gdl_lb.wait_up" and c[2] != APPS[0]]
    assert salt.out == set()


def test_an_environment_of_one_server_gets_the_role_in_place(tmp_path):
    salt = FakeSalt(APPS[2:])
    ctx, lines = context(tmp_path, salt, apps=1)
    assert app_role.roll_app_role(ctx, "blog", "dev") == ["app-10-blog-dev"]
    assert "app-10-blog-dev: no other server serves, not drained" in lines
    assert not [c for c in salt.calls if c[1] == "gdl_lb.drain"]
    assert salt.out_while_applied == {"app-10-blog-dev": set()}


def test_a_server_haproxy_does_not_have_yet_gets_the_role_without_waiting(tmp_path):
    salt = FakeSalt(APPS[:2])
    ctx, _ = context(tmp_path, salt)
    # The new server first, with nothing out of rotation; then the others in turn.
    assert app_role.roll_app_role(ctx, "blog", "dev") == [APPS[2], *APPS[:2]]
    applied = [call for call in salt.calls if call[1] == "state.apply"]
    assert applied[0] == (APPS[2], "state.apply", "gdl.app")
    assert salt.out_while_applied[APPS[2]] == set()
    assert salt.out == set()


def test_servers_haproxy_does_not_have_yet_get_the_role_together(tmp_path):
    salt = FakeSalt(APPS[:1])
    ctx, _ = context(tmp_path, salt)
    assert app_role.roll_app_role(ctx, "blog", "dev") == [*APPS[1:], APPS[0]]
    assert all(salt.out_while_applied[name] == set() for name in APPS[1:])


def test_a_load_balancer_without_haproxy_is_left_out(tmp_path):
    salt = FakeSalt(APPS)
    salt.no_haproxy.add("lb-1-blog-dev")
    ctx, lines = context(tmp_path, salt)
    assert app_role.roll_app_role(ctx, "blog", "dev") == APPS
    assert "lb-1-blog-dev: haproxy does not run there, nothing to drain on it" in lines
    assert [c for c in salt.calls if c[0] == "lb-1-blog-dev"] == [
        ("lb-1-blog-dev", "gdl_lb.servers", None)
    ]


def test_a_load_balancer_that_refuses_a_drain_stops_before_any_server_is_touched(tmp_path):
    salt = FakeSalt(APPS)
    ctx, _ = context(tmp_path, salt)
    refusing = FakeSalt.call

    def call(self, minions, function, args, timeout=10):
        answers = refusing(self, minions, function, args, timeout)
        if function == "gdl_lb.drain":
            answers["lb-1-blog-dev"] = "no answer"
        return answers

    salt.call = call.__get__(salt)  # type: ignore[method-assign]
    with pytest.raises(GdlError, match="could not drain app-0-blog-dev"):
        app_role.roll_app_role(ctx, "blog", "dev")
    assert not [c for c in salt.calls if c[1] == "state.apply"]


def test_a_failed_role_stops_at_that_server_and_puts_it_back_in_rotation(tmp_path):
    salt = FakeSalt(APPS)
    salt.failing_state.add(APPS[1])
    ctx, lines = context(tmp_path, salt)
    with pytest.raises(GdlError) as failed:
        app_role.roll_app_role(ctx, "blog", "dev")
    message = str(failed.value)
    assert message.startswith(
        "the app role failed on app-2-blog-dev: gdl-app-gunicorn-running failed: "
        "gunicorn did not start; app-10-blog-dev not changed"
    )
    assert "\n" not in message
    assert [c[0] for c in salt.calls if c[1] == "state.apply"] == APPS[:2]
    # Back in rotation: haproxy's health checks keep it out while it does not answer.
    assert salt.out == set()
    assert lines[-2].startswith("app-2-blog-dev: back in rotation: done in ")


def test_a_server_haproxy_does_not_count_up_stops_the_rollout(tmp_path):
    salt = FakeSalt(APPS)
    salt.never_up.add(APPS[0])
    ctx, _ = context(tmp_path, salt)
    with pytest.raises(GdlError, match="app-0-blog-dev got the app role, but haproxy does not"):
        app_role.roll_app_role(ctx, "blog", "dev")
    assert [c[0] for c in salt.calls if c[1] == "state.apply"] == APPS[:1]


def test_a_server_that_does_not_answer_after_its_role_stops_the_rollout(tmp_path, health):
    salt = FakeSalt(APPS)
    applying = salt.apply_state

    def breaking(minions, *args, **kwargs):
        # The role breaks the first server: it served before, not after.
        answers = applying(minions, *args, **kwargs)
        health.failing.add("http://10.9.0.0:80/healthz")
        return answers

    salt.apply_state = breaking  # type: ignore[method-assign]
    ctx, _ = context(tmp_path, salt)
    with pytest.raises(GdlError) as failed:
        app_role.roll_app_role(ctx, "blog", "dev")
    assert str(failed.value).startswith(
        "app-0-blog-dev got the app role, but http://10.9.0.0:80/healthz did not answer 200 "
        "within 0 s; app-2-blog-dev, app-10-blog-dev not changed"
    )
    assert [c[0] for c in salt.calls if c[1] == "state.apply"] == APPS[:1]
    # Back in rotation: haproxy's own checks keep it out.
    assert salt.out == set()


def test_a_host_made_again_under_a_known_name_gets_the_role_without_being_waited_for(
    tmp_path, health
):
    """A re-run after an app host died mid-role: haproxy still has its name, from before.

    The host made again under that name has no app yet: haproxy counts it DOWN
    (or UP at the address the old host had) and it fails its health URL. It
    serves nothing, so it gets the role with the others that serve nothing,
    neither drained nor waited for; only the servers that serve are rolled.
    """
    salt = FakeSalt(APPS)
    salt.down.add(APPS[1])  # the new host's app does not answer haproxy yet
    salt.moved[APPS[2]] = "10.9.0.99"  # haproxy has the old host's address
    health.failing.update({"http://10.9.0.2:80/healthz", "http://10.9.0.10:80/healthz"})
    ctx, lines = context(tmp_path, salt)
    assert app_role.roll_app_role(ctx, "blog", "dev") == [*APPS[1:], APPS[0]]
    applied = [c for c in salt.calls if c[1] == "state.apply"]
    assert applied == [(name, "state.apply", "gdl.app") for name in [*APPS[1:], APPS[0]]]
    assert salt.out_while_applied[APPS[1]] == set() and salt.out_while_applied[APPS[2]] == set()
    for name in APPS[1:]:
        assert not [
            c
            for c in salt.calls
            if c[2] == name and c[1] != "gdl_lb.ready" and c[1] != "state.apply"
        ]
    # Put back in rotation without a wait: haproxy's checks decide when it serves.
    assert [c for c in salt.calls if c[1] == "gdl_lb.ready" and c[2] in APPS[1:]] == [
        (lb, "gdl_lb.ready", name) for name in APPS[1:] for lb in LBS
    ]
    assert any(
        line.startswith(f"app role on {APPS[1]}, {APPS[2]} (not serving now)") for line in lines
    )


def test_a_server_haproxy_counts_up_at_another_address_is_not_rolled(tmp_path):
    salt = FakeSalt(APPS)
    salt.moved[APPS[0]] = "10.9.0.99"
    ctx, _ = context(tmp_path, salt)
    assert app_role.roll_app_role(ctx, "blog", "dev") == [APPS[0], *APPS[1:]]
    assert not [c for c in salt.calls if c[2] == APPS[0] and c[1] == "gdl_lb.drain"]


def test_a_host_that_dies_during_the_role_stops_the_step_in_one_line(tmp_path, health):
    """Its minion never answers: the state run is given up within its bound, one line."""
    salt = FakeSalt(APPS[:2])
    salt.dead.add(APPS[2])
    ctx, _ = context(tmp_path, salt)
    with pytest.raises(GdlError) as failed:
        app_role.roll_app_role(ctx, "blog", "dev")
    message = str(failed.value)
    assert message.startswith(
        f"the app role failed on {APPS[2]}: its minion did not answer; "
        f"{APPS[0]}, {APPS[1]} not changed"
    )
    assert "\n" not in message
    assert salt.apply_timeouts == [(app_role.STATE_TIMEOUT, app_role.SILENT_AFTER)]
    # Nothing that serves was touched.
    assert [c[0] for c in salt.calls if c[1] == "state.apply"] == [APPS[2]]
    assert salt.out == set()
