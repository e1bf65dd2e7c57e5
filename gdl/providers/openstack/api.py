"""Calling the cloud: the connection, bounded retries, and failures in the operator's words.

Also keeps the user data (which holds a minion's private key) out of the API bodies that
keystoneauth and openstacksdk log at DEBUG.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import openstack
import openstack.config
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions

from gdl.errors import CapacityError, ConfigError, CredentialsError, GdlError, ProviderError
from gdl.providers.openstack.settings import OpenStackSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

# What openstacksdk and keystoneauth raise when a call fails.
API_ERRORS = (os_exceptions.SDKException, ks_exceptions.ClientException)

# HTTP answers worth another try: the cloud is busy or briefly inconsistent.
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
RETRY_ATTEMPTS = 5
RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 8.0
# 429 Too Many Requests: the cloud's rate limit. Its Retry-After is obeyed, up to this
# (keystoneauth's own status retries would obey any Retry-After, an hour as well).
TOO_MANY_REQUESTS = 429
RETRY_AFTER_MAX = 60.0
# Polling for a state Nova reaches on its own: often at first, then less and less.
POLL_FIRST_DELAY = 1.0
POLL_MAX_DELAY = 5.0
POLL_FACTOR = 1.5


def is_transient(error: BaseException, conflict_is_transient: bool = False) -> bool:
    """True for errors a bounded retry may get past (5xx, 429, lost connections, a busy port)."""
    if isinstance(error, os_exceptions.HttpException):
        status = error.status_code or 0
        return (
            status in TRANSIENT_STATUS
            or status == TOO_MANY_REQUESTS
            or (conflict_is_transient and status == 409)
        )
    return isinstance(
        error,
        ks_exceptions.ConnectFailure
        | ks_exceptions.ConnectTimeout
        | ks_exceptions.RetriableConnectionFailure,
    )


def retry(
    call: Callable[[], T],
    conflict_is_transient: bool = False,
    attempts: int = RETRY_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, tried again with growing pauses while it fails transiently."""
    delay = RETRY_FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if attempt == attempts or not is_transient(error, conflict_is_transient):
                raise
            log.info("OpenStack call failed (%s), try %d of %d", _reason(error), attempt, attempts)
            asked = retry_after(error)
            sleep(delay if asked is None else asked)
            delay = min(delay * 2, RETRY_MAX_DELAY)
    raise AssertionError("unreachable")


def create_once(
    create: Callable[[], T],
    made_before: Callable[[], T | None],
    attempts: int = RETRY_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``create()``, never sent again blindly: after a transient failure, ``made_before()``.

    A 5xx or a lost connection may come after the cloud made the resource (a proxy's
    504 in front of a slow API, a connection cut before the answer): what the failed
    attempt made is looked for first (``made_before``, by name and mark) and kept; only
    when nothing is there is the create sent again.
    """
    delay = RETRY_FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return create()
        except Exception as error:
            if attempt == attempts or not is_transient(error):
                raise
            log.info(
                "OpenStack create failed (%s), try %d of %d", _reason(error), attempt, attempts
            )
            asked = retry_after(error)
            sleep(delay if asked is None else asked)
            delay = min(delay * 2, RETRY_MAX_DELAY)
            found = retry(made_before, sleep=sleep)
            if found is not None:
                log.info("the failed create had made it: kept")
                return found
    raise AssertionError("unreachable")


def retry_after(error: BaseException, now: Callable[[], float] = time.time) -> float | None:
    """The pause a 429 answer asks for (its Retry-After, seconds or a date), bounded."""
    if not isinstance(error, os_exceptions.HttpException):
        return None
    if error.status_code != TOO_MANY_REQUESTS:
        return None
    response: Any = getattr(error, "response", None)
    value = (getattr(response, "headers", None) or {}).get("Retry-After")
    if not value:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def poll_delays(
    first: float = POLL_FIRST_DELAY, factor: float = POLL_FACTOR, most: float = POLL_MAX_DELAY
) -> Iterator[float]:
    """Pauses between polls: ``first``, growing by ``factor`` up to ``most``."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, most)


def find(finder: Callable[..., T], name_or_id: str) -> T | None:
    """``finder(name_or_id)`` (an SDK ``find_*``), None when nothing matches."""
    try:
        return finder(name_or_id, ignore_missing=False)
    except os_exceptions.NotFoundException:
        return None


def _reason(error: BaseException) -> str:
    """The cloud's own words for an error, on one line."""
    if isinstance(error, os_exceptions.HttpException):
        text = error.details or error.message or str(error)
        status = f"HTTP {error.status_code}: " if error.status_code else ""
        return " ".join(f"{status}{text}".split())[:300]
    return " ".join(str(error).split())[:300] or type(error).__name__


# What keystoneauth's connection errors carry: the URL, and the system's reason deep in
# urllib3's own message ("[Errno 111] Connection refused", "[Errno -2] Name or service ...").
_URL = re.compile(r"https?://[^\s'\"]+")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _unreachable(error: BaseException) -> str:
    """Where a connection that failed went and why, in a few words: ``at URL (reason)``."""
    text = str(error)
    url = _URL.search(text)
    if url is None:
        return f"({_reason(error)[:150]})"
    errno = _ERRNO.search(text)
    if errno is not None:
        why = errno[1].strip()
    elif isinstance(error, ks_exceptions.ConnectTimeout):
        why = "no answer in time"
    else:
        why = "connection failed"
    return f"at {url[0].rstrip(':.,')[:120]} ({why[:80]})"


def translate(error: BaseException, doing: str) -> GdlError:
    """An SDK/keystoneauth error as the one-line GdlError the operator reads."""
    if isinstance(error, GdlError):
        return error
    if isinstance(error, ks_exceptions.Unauthorized) or (
        isinstance(error, os_exceptions.HttpException) and error.status_code == 401
    ):
        return CredentialsError(
            "OpenStack rejected the credentials",
            "check the user name, password and project in clouds.yaml or the OS_* variables",
        )
    if isinstance(error, ks_exceptions.ConnectFailure | ks_exceptions.ConnectTimeout):
        return ProviderError(
            f"cannot reach OpenStack {_unreachable(error)} while {doing}",
            "check the auth_url and that the cloud's API endpoints answer from this master",
        )
    if (
        isinstance(error, os_exceptions.HttpException)
        and error.status_code in (403, 409, 413)
        and "quota" in _reason(error).lower()
    ):
        return CapacityError(
            f"OpenStack quota exceeded while {doing} ({_reason(error)})",
            "raise the project's quota or ask for fewer or smaller servers",
        )
    return ProviderError(
        f"OpenStack failed while {doing} ({_reason(error)})",
        "fix the cause and run the same command again: it continues where it stopped",
    )


# keystoneauth logs request and response bodies at DEBUG (salt-cloud -l debug shows them)
# and masks passwords and tokens only; a server's user data holds its minion's private key.
_USER_DATA = re.compile(r'("(?:OS-EXT-SRV-ATTR:)?user_data"\s*:\s*)"[^"]*"')
_LOGGERS_WITH_BODIES = (
    "keystoneauth.session",
    "keystoneauth.session.request",
    "keystoneauth.session.body",
    "keystoneauth.session.response",
    "openstack",
    "openstack.compute",
)


class RedactUserData(logging.Filter):
    """Replace user data in log records with a placeholder."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "user_data" in message:
            record.msg = _USER_DATA.sub(r'\1"<redacted>"', message)
            record.args = None
        return True


def redact_user_data_in_logs() -> None:
    """Install :class:`RedactUserData` on the loggers that print API bodies (once)."""
    for name in _LOGGERS_WITH_BODIES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUserData) for f in logger.filters):
            logger.addFilter(RedactUserData())


# keystoneauth warns when it cannot fetch the auth_url's version document, then goes on
# with the version the URL names: a cloud that cannot be reached at all is then refused
# in gdl's own line, which the warning would follow onto the operator's terminal.
_DISCOVERY_LOGGER = "keystoneauth.identity.generic.base"
_DISCOVERY_FALLBACK = "Failed to discover available identity versions"


class DiscoveryFallbackAsInfo(logging.Filter):
    """Logs keystoneauth's version discovery fallback at INFO: in the log, off the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith(_DISCOVERY_FALLBACK):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def log_discovery_fallback_as_info() -> None:
    """Install :class:`DiscoveryFallbackAsInfo` on keystoneauth's logger (once)."""
    logger = logging.getLogger(_DISCOVERY_LOGGER)
    if not any(isinstance(f, DiscoveryFallbackAsInfo) for f in logger.filters):
        logger.addFilter(DiscoveryFallbackAsInfo())


def connect(cfg: OpenStackSettings) -> openstack.connection.Connection:
    """A connection for the configured cloud; a clear ConfigError when it is not configured."""
    log_discovery_fallback_as_info()
    cloud = cfg.cloud or os.environ.get("OS_CLOUD")
    if cloud is None and not os.environ.get("OS_AUTH_URL"):
        raise ConfigError(
            "no OpenStack cloud is configured",
            "set gdl:openstack:cloud to a clouds.yaml entry, or OS_CLOUD, "
            "or source the project's openrc before starting the master",
        )
    if cfg.clouds_file and not os.access(cfg.clouds_file, os.R_OK):
        # openstacksdk skips a missing file: the cloud would then be "not in clouds.yaml".
        raise ConfigError(
            f"gdl:openstack:clouds_file {cfg.clouds_file!r} is not a file the master can read",
            "give the path of the clouds.yaml that holds the cloud, or leave it out",
        )
    try:
        loader = openstack.config.OpenStackConfig(
            config_files=[cfg.clouds_file] if cfg.clouds_file else None,
            app_name="gdl",
        )
        # api_timeout bounds each request (keystoneauth's session timeout): a cloud
        # that stops answering fails the call instead of holding the build's lock.
        region = loader.get_one(cloud=cloud, api_timeout=cfg.api_timeout)
    except os_exceptions.ConfigException as error:
        if cloud and "was not found" in str(error):
            names = ", ".join(sorted(loader.get_cloud_names())) or "none"
            raise ConfigError(
                f"cloud {cloud!r} is not in clouds.yaml (clouds there: {names})",
                "fix gdl:openstack:cloud or OS_CLOUD, or add the cloud to clouds.yaml",
            ) from None
        raise ConfigError(f"the OpenStack configuration is unusable ({error})", "fix it") from None
    except ks_exceptions.MissingRequiredOptions as error:
        raise ConfigError(
            f"the OpenStack credentials are incomplete ({error})",
            "complete clouds.yaml or the OS_* variables",
        ) from None
    return openstack.connection.Connection(config=region)
