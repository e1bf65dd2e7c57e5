"""Fixtures shared by every test tier: real Salt daemons in temporary roots.

``salt_master`` / ``salt_minion`` give each test its own master (127.0.0.1, free
ports) and a minion on this machine with a preseeded key; ``module_salt_master``
/ ``module_salt_minion`` share one pair across a test module;
``salt_master_factory`` makes masters with other settings (interface, ``gdl:``
settings, extra config).  Whatever happens in a test, its daemons are stopped by
PID, and the session ends by stopping any daemon the harness still knows of.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    # So tests import the shared support code as ``tests.support``.
    sys.path.insert(0, str(REPO_ROOT))

from gdl_harness import salt_process  # noqa: E402
from gdl_harness.salt_daemons import SaltMaster, SaltMinion  # noqa: E402
from tests import module_seconds  # noqa: E402

MINION_ID = "app-1-harness-test"


def _short_root(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    # Short roots keep Salt's unix sockets well inside the 108-byte path limit.
    return tmp_path_factory.mktemp(name, numbered=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest modules first (tests/module_seconds.py says why), a module not yet
    measured before them all; each module's tests keep their order."""
    seconds = module_seconds.load()

    def slowest_first(item: pytest.Item) -> float:
        module = item.path.relative_to(REPO_ROOT).as_posix()
        return -seconds.get(module, float("inf"))

    items.sort(key=slowest_first)


@pytest.fixture(scope="session", autouse=True)
def salt_daemon_safety_net() -> Iterator[None]:
    """At the end of the session, stop every daemon the harness started and still runs."""
    yield
    # Salt keeps log records of in-process code (gdl's warnings) in a handler of its
    # own until its logging is set up, and writes them at exit to the stderr it saw
    # first: pytest's capture, closed by then ("--- Logging error ---"). Hand them to
    # the handlers there are now instead.
    from salt._logging.impl import shutdown_temp_handler

    shutdown_temp_handler()
    leftovers = salt_process.stop_all()
    if leftovers:
        sys.stderr.write(
            "\nsalt daemons still running at the end of the session were stopped:\n  "
            + "\n  ".join(leftovers)
            + "\n"
        )


@pytest.fixture
def salt_master_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., SaltMaster]]:
    """Make and start masters: ``salt_master_factory(interface=..., gdl_settings=...)``."""
    started: list[SaltMaster] = []

    def make(
        interface: str = "127.0.0.1",
        *,
        gdl_settings: dict[str, Any] | None = None,
        extra_config: dict[str, Any] | None = None,
        start: bool = True,
    ) -> SaltMaster:
        master = SaltMaster(
            _short_root(tmp_path_factory, "master"),
            interface,
            gdl_settings=gdl_settings,
            extra_config=extra_config,
        )
        started.append(master)
        if start:
            master.start()
        return master

    try:
        yield make
    finally:
        for master in started:
            master.stop()


@pytest.fixture
def salt_master(salt_master_factory: Callable[..., SaltMaster]) -> SaltMaster:
    """A running salt-master on 127.0.0.1 in a temporary root, for one test."""
    return salt_master_factory()


@pytest.fixture
def salt_minion(
    salt_master: SaltMaster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaltMinion]:
    """A running minion (id ``MINION_ID``) of ``salt_master``, answering test.ping."""
    minion = SaltMinion(_short_root(tmp_path_factory, "minion"), salt_master, MINION_ID)
    try:
        minion.start()
        yield minion
    finally:
        minion.stop()


@pytest.fixture(scope="module")
def module_salt_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaltMaster]:
    """A running salt-master shared by the tests of one module."""
    master = SaltMaster(_short_root(tmp_path_factory, "master"))
    try:
        master.start()
        yield master
    finally:
        master.stop()


@pytest.fixture(scope="module")
def module_salt_minion(
    module_salt_master: SaltMaster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SaltMinion]:
    """A running minion of ``module_salt_master`` shared by the tests of one module."""
    minion_id = f"app-1-harness-m{uuid.uuid4().hex[:6]}"
    minion = SaltMinion(_short_root(tmp_path_factory, "minion"), module_salt_master, minion_id)
    try:
        minion.start()
        yield minion
    finally:
        minion.stop()
