"""A client asking a URL at a steady pace in a thread, keeping every request's outcome.

The tests count what failed while something changed behind a URL; the
benchmarks also time each request and read which load balancer answered.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.client import HTTPResponse

# The header haproxy adds to say which load balancer answered.
LB_HEADER = "X-Load-Balancer"


@dataclass(frozen=True)
class Outcome:
    """One request: when it started and ended (``time.monotonic()``) and what came back."""

    started: float
    done: float
    ok: bool
    served_by: str  # the LB_HEADER of an answered request; '' when it failed
    error: str = ""  # why it failed; '' when it was answered


class Poller:
    """Asks ``url`` every ``interval`` seconds during the ``with`` block (at most ``limit`` s).

    ``context`` checks an https URL's certificate (default: the system's CAs).
    """

    def __init__(
        self,
        url: str,
        interval: float = 0.05,
        limit: float = 600,
        timeout: float = 2,
        context: ssl.SSLContext | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an HTTP URL: {url}")
        self.url = url
        self.interval = interval
        self.limit = limit
        self.timeout = timeout
        self.context = context
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def answered(self, response: HTTPResponse) -> bool:
        """Whether ``response`` counts as answered; a subclass may read more of it."""
        response.read()
        return response.status == 200

    @property
    def ok(self) -> int:
        """Requests answered so far."""
        return sum(1 for outcome in self.outcomes if outcome.ok)

    @property
    def failed(self) -> list[str]:
        """Why each failed request failed, in order."""
        return [outcome.error for outcome in self.outcomes if not outcome.ok]

    def failed_since(self, since: float) -> tuple[int, int]:
        """(failed, all) requests started at or after ``since``."""
        after = [outcome for outcome in self.outcomes if outcome.started >= since]
        return sum(1 for outcome in after if not outcome.ok), len(after)

    def _ask(self) -> Outcome:
        started = time.monotonic()
        ok, served_by, error = False, "", ""
        try:
            # An http(s) URL: checked in __init__.
            with urllib.request.urlopen(  # noqa: S310  # nosec B310
                self.url, timeout=self.timeout, context=self.context
            ) as response:
                ok = self.answered(response)
                if ok:
                    served_by = response.headers.get(LB_HEADER, "")
                else:
                    error = f"status {response.status}"
        except Exception as failure:
            error = repr(failure)
        return Outcome(started, time.monotonic(), ok, served_by, error)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.outcomes.append(self._ask())
            self._stop.wait(self.interval)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)
