"""One operation at a time per environment.

The lock is a POSIX record lock (``lockf``) on a file in the master's state
directory, so it dies with the process that holds it: a build killed half-way
never leaves a stale lock behind.  Unlike ``flock``, it is not shared with
children the holder forks (salt-cloud forks its parallel workers), so a
leftover worker never keeps an environment locked.

A holder gets a random **token**.  ``gdl.build`` passes its token down in the
pillar of the orchestration it starts, and the orchestration's runner steps
present it: a step with the holder's token runs inside the holder's lock (in
the holder's process or another one), any other taker is refused, even in the
holder's own process.  So a second build or destroy started during an
orchestration is refused, while the build's own steps pass.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gdl import naming
from gdl.errors import GdlError, LockHeld


@dataclass
class _Holding:
    token: str
    holder: str  # "build by pid N since T", for the refusal
    depth: int = 1


# (lock path, pid) -> the holding.  Keyed by pid too: a forked child inherits
# this dict but not the lock, and must take the lock for itself.
_held: dict[tuple[str, int], _Holding] = {}
_guard = threading.Lock()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _read_holder(path: Path) -> dict:
    # Only ever called when another process holds the lock: closing a
    # descriptor of the file drops this process's own record locks on it.
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    return (
        f"{holder.get('operation', 'an operation')} by pid {holder.get('pid', '?')} "
        f"since {holder.get('since', '?')}"
    )


def _busy(app: str, env: str, holder: str) -> LockHeld:
    return LockHeld(
        f"{naming.env_id(app, env)} is busy: {holder}",
        "wait for it to finish, then run this again",
    )


def _matches(token: str | None, digest: object) -> bool:
    return bool(token) and isinstance(digest, str) and hmac.compare_digest(_digest(token), digest)


@contextlib.contextmanager
def env_lock(
    lock_dir: str | os.PathLike[str],
    app: str,
    env: str,
    operation: str,
    wait: float = 0,
    token: str | None = None,
) -> Iterator[str]:
    """Hold the environment's lock for the duration of the block; yields its token.

    ``token`` is the token of a holder this call runs inside (an
    orchestration step of ``gdl.build``): with the holder's token the block
    runs under the holder's lock.  Otherwise waits up to ``wait`` seconds for
    another holder, then raises LockHeld saying who holds it.
    """
    directory = Path(lock_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{naming.lock_name(app, env)}.lock"
    key = (str(path), os.getpid())
    deadline = time.monotonic() + wait
    while True:
        with _guard:
            holding = _held.get(key)
            inside = bool(holding and token and hmac.compare_digest(holding.token, token))
            if holding and inside:
                holding.depth += 1
        if holding is None:
            break
        if inside:
            try:
                yield holding.token
            finally:
                with _guard:
                    holding.depth -= 1
            return
        # Held by another operation of this very process (a runner the
        # orchestration of a build calls without the build's token).
        if time.monotonic() >= deadline:
            raise _busy(app, env, holding.holder)
        time.sleep(0.5)

    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held elsewhere
            os.close(handle)
            holder = _read_holder(path)
            if _matches(token, holder.get("token_sha256")):
                # A step of the holder's operation, run in another process.
                yield str(token)
                return
            if time.monotonic() >= deadline:
                raise _busy(app, env, _describe(holder)) from None
            time.sleep(0.5)
            continue
        # A destroy removes the lock file while holding it: a lock taken on
        # the unlinked file is no lock at all, so take it again on the new one.
        try:
            same_file = os.stat(path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(handle)
    new_token = secrets.token_hex(16)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        os.ftruncate(handle, 0)
        os.pwrite(
            handle,
            json.dumps(
                {
                    "operation": operation,
                    "pid": os.getpid(),
                    "since": since,
                    # The token's hash only: the file says who holds the lock,
                    # it does not let a reader act as the holder.
                    "token_sha256": _digest(new_token),
                }
            ).encode(),
            0,
        )
        with _guard:
            _held[key] = _Holding(new_token, f"{operation} by pid {os.getpid()} since {since}")
        try:
            yield new_token
        finally:
            with _guard:
                _held.pop(key, None)
            os.ftruncate(handle, 0)
    finally:
        os.close(handle)  # closing drops the lock


def lock_within(
    handle: int | IO[Any],
    timeout: float,
    refusal: Callable[[], GdlError],
    record_lock: bool = False,
    poll: float = 0.2,
) -> None:
    """Lock the open file ``handle`` exclusively, waiting at most ``timeout`` seconds.

    An ``flock``, or with ``record_lock`` a POSIX record lock (``lockf``: not shared
    with children the holder forks).  When the holder keeps it past ``timeout``,
    raises ``refusal()``: a caller holding an environment's lock never waits forever.
    """
    take = fcntl.lockf if record_lock else fcntl.flock
    deadline = time.monotonic() + timeout
    while True:
        try:
            take(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held elsewhere
            left = deadline - time.monotonic()
            if left <= 0:
                raise refusal() from None
            time.sleep(min(poll, left))


def remove_lock_file(lock_dir: str | os.PathLike[str], app: str, env: str) -> None:
    """Forget the environment's lock file (destroy calls this while holding it)."""
    (Path(lock_dir) / f"{naming.lock_name(app, env)}.lock").unlink(missing_ok=True)
