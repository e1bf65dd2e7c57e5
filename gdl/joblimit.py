"""An upper bound on every state run a command starts on its environment's minions.

Salt bounds no state run: the orchestration's ``salt.state`` steps (and any
``state.sls`` job) wait for as long as the minion says the run still goes, so
one hung state would hold the build, and its environment's lock, without end.
While a command follows its environment (:class:`gdl.relay.EventRelay`), it
hands the jobs it sees on the bus to :class:`StateRunLimit`, which names the
state runs older than the limit; the relay stops them on the minions that have
not answered (``saltutil.kill_job``). The step waiting for such a run then
finds it gone and fails, and the command reports the stop in one line.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from gdl.errors import GdlError

# The jobs that run states; anything else a command sends is bounded by its caller.
STATE_FUNCTIONS = ("state.sls", "state.apply", "state.highstate")


class RunningJob(Protocol):
    """What the limit reads of a job the relay follows (:class:`gdl.relay.Job`)."""

    jid: str
    function: str
    label: str  # what the job does, in a few words ("app role")
    started: float  # monotonic seconds
    pending: Collection[str]  # the minions that have not answered yet


@dataclass(frozen=True)
class StoppedRun:
    """A state run the limit named: what it did, and the minions still running it then."""

    jid: str
    label: str
    minions: tuple[str, ...]

    @property
    def what(self) -> str:
        return f"{self.label} on {', '.join(self.minions)}"


@dataclass
class StateRunLimit:
    """Names the state runs that outlived ``seconds`` (each once), and keeps what it stopped."""

    seconds: float
    stopped: list[StoppedRun] = field(default_factory=list)

    def overdue(self, jobs: Iterable[RunningJob], now: float) -> list[StoppedRun]:
        """The state runs still awaited ``seconds`` after they started, not stopped before."""
        already = {run.jid for run in self.stopped}
        late = [
            StoppedRun(job.jid, job.label, tuple(sorted(job.pending)))
            for job in jobs
            if job.function in STATE_FUNCTIONS
            and job.pending
            and job.jid not in already
            and now - job.started > self.seconds
        ]
        self.stopped.extend(late)
        return late

    def line(self, run: StoppedRun) -> str:
        """What the operator is told as a run is stopped."""
        return f"{run.what}: still running after {self.seconds:g} s, stopped"

    def failure(self, env_id: str) -> GdlError | None:
        """The one line a failed command gives when it stopped runs; None when it stopped none."""
        if not self.stopped:
            return None
        runs = "; ".join(run.what for run in self.stopped)
        return GdlError(
            f"{env_id}: stopped after {self.seconds:g} s, still running: {runs}",
            "see what the run was doing in that server's minion log, fix it, then run "
            "the build again (gdl:state_run_limit sets the bound)",
        )
