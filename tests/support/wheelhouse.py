"""The servers' Salt wheelhouse for the tests: built once per machine, copied into each master.

A master builds its wheelhouse (:func:`gdl.salt_wheelhouse.ensure_salt_wheelhouse`)
under its own state dir, which a test master has anew each time: building it there
would cost every test run minutes of downloads and source builds.  The tests build it
once in a cache that outlives them (``GDL_TEST_WHEELHOUSE_CACHE``, by default
``~/.cache/gdl-tests/package-source``; the same lock and atomic rename as a master's
build, so two test sessions wait for one build) and copy it where a master would have
left it.  A new Salt version, server Python or platform is a new directory there.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from gdl import salt_wheelhouse

CACHE_VARIABLE = "GDL_TEST_WHEELHOUSE_CACHE"


def cache_root() -> Path:
    default = Path.home() / ".cache" / "gdl-tests" / salt_wheelhouse.PACKAGE_SOURCE_DIR
    return Path(os.environ.get(CACHE_VARIABLE) or default)


def cached_wheelhouse(target: salt_wheelhouse.Target) -> Path:
    """The wheelhouse of ``target`` in the tests' cache, built there when missing."""
    return salt_wheelhouse.ensure_salt_wheelhouse(cache_root(), target, python=sys.executable)


def seed_master(state_dir: Path, target: salt_wheelhouse.Target) -> Path:
    """Put the cached wheelhouse of ``target`` where a master with ``state_dir`` serves it."""
    built = cached_wheelhouse(target)
    served = salt_wheelhouse.wheelhouse_path(Path(state_dir) / "package-source", target)
    if not served.is_dir():
        # A copy, not a link: the package source serves no symbolic link.
        shutil.copytree(built, served)
    return served
