"""Calls to ``gdl_lb`` on every load balancer of an environment, answered as one.

A change to haproxy's rotation (drain, ready) is only done when every LB says
so: the build's surplus and app role steps and the deploy's rollout all go
through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gdl.errors import GdlError
from gdl.saltops import SaltOps

CALL_TIMEOUT = 30.0  # seconds for one runtime-API call on every LB
DRAIN_TIMEOUT = 60.0  # seconds for a drained server's requests in flight to finish
UP_TIMEOUT = 30.0  # seconds for haproxy to count a readied server UP
# What gdl_lb says of a server its haproxy does not have (already out of rotation).
UNKNOWN_SERVER = "has no server"
# What gdl_lb says when no haproxy listens on the runtime socket.
NO_HAPROXY = "haproxy's runtime socket"


def refusals(
    ops: SaltOps,
    lbs: Sequence[str],
    function: str,
    args: list[Any],
    timeout: float = CALL_TIMEOUT,
    unknown_is_done: bool = False,
) -> list[str]:
    """Run ``function`` on every LB; one ``"<lb>: <answer>"`` per LB that did not say True.

    With ``unknown_is_done``, an LB whose haproxy does not know the server
    counts as done (it sends the server nothing already).
    """
    answers = ops.call(list(lbs), function, args, timeout=timeout)
    refused = []
    for lb in lbs:
        answer = answers.get(lb, "no answer")
        if answer is True or (unknown_is_done and UNKNOWN_SERVER in str(answer)):
            continue
        refused.append(f"{lb}: {str(answer)[:200]}")
    return refused


def routing(ops: SaltOps, lbs: Sequence[str], timeout: float = CALL_TIMEOUT) -> list[str]:
    """The LBs of ``lbs`` except those whose haproxy does not run: those route nothing.

    An LB that does not answer at all stays in: a call to it then says why.
    """
    answers = ops.call(list(lbs), "gdl_lb.servers", [], timeout=timeout)
    return [lb for lb in lbs if NO_HAPROXY not in str(answers.get(lb, ""))]


def backend_rows(ops: SaltOps, lbs: Sequence[str], timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
    """Each LB's ``gdl_lb.servers`` answer: its backend servers, their status and address."""
    return ops.call(list(lbs), "gdl_lb.servers", [], timeout=timeout) if lbs else {}


def others_up(ops: SaltOps, lbs: Sequence[str], server: str, timeout: float = CALL_TIMEOUT) -> bool:
    """Whether every LB counts a server other than ``server`` UP: one serves while it is out."""
    answers = ops.call(list(lbs), "gdl_lb.servers", [], timeout=timeout)

    def serving(rows: Any) -> bool:
        return isinstance(rows, list) and any(
            isinstance(row, dict) and row.get("name") != server and row.get("status") == "UP"
            for row in rows
        )

    return bool(lbs) and all(serving(answers.get(lb)) for lb in lbs)


def drain(
    ops: SaltOps, lbs: Sequence[str], server: str, then: str, unknown_is_done: bool = False
) -> None:
    """Take ``server`` out of rotation on every LB, or raise saying what ``then`` to do."""
    refused = refusals(ops, lbs, "gdl_lb.drain", [server], unknown_is_done=unknown_is_done)
    if refused:
        raise GdlError(f"could not drain {server} ({'; '.join(refused)})", then)


def drain_and_wait(
    ops: SaltOps,
    lbs: Sequence[str],
    server: str,
    then: str,
    progress: Callable[[str], None],
    timeout: float = DRAIN_TIMEOUT,
    unknown_is_done: bool = False,
) -> None:
    """Drain ``server`` on every LB, then wait up to ``timeout`` s for its requests in flight."""
    drain(ops, lbs, server, then, unknown_is_done=unknown_is_done)
    slow = refusals(
        ops,
        lbs,
        "gdl_lb.wait_drained",
        [server, timeout],
        timeout=timeout + 15,
        unknown_is_done=unknown_is_done,
    )
    if slow:
        # Requests still running after the wait are cut by what follows; say
        # so, but carry on: a stuck client must not stop a rollout.
        progress(f"{server}: requests still in flight after {timeout:.0f} s")


def ready_and_wait(
    ops: SaltOps,
    lbs: Sequence[str],
    server: str,
    timeout: float = UP_TIMEOUT,
    unknown_is_done: bool = False,
) -> str | None:
    """Back in rotation on every LB; why not, or None once every haproxy counts it UP."""
    refused = refusals(ops, lbs, "gdl_lb.ready", [server], unknown_is_done=unknown_is_done)
    if refused:
        return f"haproxy did not take it back ({'; '.join(refused)})"
    down = refusals(
        ops,
        lbs,
        "gdl_lb.wait_up",
        [server, timeout],
        timeout=timeout + 15,
        unknown_is_done=unknown_is_done,
    )
    if down:
        return f"haproxy does not count it UP after {timeout:.0f} s"
    return None
