"""One rollout, batch by batch: drain, switch, check, ready (see :mod:`gdl.flows.deploy`).

:class:`Roller` carries out a :class:`Rollout` through the workflows' SaltOps
(``call`` and ``apply_state``); it knows nothing of records or providers, so it is
tested against a fake master.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gdl import lbcalls, naming
from gdl.config import DEFAULT_STATE_RUN_LIMIT
from gdl.errors import GdlError
from gdl.progress import step
from gdl.providers.base import Progress
from gdl.saltops import SaltOps

DRAIN_TIMEOUT = lbcalls.DRAIN_TIMEOUT
HEALTH_TIMEOUT = 30.0  # seconds for a switched server to answer its health check
UP_TIMEOUT = lbcalls.UP_TIMEOUT
# Seconds for gdl.app to switch a release (virtualenv included): gdl's bound on a state run.
STATE_TIMEOUT = float(DEFAULT_STATE_RUN_LIMIT)
APP_STATE = "gdl.app"


class DeployFailed(GdlError):
    """A server failed the new release: it was put back on its old one and the deploy stopped."""


@dataclass(frozen=True)
class Member:
    """An app server taking part in a rollout."""

    name: str
    address: str


@dataclass(frozen=True)
class Rollout:
    """What one deploy or rollback does: who, to which release, from which."""

    app: str
    env: str
    version: str  # the release the servers go to
    previous: str  # the release they run now, where a failed server returns
    health: str  # the app's health check path (of the new release)
    previous_health: str  # and of the release a failed server returns to
    lbs: tuple[str, ...]
    members: tuple[Member, ...]
    batch: int = 1

    @property
    def env_id(self) -> str:
        return naming.env_id(self.app, self.env)


def batches(items: Iterable[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive groups of ``size`` (the last may be shorter)."""
    items = list(items)
    return [items[start : start + size] for start in range(0, len(items), size)]


def state_failure(answer: Any) -> str | None:
    """Why one minion's ``state.apply`` return failed, in one line; None when it succeeded."""
    if answer is None or answer is False:
        return "its minion did not answer"
    if isinstance(answer, (list, str)):
        # A render error: Salt returns the messages instead of states.
        text = answer if isinstance(answer, str) else " ".join(str(a) for a in answer)
        return " ".join(text.split())[:300] or "the states did not render"
    if not isinstance(answer, dict) or not answer:
        return f"unexpected answer {answer!r}"[:300]
    failed = [
        state
        for state in answer.values()
        if not isinstance(state, dict) or state.get("result") is False
    ]
    if not failed:
        return None
    first = min(failed, key=lambda s: s.get("__run_num__", 0) if isinstance(s, dict) else 0)
    if not isinstance(first, dict):
        return f"unexpected answer {first!r}"[:300]
    comment = " ".join(str(first.get("comment", "")).split())
    return f"{first.get('__id__', 'a state')} failed: {comment}{_command_output(first)}"[:300]


def _command_output(state: dict[str, Any]) -> str:
    """' (exit N: last line of stderr)' for a state that ran a command without a shell.

    ``module.run`` of ``cmd.run_all`` says only that the call failed; what the
    command printed is in the state's changes.
    """
    changes = state.get("changes")
    ran = [v for v in changes.values() if isinstance(v, dict)] if isinstance(changes, dict) else []
    for output in ran:
        if "retcode" in output:
            lines = str(output.get("stderr") or output.get("stdout") or "").strip().splitlines()
            said = f": {' '.join(lines[-1].split())}" if lines else ""
            return f" (exit {output['retcode']}{said})"
    return ""


class Roller:
    """Carries out a :class:`Rollout` through SaltOps (``call`` and ``apply_state``)."""

    def __init__(
        self,
        ops: SaltOps,
        rollout: Rollout,
        progress: Progress,
        drain_timeout: float = DRAIN_TIMEOUT,
        health_timeout: float = HEALTH_TIMEOUT,
        up_timeout: float = UP_TIMEOUT,
    ) -> None:
        self.ops = ops
        self.rollout = rollout
        self.progress = progress
        self.drain_timeout = drain_timeout
        self.health_timeout = health_timeout
        self.up_timeout = up_timeout

    def drain(self, member: Member) -> None:
        lbcalls.drain_and_wait(
            self.ops,
            self.rollout.lbs,
            member.name,
            "check salt-run gdl.status, then deploy again",
            self.progress,
            timeout=self.drain_timeout,
        )

    def ready(self, member: Member) -> str | None:
        """Back in rotation on both LBs; why not, or None once haproxy counts it UP."""
        return lbcalls.ready_and_wait(
            self.ops, self.rollout.lbs, member.name, timeout=self.up_timeout
        )

    def check(
        self, member: Member, version: str | None, health: str, timeout: float
    ) -> dict[str, Any]:
        """The member's health check, asked straight from the first LB.

        With ``version``, healthy means answering 200 and naming that version
        (when the answer names one at all).
        """
        url = f"http://{member.address}{health}"
        checker = self.rollout.lbs[0]
        answers = self.ops.call(
            [checker],
            "gdl_lb.check_http",
            [url, self.rollout.app, version, timeout],
            timeout=timeout + 15,
        )
        answer = answers.get(checker)
        if not isinstance(answer, dict):
            return {"healthy": False, "detail": f"{checker} could not check it: {answer!r}"[:300]}
        answer["url"] = url
        return answer

    def running_version(self, member: Member) -> str | None:
        """The version the member's health check names now (None when it does not say)."""
        answer = self.check(member, None, self.rollout.health, timeout=0)
        return answer.get("version") if answer.get("status") == 200 else None

    def switch(self, members: list[Member], version: str) -> dict[str, str | None]:
        """Apply the app role at ``version`` on ``members``: {name: why it failed, or None}."""
        pillar = {"gdl": {"version": version}}
        answers = self.ops.apply_state(
            [m.name for m in members], APP_STATE, pillar, timeout=STATE_TIMEOUT
        )
        return {m.name: state_failure(answers.get(m.name)) for m in members}

    def run(self, skip: Iterable[str] = ()) -> list[str]:
        """Roll every member not in ``skip`` to the new release; the names switched.

        Raises :class:`DeployFailed` at the first member that fails, after
        putting it back on the previous release.
        """
        rollout = self.rollout
        skipped = set(skip)
        for member in rollout.members:
            # A deploy killed between drain and ready leaves its server drained.
            if member.name in skipped and self.ready(member) is not None:
                skipped.discard(member.name)
        todo = [m for m in rollout.members if m.name not in skipped]
        # Never every server out of rotation at once: one keeps serving.
        batch = min(rollout.batch, max(1, len(rollout.members) - 1))
        if batch < rollout.batch:
            self.progress(f"{rollout.env_id}: {batch} server(s) at a time, so one keeps serving")
        switched: list[str] = []
        for group in batches(todo, batch):
            names = ", ".join(m.name for m in group)
            with step(self.progress, f"{names}: drain"):
                for member in group:
                    self.drain(member)
            with step(self.progress, f"{names}: switch to release {rollout.version}"):
                failures = self.switch(group, rollout.version)
            with step(self.progress, f"{names}: health check") as note:
                for member in group:
                    if failures[member.name] is None:
                        answer = self.check(
                            member, rollout.version, rollout.health, self.health_timeout
                        )
                        if not answer.get("healthy"):
                            failures[member.name] = (
                                f"its health check {answer.get('url', rollout.health)} "
                                f"{answer.get('detail', 'failed')}"
                            )
                note.text = f"{sum(1 for m in group if not failures[m.name])} healthy"
            failed = [m for m in group if failures[m.name]]
            healthy = [m for m in group if not failures[m.name]]
            for member in healthy:
                with step(self.progress, f"{member.name}: back in rotation"):
                    why = self.ready(member)
                if why:
                    failures[member.name] = why
                    failed.append(member)
                else:
                    switched.append(member.name)
                    self.progress(f"{member.name}: release {rollout.version} in rotation")
            if failed:
                raise self._give_back(failed, failures, switched)
        return switched

    def _give_back(
        self, failed: list[Member], failures: dict[str, str | None], switched: list[str]
    ) -> DeployFailed:
        """Return failed members to the previous release; the error that stops the deploy."""
        rollout = self.rollout
        first = failed[0]
        self.progress(f"{first.name}: {failures[first.name]}; returning it to {rollout.previous}")
        back = self.switch(failed, rollout.previous)
        stuck = []
        for member in failed:
            why = back[member.name]
            if why is None:
                answer = self.check(
                    member, rollout.previous, rollout.previous_health, self.health_timeout
                )
                why = None if answer.get("healthy") else answer.get("detail", "unhealthy")
            if why is None:
                why = self.ready(member)
            if why is not None:
                stuck.append(f"{member.name} ({why})")
        if stuck:
            where = (
                f"returning to {rollout.previous} failed too, left out of rotation: "
                f"{', '.join(stuck)}"
            )
        else:
            where = (
                f"{', '.join(m.name for m in failed)} back on {rollout.previous} and in rotation"
            )
        if switched:
            where += f"; {', '.join(switched)} already run {rollout.version}"
        others = "the servers after it were not changed"
        return DeployFailed(
            f"deploy of {rollout.app} {rollout.version} to {rollout.env_id} stopped: "
            f"{first.name} failed, {failures[first.name]} ({where}; {others})",
            f"fix what failed on {first.name} (the release or the server), then deploy again",
        )
