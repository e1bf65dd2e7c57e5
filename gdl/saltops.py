"""The workflows' view of a running Salt master, for use inside a runner or cloud driver."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

import salt.client
import salt.cloud
import salt.config
import salt.exceptions
import salt.utils.event
import salt.utils.jid

from gdl import minion_wait
from gdl.errors import ProviderError
from gdl.providers.base import Progress, no_progress
from gdl.terminal import quiet_stray_lines

log = logging.getLogger(__name__)

# The most lines of evidence a salt-cloud failure carries below its line.
EVIDENCE_LINES = 60
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
ANSWER_POLL = 0.1  # seconds between two looks for a job's answers
# Seconds a call waits past its timeout: Salt then asks a silent minion whether
# the job still runs there (its gather_job_timeout) before giving it up.
CALL_GRACE = 15.0
# How often Salt asks a minion whether a state run still goes on. Salt asks first
# only when the caller's timeout has passed; so a run that died without returning
# (a full disk can kill the return itself) would hold a deploy for all of it.
JOB_CHECK_INTERVAL = 60.0


class SaltOps(Protocol):
    """What the workflows need from a running Salt master; :class:`MasterOps` is the real one."""

    def ping(self, minions: list[str], timeout: float) -> set[str]:
        """The minions that answered test.ping."""

    def wait_for_minions(self, minions: list[str], timeout: float, progress: Progress) -> None:
        """Return once every minion answers; MinionsSilent naming the silent ones at ``timeout``."""

    def call(self, minions: list[str], function: str, args: list[Any], timeout: float = 10) -> dict:
        """{minion: return} of an execution function run on ``minions``."""

    def apply_state(
        self,
        minions: list[str],
        sls: str,
        pillar: dict[str, Any],
        timeout: float = 600,
        queue: bool = False,
        silent_after: float | None = None,
    ) -> dict[str, Any]:
        """{minion: state return} of ``sls`` applied with ``pillar`` on ``minions``.

        Returns within ``timeout`` seconds, without the minions that had not
        answered by then. A minion that has not answered after ``silent_after``
        seconds (default: the lesser of ``timeout`` and
        :data:`JOB_CHECK_INTERVAL`) is asked whether its run still goes; one
        that does not say so (its host died) is given up then. With ``queue``,
        a minion still running another state run starts this one after it
        instead of refusing.
        """

    def cloud_create(
        self, profile: str, names: list[str], overrides: dict[str, Any], timeout: float
    ) -> None:
        """Make servers through salt-cloud's profile, within ``timeout`` seconds."""

    def orchestrate(self, sls: str, pillar: dict[str, Any], test: bool) -> tuple[bool, Any]:
        """Run an orchestrate SLS; (succeeded, its return)."""

    def lb_status(self, lbs: list[str], vip: str) -> dict[str, Any]:
        """Which of ``lbs`` holds ``vip``, and its haproxy backends' states."""


class MasterOps:
    """SaltOps over the master the runner (or a salt-cloud driver) runs beside."""

    def __init__(self, opts: dict[str, Any], orchestrate: Callable[..., Any] | None = None) -> None:
        self.opts = opts
        self._orchestrate = orchestrate
        self._client: salt.client.LocalClient | None = None

    @property
    def client(self) -> salt.client.LocalClient:
        if self._client is None:
            self._client = salt.client.get_local_client(mopts=self.opts)
        return self._client

    def ping(self, minions: list[str], timeout: float) -> set[str]:
        if not minions:
            return set()
        returns = self.client.cmd(
            minions, "test.ping", tgt_type="list", timeout=max(1, int(timeout))
        )
        return {minion for minion, answer in (returns or {}).items() if answer is True}

    def wait_for_minions(
        self, minions: list[str], timeout: float, progress: Progress = no_progress
    ) -> None:
        """Return once every minion answers test.ping (see :mod:`gdl.minion_wait`)."""
        if not minions:
            return
        with salt.utils.event.get_master_event(
            self.opts, self.opts["sock_dir"], listen=True
        ) as bus:
            minion_wait.wait_for_minions(bus, self._publish_ping, minions, timeout, progress)

    def _publish_ping(self, minions: list[str]) -> str:
        """Send test.ping to ``minions`` without waiting; its job id."""
        # Salt prints "No minions matched the target" on stdout when no key matches;
        # that case is reported below as one line instead.  Only that line is kept
        # off stdout: other threads (the progress relay) print meanwhile.
        with quiet_stray_lines():
            job = self.client.run_job(minions, "test.ping", tgt_type="list", listen=False)
        if not job:
            raise ProviderError(
                f"no accepted minion key for {', '.join(minions)} on this master",
                "run the build again: it makes the missing servers and their keys",
            )
        return str(job["jid"])

    def call(self, minions: list[str], function: str, args: list[Any], timeout: float = 10) -> dict:
        # A minion that has not answered after ``timeout`` is asked whether the
        # job still runs; past the grace after that, it is left out.
        return self._gather(minions, function, args, None, timeout + CALL_GRACE, timeout)

    def apply_state(
        self,
        minions: list[str],
        sls: str,
        pillar: dict[str, Any],
        timeout: float = 600,
        queue: bool = False,
        silent_after: float | None = None,
    ) -> dict[str, Any]:
        kwarg: dict[str, Any] = {"pillar": pillar}
        if queue:
            kwarg["queue"] = True
        asked = silent_after if silent_after is not None else min(JOB_CHECK_INTERVAL, timeout)
        return self._gather(minions, "state.apply", [sls], kwarg, timeout, asked)

    def _gather(
        self,
        minions: list[str],
        function: str,
        args: list[Any],
        kwarg: dict[str, Any] | None,
        limit: float,
        silent_after: float,
    ) -> dict[str, Any]:
        """{minion: return} of ``function`` on ``minions``: those that answered within ``limit`` s.

        LocalClient.cmd asks a minion that has not answered after its timeout
        whether the job still runs there, and waits on as long as it says so:
        the answers are read here instead, up to a deadline of our own.  A job
        still running on a minion at the deadline is killed there.
        """
        if not minions:
            return {}
        deadline = time.monotonic() + limit
        jid = salt.utils.jid.gen_jid(self.opts)
        extra = {"kwarg": kwarg} if kwarg is not None else {}
        answers = self.client.cmd_iter_no_block(
            minions,
            function,
            arg=args,
            tgt_type="list",
            timeout=max(1, int(silent_after)),
            jid=jid,
            **extra,
        )
        returns: dict[str, Any] = {}
        try:
            for answer in answers:
                for minion, data in (answer or {}).items():
                    if isinstance(data, dict) and "ret" in data:
                        returns[minion] = data["ret"]
                if set(minions) <= set(returns) or time.monotonic() >= deadline:
                    break
                if not answer:
                    time.sleep(ANSWER_POLL)
        finally:
            answers.close()
        running = [minion for minion in minions if minion not in returns]
        if running and time.monotonic() >= deadline:
            self.client.run_job(
                running, "saltutil.kill_job", arg=[jid], tgt_type="list", listen=False
            )
        return returns

    def cloud_create(
        self, profile: str, names: list[str], overrides: dict[str, Any], timeout: float
    ) -> None:
        """Make ``names`` through salt-cloud's ``profile``, one process each, and wait for all.

        Not salt-cloud's own parallel mode: it returns before the servers exist and
        leaves their errors in a log, with processes that outlive the caller.  A
        server not made within ``timeout`` seconds fails: its process, and whatever
        that started and left in its process group, is killed before this returns.
        """
        config_dir = os.path.dirname(self.opts.get("conf_file") or "/etc/salt/master")
        cloud_config = os.path.join(config_dir, "cloud")
        if not names:
            return
        # Made once here first: it creates salt-cloud's cache dir, which the
        # workers would otherwise race to create.
        salt.cloud.CloudClient(path=cloud_config)
        answers = _each_in_a_process(
            _profile_one,
            {name: (cloud_config, profile, name, overrides) for name in names},
            timeout,
        )
        failed, evidence = [], []
        for name in names:
            error = answers.get(name, f"not made within {timeout:.0f} s (stopped)")
            if error:
                line, *below = error.splitlines()
                failed.append(f"{name}: {line}")
                evidence += below
        if failed:
            raise ProviderError(
                f"salt-cloud could not make {'; '.join(failed)}",
                "fix the cause and run the build again",
                evidence,
            )

    def orchestrate(self, sls: str, pillar: dict[str, Any], test: bool) -> tuple[bool, Any]:
        if self._orchestrate is None:
            raise RuntimeError("this master view cannot orchestrate")
        result = self._orchestrate(sls, pillar=pillar, test=test)
        code = result.get("retcode", 0) if isinstance(result, dict) else 1
        return code == 0, result

    def lb_status(self, lbs: list[str], vip: str) -> dict[str, Any]:
        holders = self.call(lbs, "gdl_lb.holds_vip", [vip])
        vrrp_master = next((lb for lb in sorted(holders) if holders[lb] is True), None)
        backends = self.call([vrrp_master], "gdl_lb.servers", []) if vrrp_master else {}
        return {
            "vip_holder": vrrp_master,
            "backends": backends.get(vrrp_master) if vrrp_master else None,
        }

    def close(self) -> None:
        """Let go of the master connection this view opened, if any."""
        if self._client is not None:
            self._client.destroy()
            self._client = None


def profile_size(opts: dict[str, Any], profile: str) -> str | None:
    """The size salt-cloud's ``profile`` names on this master; None without one."""
    conf_file = opts.get("conf_file")
    if not conf_file:
        return None
    try:
        cloud = salt.config.cloud_config(os.path.join(os.path.dirname(conf_file), "cloud"))
    except (OSError, salt.exceptions.SaltException):
        log.info("gdl: cannot read salt-cloud's profiles", exc_info=True)
        return None
    size = ((cloud.get("profiles") or {}).get(profile) or {}).get("size")
    return str(size) if size else None


def _each_in_a_process(
    work: Callable[..., str], calls: dict[str, tuple[Any, ...]], timeout: float
) -> dict[str, str]:
    """``work(*args)`` for each name in a forked process of its own; {name: its answer}.

    A name missing from the answers did not answer within ``timeout`` seconds.  Every
    process's group (the process and the children it did not move to a session of
    their own) is killed before this returns, answered or not: none outlives the caller.
    """
    context = multiprocessing.get_context("fork")
    started: dict[str, tuple[Any, multiprocessing.connection.Connection]] = {}
    answers: dict[str, str] = {}
    try:
        for name, args in calls.items():
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_answer_through, args=(send, work, args, os.getpid()))
            process.start()
            send.close()
            started[name] = (process, receive)
        deadline = time.monotonic() + timeout
        waiting: dict[Any, str] = {receive: name for name, (_, receive) in started.items()}
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for ready in multiprocessing.connection.wait(list(waiting), timeout=left):
                name = waiting.pop(ready)
                try:
                    answers[name] = ready.recv()
                except EOFError:  # it died before answering (killed, or os._exit)
                    answers[name] = "its salt-cloud process ended without an answer"
    finally:
        for process, receive in started.values():
            _kill_group(process.pid)
            process.join()
            receive.close()
    return answers


def _answer_through(
    send: multiprocessing.connection.Connection,
    work: Callable[..., str],
    args: tuple[Any, ...],
    parent: int,
) -> None:
    """Run ``work`` in a process group of its own and send back its answer.

    It dies with ``parent`` too: a caller killed outright (its lock gone with it)
    leaves no worker making servers on.
    """
    os.setpgid(0, 0)
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    try:
        answer = work(*args)
    except BaseException as error:  # every failure is reported, by server name
        answer = " ".join(str(error).split())[:300] or type(error).__name__
    send.send(answer)
    send.close()


def _kill_group(pid: int | None) -> None:
    """Kill process ``pid`` and its process group (it leads one: :func:`_answer_through`)."""
    if pid is None:
        return
    # The process may not have made its group yet; then it has no children either.
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(target, signal.SIGKILL)


def _profile_one(cloud_config: str, profile: str, name: str, overrides: dict[str, Any]) -> str:
    """Make one server through salt-cloud (in a worker process); '' or why it failed.

    Why is one line, and below it what the error showed (a silent server's console).
    """
    try:
        # salt-cloud takes overrides per server name; other keys are ignored.
        returns = salt.cloud.CloudClient(path=cloud_config).profile(
            profile, names=[name], vm_overrides={name: overrides}
        )
    except Exception as error:  # every failure is reported, by server name
        line, *below = str(error).splitlines() or [""]
        line = " ".join(line.split())[:300] or type(error).__name__
        return "\n".join([line, *below[:EVIDENCE_LINES]])
    answer = (returns or {}).get(name)
    if not isinstance(answer, dict) or answer.get("Error") or answer.get("error"):
        return f"{answer!r}"[:300]
    return ""
