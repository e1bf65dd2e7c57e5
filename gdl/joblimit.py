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

from collections.abc import Iterable
from dataclasses import dataclass, field

from gdl.errors import GdlError

# The jobs that run states; anything else a command sends is bounded by its caller.
STATE_FUNCTIONS = ("state.sls", "state.apply", "state.highstate")


@dataclass(frozen=True)
class SeenJob:
    """What the limit needs to know of a job seen on the bus."""

    jid: str
    function: str
    label: str  # what the job does, in a few words ("app role")
    started: float  # monotonic seconds
    pending: frozenset[str]  # the minions that have not answered yet


@dataclass
class StateRunLimit:
    """Names the state runs that outlived ``seconds`` (each once), and keeps what it stopped."""

    seconds: float
    stopped: list[SeenJob] = field(default_factory=list)

    def overdue(self, jobs: Iterable[SeenJob], now: float) -> list[SeenJob]:
        """The state runs still awaited ``seconds`` after they started, not stopped before."""
        already = {job.jid for job in self.stopped}
        late = [
            job
            for job in jobs
            if job.function in STATE_FUNCTIONS
            and job.pending
            and job.jid not in already
            and now - job.started > self.seconds
        ]
        self.stopped.extend(late)
        return late

    def line(self, job: SeenJob) -> str:
        """What the operator is told as a run is stopped."""
        return (
            f"{job.label} on {', '.join(sorted(job.pending))}: still running after "
            f"{self.seconds:g} s, stopped"
        )

    def failure(self, env_id: str) -> GdlError | None:
        """The one line a failed command gives when it stopped runs; None when it stopped none."""
        if not self.stopped:
            return None
        runs = "; ".join(f"{job.label} on {', '.join(sorted(job.pending))}" for job in self.stopped)
        return GdlError(
            f"{env_id}: stopped after {self.seconds:g} s, still running: {runs}",
            "see what the run was doing in that server's minion log, fix it, then run "
            "the build again (gdl:state_run_limit sets the bound)",
        )
