"""One operation at a time per environment.

The lock is a POSIX record lock (``lockf``) on a file in the master's state
directory, so it dies with the process that holds it: a build killed half-way
never leaves a stale lock behind.  Unlike ``flock``, it is not shared with
children the holder forks (salt-cloud forks its parallel workers), so a
leftover worker never keeps an environment locked.  Within one process the
lock is re-entrant, because ``gdl.build`` holds it while the orchestration it
starts calls back into runner steps that take it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from gdl import naming
from gdl.errors import LockHeld

# (lock path, pid) -> depth.  Keyed by pid too: a forked child inherits this
# dict but not the lock, and must take the lock for itself.
_held: dict[tuple[str, int], int] = {}
_guard = threading.Lock()


def _describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return (
        f"{holder.get('operation', 'an operation')} by pid {holder.get('pid', '?')} "
        f"since {holder.get('since', '?')}"
    )


@contextlib.contextmanager
def env_lock(
    lock_dir: str | os.PathLike[str], app: str, env: str, operation: str, wait: float = 0
) -> Iterator[None]:
    """Hold the environment's lock for the duration of the block.

    Waits up to ``wait`` seconds for another holder, then raises LockHeld
    saying who holds it.
    """
    directory = Path(lock_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{naming.lock_name(app, env)}.lock"
    key = (str(path), os.getpid())
    with _guard:
        if _held.get(key):
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return

    deadline = time.monotonic() + wait
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held elsewhere
            os.close(handle)
            if time.monotonic() >= deadline:
                raise LockHeld(
                    f"{naming.env_id(app, env)} is busy: {_describe_holder(path)}",
                    "wait for it to finish, then run this again",
                ) from None
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
    try:
        os.ftruncate(handle, 0)
        os.pwrite(
            handle,
            json.dumps(
                {
                    "operation": operation,
                    "pid": os.getpid(),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            ).encode(),
            0,
        )
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                _held.pop(key, None)
            os.ftruncate(handle, 0)
    finally:
        os.close(handle)  # closing drops the lock


def remove_lock_file(lock_dir: str | os.PathLike[str], app: str, env: str) -> None:
    """Forget the environment's lock file (destroy calls this while holding it)."""
    (Path(lock_dir) / f"{naming.lock_name(app, env)}.lock").unlink(missing_ok=True)
