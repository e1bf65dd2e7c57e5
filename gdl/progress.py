"""The operator's progress lines: one per step as it starts and as it ends, with seconds taken.

A :class:`Reporter` is the ``progress`` callable every workflow is handed.  It
sends each line to a sink (salt-run's progress events, or an event a nested
orchestration step fires for the command that follows it), remembers when the
last line went out and which steps are open, so a long wait can say what it
waits for.  :func:`step` times one step; plain callables work too (the tests'
``list.append``), they just get the two lines.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# A line and what it marks: {"step": what, "phase": "start" | "end"} for a step's lines.
Sink = Callable[[str, dict[str, Any]], None]

# Tag of the events a nested orchestration step fires for the command following it.
TAG_PREFIX = "gdl/progress/"
# Seconds without a line after which a wait says what it waits for.
QUIET_AFTER = 5.0
# The most server names a line spells out; the others are counted.
NAMES_SHOWN = 4


def named(names: Iterable[str]) -> str:
    """Server names for a line, in index order: the first few, then how many more.

    A build of fifty servers would otherwise print lines of a thousand characters.
    """
    ordered = sorted(
        names, key=lambda name: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
    )
    if len(ordered) <= NAMES_SHOWN:
        return ", ".join(ordered)
    return f"{', '.join(ordered[:NAMES_SHOWN])} and {len(ordered) - NAMES_SHOWN} more"


def tag(app: str, env: str) -> str:
    """The event tag of environment (app, env)'s progress lines."""
    return f"{TAG_PREFIX}{app}-{env}"


def seconds(value: float) -> str:
    return f"{value:.1f} s"


class Reporter:
    """Progress lines through one sink, with the time of the last line and the open steps."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self.last_line = time.monotonic()
        # Steps started and not ended, oldest first: (what, when it started).
        self.open_steps: list[tuple[str, float]] = []

    def __call__(self, message: str) -> None:
        self.emit(message, {})

    def emit(self, message: str, marks: dict[str, Any]) -> None:
        with self._lock:
            self.last_line = time.monotonic()
            sink = self._sink
        sink(message, marks)

    def redirect(self, sink: Sink) -> Sink:
        """Send lines to ``sink`` from now on; returns the sink used until now."""
        with self._lock:
            previous, self._sink = self._sink, sink
        return previous

    def quiet_for(self) -> float:
        return time.monotonic() - self.last_line

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[StepNote]:
        note = StepNote()
        started = time.monotonic()
        entry = (what, started)
        self.open_steps.append(entry)
        self.emit(f"{what} ...", {"step": what, "phase": "start"})
        try:
            yield note
        except BaseException:
            self.open_steps.remove(entry)
            self.emit(
                f"{what}: failed after {seconds(time.monotonic() - started)}",
                {"step": what, "phase": "end"},
            )
            raise
        self.open_steps.remove(entry)
        self.emit(
            f"{what}: done in {seconds(time.monotonic() - started)}{note.suffix()}",
            {"step": what, "phase": "end"},
        )


class StepNote:
    """What a step adds to its last line ("done in 2.1 s (2 created)")."""

    def __init__(self) -> None:
        self.text = ""

    def suffix(self) -> str:
        return f" ({self.text})" if self.text else ""


@contextlib.contextmanager
def step(progress: Callable[[str], None], what: str) -> Iterator[StepNote]:
    """Time one step: a line as it starts, one as it ends with the seconds it took."""
    if isinstance(progress, Reporter):
        with progress.step(what) as note:
            yield note
        return
    note = StepNote()
    started = time.monotonic()
    progress(f"{what} ...")
    try:
        yield note
    except BaseException:
        progress(f"{what}: failed after {seconds(time.monotonic() - started)}")
        raise
    progress(f"{what}: done in {seconds(time.monotonic() - started)}{note.suffix()}")


class Heartbeat:
    """Says what a loop waits for, at most every ``every`` seconds of silence."""

    def __init__(self, progress: Callable[[str], None], every: float = QUIET_AFTER) -> None:
        self.progress = progress
        self.every = every
        self.started = time.monotonic()
        self._last = self.started

    def beat(self, waiting_for: str) -> None:
        now = time.monotonic()
        quiet = now - self._last
        if isinstance(self.progress, Reporter):
            quiet = min(quiet, self.progress.quiet_for())
        if quiet >= self.every:
            self._last = now
            self.progress(f"waiting for {waiting_for} ({now - self.started:.0f} s)")
