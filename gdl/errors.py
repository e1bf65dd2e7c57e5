"""Errors that reach the operator.

Every error the product raises on purpose is a :class:`GdlError`.  Its string
form is one line that says what is wrong and what to do about it, so the
runner can print it as it is, without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class GdlError(Exception):
    """An error the operator can act on.

    ``problem`` says what is wrong, ``fix`` what to do; ``str()`` joins them
    into the single line the runner prints.  ``details`` (evidence such as the
    last lines of a server's console) follow that line, one per line, when given.
    """

    def __init__(self, problem: str, fix: str = "", details: Sequence[str] = ()) -> None:
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        self.details = tuple(line.rstrip() for line in details)
        super().__init__(str(self))

    @property
    def line(self) -> str:
        """What is wrong and what to do, on one line."""
        line = self.problem
        if self.fix:
            line = f"{line}: {self.fix}"
        # One line, whatever a caller passed in.
        return " ".join(line.split())

    def __str__(self) -> str:
        return "\n".join((self.line, *self.details))


class InvalidRequest(GdlError):
    """An argument of the request is missing, of the wrong type or out of range."""


class ConfigError(GdlError):
    """The master's gdl configuration is missing or wrong."""


class ProviderError(GdlError):
    """The provider refused or failed an operation."""


class CredentialsError(ProviderError):
    """The provider's credentials are missing or rejected."""


class CapacityError(ProviderError):
    """The provider cannot hold the request (quota, subnet, flavor)."""


class NameClash(ProviderError):
    """A resource with the requested name exists and is not ours."""


class MinionsSilent(ProviderError):
    """New servers' minions did not answer the master in time; ``silent`` names them."""

    def __init__(self, silent: Sequence[str], timeout: float, details: Sequence[str] = ()) -> None:
        self.silent = tuple(sorted(silent))
        self.timeout = timeout
        super().__init__(
            f"the minions of {', '.join(self.silent)} did not answer within {timeout:.0f} s",
            "check the servers' console or log, then run the build again: "
            "it replaces a server whose minion never joined",
            details,
        )


class NotFound(GdlError):
    """The environment, server or resource asked for does not exist."""


class LockHeld(GdlError):
    """Another operation on the same environment is running."""
