"""One local cloud per fault module, and the "nothing left" check after a destroy."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from gdl_harness.local_cloud import LocalCloud, running_local_cloud
from tests.support.leftovers import HostTrace, assert_nothing_left

if os.geteuid() != 0:
    pytest.skip("local hosts need root", allow_module_level=True)


@pytest.fixture(scope="module")
def local_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    with running_local_cloud(tmp_path_factory.mktemp("gdf", numbered=True), tag="gdf") as cloud:
        yield cloud


@pytest.fixture
def nothing_left(local_cloud: LocalCloud) -> Callable[..., None]:
    """Call after a destroy: fails listing whatever of the environment remains."""

    def check(app: str, env: str, trace: HostTrace | None = None) -> None:
        assert_nothing_left(local_cloud, app, env, trace)

    return check
