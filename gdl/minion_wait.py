"""Waiting for new servers' minions on the master's event bus, without flooding them.

Every ``test.ping`` a connected minion receives costs it a process of its own
(a fork, the job's decryption, a return); a minion that is busy starting answers
late, and asking it again only adds work. So each minion waited for is asked
once as soon as it announces itself (``salt/minion/<id>/start``), and again
only after a pause that doubles while it stays silent; one that started before
the wait began is found by the first ask, sent to all. Fifty new servers cost
about fifty pings, not fifty for every minion that starts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gdl.errors import MinionsSilent
from gdl.progress import Heartbeat, named
from gdl.providers.base import Progress, no_progress
from gdl.relay import JOB_RET

START_TAG = re.compile(r"^salt/minion/(?P<id>[^/]+)/start$")
# Seconds before a minion that has not answered is asked again, doubling up to
# the second figure while it stays silent. A minion that announces its start
# is asked at once and its pause starts again from the first.
FIRST_PAUSE = 2.0
LONGEST_PAUSE = 10.0


class EventBus(Protocol):
    def get_event(self, wait: float, full: bool) -> dict[str, Any] | None: ...


class PingSchedule:
    """When each minion still waited for is asked next."""

    def __init__(self, minions: Iterable[str], now: float) -> None:
        self._due = dict.fromkeys(minions, now)
        self._pause = dict.fromkeys(self._due, FIRST_PAUSE)

    @property
    def pending(self) -> list[str]:
        return sorted(self._due)

    def due(self, now: float) -> list[str]:
        """The minions to ask now, sorted."""
        return sorted(minion for minion, due in self._due.items() if due <= now)

    def asked(self, minions: Iterable[str], now: float) -> None:
        for minion in minions:
            if minion in self._due:
                self._due[minion] = now + self._pause[minion]
                self._pause[minion] = min(self._pause[minion] * 2, LONGEST_PAUSE)

    def started(self, minion: str, now: float) -> None:
        """``minion`` announced its start: it can answer now."""
        if minion in self._due:
            self._due[minion] = now
            self._pause[minion] = FIRST_PAUSE

    def answered(self, minion: str) -> bool:
        """Forget ``minion``; whether it was still waited for."""
        self._pause.pop(minion, None)
        return self._due.pop(minion, None) is not None

    def next_due(self) -> float | None:
        return min(self._due.values(), default=None)


def wait_for_minions(
    bus: EventBus,
    ping: Callable[[list[str]], str],
    minions: list[str],
    timeout: float,
    progress: Progress = no_progress,
) -> None:
    """Return once every minion answered a ping; ``ping(minions)`` publishes one, its jid.

    Raises :class:`MinionsSilent` naming those that had not answered after ``timeout`` s.
    """
    now = time.monotonic()
    schedule = PingSchedule(minions, now)
    deadline = now + timeout
    jids: set[str] = set()
    heartbeat = Heartbeat(progress)
    while schedule.pending:
        now = time.monotonic()
        if now >= deadline:
            raise MinionsSilent(schedule.pending, timeout)
        due = schedule.due(now)
        if due:
            jids.add(ping(due))
            schedule.asked(due, now)
        heartbeat.beat(f"the minions of {named(schedule.pending)} to answer")
        wake = min(schedule.next_due() or deadline, deadline)
        event = bus.get_event(wait=max(0.05, min(1.0, wake - now)), full=True)
        if not event:
            continue
        tag, data = event.get("tag", ""), event.get("data") or {}
        started = START_TAG.match(tag)
        if started:
            schedule.started(started["id"], time.monotonic())
            continue
        answered = JOB_RET.match(tag)
        if (
            answered
            and answered["jid"] in jids
            and data.get("return") is True
            and schedule.answered(answered["id"])
        ):
            progress(f"{answered['id']} ... ok")
