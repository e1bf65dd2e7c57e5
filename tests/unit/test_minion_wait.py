"""The wait for new minions asks each about once, not once for every minion that starts."""

from __future__ import annotations

import collections

import pytest

from gdl import minion_wait, progress
from gdl.errors import MinionsSilent
from gdl.relay import JOB_RET


class Cloud:
    """Minions that start at given times and answer a ping after ``answer_after`` s."""

    def __init__(self, monkeypatch, starts: dict[str, float], answer_after: float = 0.3):
        self.now = 1000.0
        self.starts = {name: self.now + at for name, at in starts.items()}
        self.answer_after = answer_after
        self.events: list[tuple[float, dict]] = []
        self.asked: collections.Counter[str] = collections.Counter()
        self.received: collections.Counter[str] = collections.Counter()
        self.asked_after_answer: list[str] = []
        self.answered: set[str] = set()
        self.jids = 0
        for name, at in self.starts.items():
            self.events.append((at, {"tag": f"salt/minion/{name}/start", "data": {}}))
        monkeypatch.setattr(minion_wait.time, "monotonic", lambda: self.now)

    def ping(self, minions: list[str]) -> str:
        self.jids += 1
        jid = f"2026{self.jids:06d}"
        for name in minions:
            self.asked[name] += 1
            if name in self.answered:
                self.asked_after_answer.append(name)
            if self.now >= self.starts[name]:  # a minion not started yet never gets it
                self.received[name] += 1
                tag = f"salt/job/{jid}/ret/{name}"
                self.events.append(
                    (self.now + self.answer_after, {"tag": tag, "data": {"return": True}})
                )
        return jid

    def get_event(self, wait: float, full: bool) -> dict | None:
        assert full and wait > 0
        self.events.sort(key=lambda e: e[0])
        if self.events and self.events[0][0] <= self.now + wait:
            at, event = self.events.pop(0)
            self.now = max(self.now, at)
            answered = JOB_RET.match(event["tag"])
            if answered:
                self.answered.add(answered["id"])
            return event
        self.now += wait
        return None


def test_fifty_minions_starting_one_after_another_are_each_asked_about_once(monkeypatch):
    names = [f"app-{i}-blog-dev" for i in range(50)]
    cloud = Cloud(monkeypatch, {name: 0.2 * i for i, name in enumerate(names)}, answer_after=1.0)
    lines: list[str] = []
    minion_wait.wait_for_minions(cloud, cloud.ping, names, timeout=120, progress=lines.append)
    assert cloud.answered == set(names)
    assert not cloud.asked_after_answer
    # Each connected minion gets a ping when it starts, and one still answering
    # at most one more: a process of its own each time.
    assert max(cloud.received.values()) <= 2
    assert sum(cloud.received.values()) <= len(names) + len(names) // 4
    assert sorted(line for line in lines if line.endswith("... ok")) == sorted(
        f"{name} ... ok" for name in names
    )


def test_a_minion_already_connected_answers_the_first_ask(monkeypatch):
    cloud = Cloud(monkeypatch, {"lb-0-blog-dev": -5.0, "lb-1-blog-dev": -5.0})
    cloud.events.clear()  # they started before the wait listened
    minion_wait.wait_for_minions(cloud, cloud.ping, ["lb-0-blog-dev", "lb-1-blog-dev"], 30)
    assert cloud.jids == 1 and cloud.now - 1000.0 < 1


def test_a_silent_minion_is_asked_less_and_less_often_then_named(monkeypatch):
    cloud = Cloud(monkeypatch, {"app-0-blog-dev": 0.0, "app-1-blog-dev": 10_000.0})
    lines: list[str] = []
    with pytest.raises(MinionsSilent) as caught:
        minion_wait.wait_for_minions(
            cloud, cloud.ping, ["app-0-blog-dev", "app-1-blog-dev"], 60, lines.append
        )
    assert caught.value.silent == ("app-1-blog-dev",)
    # Asked at 0, 2, 6, 14, 24, 34, 44, 54 s: pauses of 2, 4, 8 and then 10 s.
    assert cloud.asked["app-1-blog-dev"] == 8
    assert cloud.asked["app-0-blog-dev"] <= 2
    waits = [line for line in lines if line.startswith("waiting for")]
    assert waits and all("app-1-blog-dev" in line for line in waits)


def test_a_minion_that_starts_is_asked_at_once_whatever_its_pause():
    schedule = minion_wait.PingSchedule(["a", "b"], now=0.0)
    schedule.asked(["a", "b"], 0.0)
    schedule.asked(["a", "b"], 2.0)
    assert schedule.due(3.0) == []
    schedule.started("b", 3.0)
    assert schedule.due(3.0) == ["b"]
    assert schedule.answered("b") and not schedule.answered("b")
    schedule.started("stranger", 3.0)
    assert schedule.pending == ["a"]


def test_a_long_list_of_minions_is_named_in_part_and_counted():
    names = [f"app-{i}-blog-dev" for i in reversed(range(50))]
    assert progress.named(names[-2:]) == "app-0-blog-dev, app-1-blog-dev"
    assert progress.named(names) == (
        "app-0-blog-dev, app-1-blog-dev, app-2-blog-dev, app-3-blog-dev and 46 more"
    )
