"""Lines for what a command's orchestration and minions do, read off the master's event bus.

The runner runs ``orch/build.sls`` in its own process, but the steps inside it
(nested runner calls, ``state.sls`` jobs on the minions) print nothing where the
operator looks.  While a command runs, :class:`EventRelay` follows the master's
event bus in a thread and prints, through the command's own :class:`Reporter`:

- the lines the nested gdl steps fire under ``gdl/progress/<app>-<env>``;
- each state run or module sync on the environment's minions as it starts and,
  per minion, as it returns, with the seconds it took;
- after :data:`gdl.progress.QUIET_AFTER` seconds without a line, what is still
  awaited (the minions a job waits for, or the step still running).

All of the command's lines go out from the relay's thread while it runs (the
others queue for it), so Salt's event objects are used by one thread at a time.

The orchestration forks its steps (``parallel: True``) from the process the
relay runs in.  A child forked while the relay's thread held a lock (stdout's,
the bus's) would wait for it for good, and the orchestration for the child.  So
the thread works only while it holds :data:`FORK_GATE`, which every fork of the
process takes first: a fork waits for the thread to be idle, never the reverse.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from gdl import naming
from gdl.joblimit import StateRunLimit
from gdl.progress import QUIET_AFTER, TAG_PREFIX, Reporter, Sink, named, seconds, tag

log = logging.getLogger(__name__)

JOB_NEW = re.compile(r"^salt/job/(?P<jid>[^/]+)/new$")
JOB_RET = re.compile(r"^salt/job/(?P<jid>[^/]+)/ret/(?P<id>[^/]+)$")
# Jobs worth a line of their own; the others (pings, gdl_lb calls) show in waits only.
STEP_FUNCTIONS = ("state.sls", "state.apply", "saltutil.sync_modules")
# Jobs Salt sends about other jobs: never a wait of their own.
IGNORED = ("saltutil.find_job", "test.ping", "saltutil.running")
# Seconds between looks at the bus while nothing comes.
IDLE_POLL = 0.1
# Seconds the relay waits, once its command is done, for the end lines of nested
# steps it saw start (fired by their processes before they ended, still in transit).
DRAIN_LIMIT = 2.0
ROLE_NAMES = {"gdl.app": "app role", "gdl.lb": "LB role", "gdl.common": "common role"}
# Held by a relay's thread while it works, and by the forking thread across a fork
# (re-entrant: a fork from inside the relay's own work must not wait for itself).
FORK_GATE = threading.RLock()
os.register_at_fork(
    before=FORK_GATE.acquire,
    after_in_parent=FORK_GATE.release,
    after_in_child=FORK_GATE.release,
)


@dataclass
class Job:
    """A job published to the environment's minions, and who has not answered yet."""

    jid: str
    function: str
    label: str
    announce: bool
    started: float
    pending: set[str] = field(default_factory=set)


def job_label(function: str, args: list[Any]) -> str:
    """What a job does, in a few words ("app role", "module sync", "gdl_lb.wait_up")."""
    first = args[0] if args and isinstance(args[0], str) else None
    if function in ("state.sls", "state.apply") and first:
        return ROLE_NAMES.get(first, f"state {first}")
    if function == "saltutil.sync_modules":
        return "module sync"
    return f"{function} {first}" if first else function


def state_summary(answer: Any) -> str:
    """'3 of 12 states changed' for a state run's return; '' for anything else."""
    if not isinstance(answer, dict) or not answer:
        return ""
    states = [s for s in answer.values() if isinstance(s, dict)]
    if len(states) != len(answer):
        return ""
    changed = sum(1 for s in states if s.get("changes"))
    return f" ({changed} of {len(states)} states changed)"


class JobFollower:
    """Turns bus events into lines for one environment; knows what is still awaited."""

    def __init__(self, app: str, env: str) -> None:
        self.app = app
        self.env = env
        self.tag = tag(app, env)
        self.jobs: dict[str, Job] = {}
        # Steps the nested runners opened: what -> when.
        self.nested_steps: dict[str, float] = {}

    def ours(self, minion: str) -> bool:
        parsed = naming.parse_server_name(minion)
        return parsed is not None and (parsed.app, parsed.env) == (self.app, self.env)

    def lines(self, event_tag: str, data: dict[str, Any], now: float) -> list[str]:
        """The lines one event is worth (often none)."""
        if event_tag == self.tag:
            return self._nested_line(data, now)
        new = JOB_NEW.match(event_tag)
        if new:
            return self._job_started(new["jid"], data, now)
        ret = JOB_RET.match(event_tag)
        if ret:
            return self._job_returned(ret["jid"], ret["id"], data, now)
        return []

    def _nested_line(self, data: dict[str, Any], now: float) -> list[str]:
        what = data.get("step")
        if what and data.get("phase") == "start":
            self.nested_steps[str(what)] = now
        elif what and data.get("phase") == "end":
            self.nested_steps.pop(str(what), None)
        message = data.get("message")
        return [str(message)] if message else []

    def _job_started(self, jid: str, data: dict[str, Any], now: float) -> list[str]:
        function = str(data.get("fun", ""))
        minions = [str(m) for m in data.get("minions") or []]
        if function in IGNORED or not minions or not all(self.ours(m) for m in minions):
            return []
        args = data.get("arg") or []
        job = Job(
            jid=jid,
            function=function,
            label=job_label(function, args if isinstance(args, list) else []),
            announce=function in STEP_FUNCTIONS,
            started=now,
            pending=set(minions),
        )
        self.jobs[jid] = job
        return [f"{job.label} on {named(minions)} ..."] if job.announce else []

    def _job_returned(self, jid: str, minion: str, data: dict[str, Any], now: float) -> list[str]:
        job = self.jobs.get(jid)
        if job is None or minion not in job.pending:
            return []
        job.pending.discard(minion)
        if not job.pending:
            del self.jobs[jid]
        if not job.announce:
            return []
        took = seconds(now - job.started)
        if data.get("retcode", 0) == 0 and data.get("success", True) is not False:
            return [f"{job.label} on {minion}: done in {took}{state_summary(data.get('return'))}"]
        return [f"{job.label} on {minion}: failed after {took}"]

    def forget_older_than(self, now: float, age: float) -> None:
        """Stop waiting for jobs no one answered in ``age`` seconds (their caller gave up)."""
        for jid in [j for j, job in self.jobs.items() if now - job.started > age]:
            del self.jobs[jid]

    def waiting_for(self, now: float, open_steps: list[tuple[str, float]]) -> str | None:
        """What is awaited now, for a line after a silence; None when nothing is known."""
        if self.jobs:
            job = min(self.jobs.values(), key=lambda j: j.started)
            return f"{job.label} on {named(job.pending)} ({now - job.started:.0f} s)"
        steps = [*open_steps, *self.nested_steps.items()]
        if steps:
            what, started = max(steps, key=lambda s: s[1])
            return f"{what} ({now - started:.0f} s)"
        return None


class EventRelay:
    """While open, prints the environment's orchestration and minion lines (see the module)."""

    # A job unanswered this long is left out of what a wait names.
    JOB_AGE = 3600.0

    def __init__(
        self,
        opts: dict[str, Any],
        app: str,
        env: str,
        reporter: Reporter,
        quiet_after: float = QUIET_AFTER,
        limit: StateRunLimit | None = None,
    ) -> None:
        self.opts = opts
        self.reporter = reporter
        self.limit = limit
        self.follower = JobFollower(app, env)
        self.quiet_after = quiet_after
        self._lines: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._print: Sink | None = None
        self._bus: Any = None

    def __enter__(self) -> EventRelay:
        self._print = self.reporter.redirect(
            lambda message, marks: self._lines.put((message, marks))
        )
        self._thread = threading.Thread(target=self._run, name="gdl-progress", daemon=True)
        self._thread.start()
        # Subscribed before the caller goes on, so no early event is missed.
        self._ready.wait(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._print is not None:
            self.reporter.redirect(self._print)
            self._flush(self._print)

    def _queue(self, message: str, marks: dict[str, Any]) -> None:
        self._lines.put((message, marks))

    def _flush(self, sink: Sink) -> None:
        while True:
            try:
                message, marks = self._lines.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                sink(message, marks)

    def _run(self) -> None:
        assert self._print is not None
        try:
            with FORK_GATE:
                import salt.utils.event

                # Held by the relay, not the thread: a process forked meanwhile (salt-cloud's
                # workers) keeps it referenced instead of finalising it as the thread goes.
                self._bus = salt.utils.event.get_master_event(
                    self.opts, self.opts["sock_dir"], listen=True
                )
        except Exception:  # the lines still go out, without the bus's
            log.info("gdl: cannot follow the master's event bus", exc_info=True)
        finally:
            self._ready.set()
        stop_by: float | None = None
        try:
            while True:
                with FORK_GATE:
                    event, done = self._step(stop_by)
                if done:
                    break
                if not event:
                    if self._stop.is_set():
                        stop_by = stop_by or time.monotonic() + DRAIN_LIMIT
                    # Idle outside the gate and Salt's event code: a fork goes now.
                    time.sleep(IDLE_POLL)
        except Exception:
            log.info("gdl: progress relay stopped", exc_info=True)
        finally:
            if self._bus is not None:
                with FORK_GATE, contextlib.suppress(Exception):
                    self._bus.destroy()

    def _step(self, stop_by: float | None) -> tuple[dict[str, Any] | None, bool]:
        """One look at the bus and what follows from it: (the event, whether to stop)."""
        assert self._print is not None
        self._flush(self._print)
        bus = self._bus
        event = bus.get_event(no_block=True, full=True) if bus is not None else None
        # Once the command is done, the last lines of its nested steps may still
        # be on their way to the bus: wait for them, a little.
        drained = not self.follower.nested_steps or (
            stop_by is not None and time.monotonic() >= stop_by
        )
        if not event and self._stop.is_set() and drained:
            return None, True
        now = time.monotonic()
        if event:
            data = event.get("data")
            for line in self.follower.lines(
                str(event.get("tag", "")), data if isinstance(data, dict) else {}, now
            ):
                self.reporter.emit(line, {})
        self._enforce(now)
        self._flush(self._print)
        self._heartbeat(now)
        return event, False

    def _enforce(self, now: float) -> None:
        """Stop the state runs that outlived the limit, on the minions still running them."""
        if self.limit is None:
            return
        for run in self.limit.overdue(self.follower.jobs.values(), now):
            self.reporter.emit(self.limit.line(run), {})
            self.follower.jobs.pop(run.jid, None)
            try:
                import salt.client

                # A client of the relay's own: the command's may be busy in another thread.
                client = salt.client.get_local_client(mopts=self.opts)
                try:
                    client.run_job(
                        list(run.minions),
                        "saltutil.kill_job",
                        arg=[run.jid],
                        tgt_type="list",
                        listen=False,
                    )
                finally:
                    client.destroy()
            except Exception:  # the step waiting for the run still ends at its own bound
                log.warning("gdl: could not stop job %s", run.jid, exc_info=True)

    def _heartbeat(self, now: float) -> None:
        if self.reporter.quiet_for() < self.quiet_after:
            return
        self.follower.forget_older_than(now, self.JOB_AGE)
        waiting = self.follower.waiting_for(now, list(self.reporter.open_steps))
        self.reporter.emit(f"waiting for {waiting}" if waiting else "working ...", {})


__all__ = ["TAG_PREFIX", "EventRelay", "JobFollower", "job_label"]
