"""The load balancers' tuning: build arguments checked, kept, and turned into haproxy settings.

``gdl.build ... health_interval=0.5 health_fall=3 health_rise=2 sticky=true
timeout_server=60`` sets how haproxy checks and balances the app servers.
Each value is checked here before anything is made; the environment's record
keeps the values given (:meth:`gdl.envstore.EnvRecord.with_lb_tuning`), so a
later build without them keeps them, and :func:`haproxy_settings` turns the
record's values into the keys of the lb role's ``haproxy`` map that
``gdl.pillar`` writes under ``gdl:roles:lb:haproxy``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gdl.errors import InvalidRequest
from gdl.spec import parse_bool, parse_count, shown

# The build arguments, in the order the runner documents them.
ARGUMENTS = ("health_interval", "health_fall", "health_rise", "sticky", "timeout_server")
HEALTH_INTERVAL_RANGE = (0.2, 60.0)  # seconds
HEALTH_COUNT_RANGE = (1, 10)
TIMEOUT_SERVER_RANGE = (1, 3600)  # seconds


def parse_seconds(name: str, value: Any, low: float, high: float, example: str) -> float:
    """Seconds from ``low`` to ``high``, to the millisecond: a number, or a string of one."""
    hint = (
        f"give seconds from {low:g} to {high:g}, to the millisecond, for example {name}={example}"
    )
    if isinstance(value, bool):
        raise InvalidRequest(f"{name}={shown(value)} is not a number of seconds", hint)
    if isinstance(value, str):
        text = value.strip()
        # ASCII digits and one dot only: float() also reads "inf", "1e3" and other scripts' digits.
        if not (text.isascii() and text.replace(".", "", 1).isdigit() and len(text) <= 12):
            raise InvalidRequest(f"{name}={shown(value)} is not a number of seconds", hint)
        value = float(text)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(f"{name}={shown(value)} is not a number of seconds", hint)
    if not low <= value <= high:
        raise InvalidRequest(f"{name}={value:g} is out of range", hint)
    if abs(value * 1000 - round(value * 1000)) > 1e-6:
        raise InvalidRequest(f"{name}={value:g} is finer than a millisecond", hint)
    return float(value)


def parse_lb_tuning(**given: Any) -> dict[str, Any]:
    """The tuning arguments given (None or '' means not given), checked; the others left out."""
    unknown = sorted(set(given) - set(ARGUMENTS))
    if unknown:
        raise InvalidRequest(f"unknown tuning {', '.join(unknown)}", f"use {', '.join(ARGUMENTS)}")
    chosen: dict[str, Any] = {}
    for name, value in given.items():
        if value is None or value == "":
            continue
        if name == "health_interval":
            chosen[name] = parse_seconds(name, value, *HEALTH_INTERVAL_RANGE, example="0.5")
        elif name in ("health_fall", "health_rise"):
            chosen[name] = parse_count(name, value, *HEALTH_COUNT_RANGE, example=2)
        elif name == "timeout_server":
            chosen[name] = parse_count(name, value, *TIMEOUT_SERVER_RANGE, example=30)
        else:
            chosen[name] = parse_bool(name, value)
    return chosen


def haproxy_settings(tuning: Mapping[str, Any]) -> dict[str, Any]:
    """The lb role's ``haproxy`` keys for a record's tuning: only those it sets."""
    settings: dict[str, Any] = {}
    if "health_interval" in tuning:
        settings["check_inter"] = f"{round(tuning['health_interval'] * 1000)}ms"
    if "health_fall" in tuning:
        settings["check_fall"] = tuning["health_fall"]
    if "health_rise" in tuning:
        settings["check_rise"] = tuning["health_rise"]
    if "timeout_server" in tuning:
        settings["timeout_server"] = f"{tuning['timeout_server']}s"
    if "sticky" in tuning:
        settings["sticky"] = tuning["sticky"]
    return settings
