"""Calls to ``gdl_lb`` on every load balancer of an environment, answered as one.

A change to haproxy's rotation (drain, ready) is only done when every LB says
so: the build's surplus step and the deploy's rollout both go through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gdl.errors import GdlError
from gdl.saltops import SaltOps

CALL_TIMEOUT = 30.0  # seconds for one runtime-API call on every LB
# What gdl_lb says of a server its haproxy does not have (already out of rotation).
UNKNOWN_SERVER = "has no server"


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


def drain(
    ops: SaltOps, lbs: Sequence[str], server: str, then: str, unknown_is_done: bool = False
) -> None:
    """Take ``server`` out of rotation on every LB, or raise saying what ``then`` to do."""
    refused = refusals(ops, lbs, "gdl_lb.drain", [server], unknown_is_done=unknown_is_done)
    if refused:
        raise GdlError(f"could not drain {server} ({'; '.join(refused)})", then)
