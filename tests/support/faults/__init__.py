"""Faults a test injects into the salt-run processes it starts (see sitecustomize.py here)."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def failing_hosts(*names: str) -> dict[str, str]:
    """The environment that makes the local hosts ``names`` fail to boot in a salt-run."""
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "GDL_TEST_FAIL_HOSTS": ",".join(names)}


def silent_hosts(*names: str, minion_timeout: float = 20) -> dict[str, str]:
    """The environment that breaks the first boot of local hosts ``names`` in a salt-run.

    Their salt-minion is replaced by a console that prints a few lines and hangs, so
    their minions never answer; the local provider waits ``minion_timeout`` seconds.
    """
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    return {
        "PYTHONPATH": path,
        "GDL_TEST_SILENT_HOSTS": ",".join(names),
        "GDL_TEST_MINION_TIMEOUT": str(minion_timeout),
    }
