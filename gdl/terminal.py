"""What reaches the operator's terminal during a gdl command: gdl's lines, not Salt's noise.

Salt warns on stderr about objects its own commands leave to the garbage
collector ("unclosed MasterEvent ..."), its orchestration warns once per minion
whose state run returned no state results ("Output from salt state not
highstate", a failure gdl reports in one line of its own), and its LocalClient
prints "No minions matched the target ..." on stdout when a job finds no minion
(gdl reports that case in its own words).  None says anything the operator can use.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator

# The loggers Salt's "unclosed ..." warnings come from (salt.utils.resource_warnings callers).
NOISY_LOGGERS = (
    "salt.client",
    "salt.loaded.int.states.saltmod",  # the orchestration's salt.state steps
    "salt.minion",
    "salt.runner",
    "salt.wheel",
    "salt.transport.tcp",
    "salt.transport.ws",
    "salt.utils.asynchronous",
    "salt.utils.event",
    "salt.utils.resource_warnings",
)
STRAY_LINES = ("No minions matched the target.",)
# How Salt's log records that gdl keeps off the terminal begin.
NOISE = ("unclosed ", "Output from salt state not highstate")


class SaltNoise(logging.Filter):
    """Drops Salt's log records that begin as one of :data:`NOISE`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("salt.") and str(record.msg).startswith(NOISE))


def quiet_salt_noise() -> None:
    """Keep Salt's leak warnings (and the rest of :data:`NOISE`) off the terminal.

    salt-run itself leaves its runner client and master minion to the garbage
    collector, which then warns on stderr.  The filter sits on the handlers and
    on the loggers that warn, so a warning at exit, after Salt removed its
    console handler and Python's last-resort handler would print it, is dropped too.
    """
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SaltNoise) for f in handler.filters):
            handler.addFilter(SaltNoise())
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SaltNoise) for f in logger.filters):
            logger.addFilter(SaltNoise())
    # The same, as Python warnings (Salt's transports warn so, with a stack).
    warnings.filterwarnings("ignore", message="Unclosed transport")
    # Salt's loader imports the deprecated crypt module when an orchestration step
    # loads execution modules (the file.* checks of orch/build.sls): not the operator's.
    warnings.filterwarnings("ignore", message="'crypt' is deprecated", category=DeprecationWarning)


class StrayLineFilter(io.TextIOBase):
    """A stdout that passes every line on but Salt's :data:`STRAY_LINES`."""

    def __init__(self, target: io.TextIOBase) -> None:
        super().__init__()
        self.target = target
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._partial += text
            *whole, self._partial = self._partial.split("\n")
            for line in whole:
                if not line.startswith(STRAY_LINES):
                    self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        with self._lock:
            # A partial line is kept until it ends, unless it cannot be a stray one.
            if self._partial and not any(
                s.startswith(self._partial) or self._partial.startswith(s) for s in STRAY_LINES
            ):
                self.target.write(self._partial)
                self._partial = ""
        self.target.flush()

    def release(self) -> None:
        with self._lock:
            if self._partial and not self._partial.startswith(STRAY_LINES):
                self.target.write(self._partial)
            self._partial = ""
        self.target.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.target, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")


def _unlock_after_fork() -> None:
    # A child forked while another thread wrote (salt-cloud's workers) starts unlocked.
    if isinstance(sys.stdout, StrayLineFilter):
        sys.stdout._lock = threading.Lock()


os.register_at_fork(after_in_child=_unlock_after_fork)


@contextlib.contextmanager
def quiet_stray_lines() -> Iterator[None]:
    """Drop Salt's stray stdout lines while the block runs (in every thread of the process)."""
    if isinstance(sys.stdout, StrayLineFilter):
        yield
        return
    original = sys.stdout
    stdout = StrayLineFilter(original)
    sys.stdout = stdout
    try:
        yield
    finally:
        stdout.release()
        sys.stdout = original
