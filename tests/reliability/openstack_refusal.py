"""``refused``: a build on OpenStack, through the real ``salt-run gdl.build``, refused.

A master with gdl's OpenStack settings (the rig's, with each test's changes) is asked to
build; the fixture checks that the build was refused in one printable line, with a
non-zero exit, and that it made nothing: no key, record or lock on the master, nothing of
the environment in the project. The rig's fixtures it takes (``rig``, ``demo``,
``openstack_section``) come from tests/openstack, through conftest.py here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gdl.providers.openstack import marks_of
from gdl_harness.salt_daemons import SaltMaster
from tests.support.runs import footprint, one_line_refusal


@pytest.fixture(scope="module")
def os_master(tmp_path_factory: pytest.TempPathFactory, rig) -> Iterator[SaltMaster]:
    """A master whose builds go to the rig's demo project (settings set by each test)."""
    daemon = SaltMaster(tmp_path_factory.mktemp("gdsosbad", numbered=True))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


def made_for(conn, env: str) -> list[str]:
    """Whatever in the project carries environment ``env``'s name or marks."""

    def mine(resource) -> bool:
        marks = marks_of(getattr(resource, "tags", None) or [])
        metadata = getattr(resource, "metadata", None) or {}
        return f"-{env}" in (resource.name or "") or env in (
            marks.get("gdl_env"),
            metadata.get("gdl_env"),
        )

    kinds = {
        "server": conn.compute.servers(),
        "port": conn.network.ports(),
        "security group": conn.network.security_groups(),
        "server group": conn.compute.server_groups(),
        "floating ip": conn.network.ips(),
    }
    return [f"{kind} {r.name or r.id}" for kind, found in kinds.items() for r in found if mine(r)]


@pytest.fixture
def refused(os_master: SaltMaster, openstack_section: dict, demo) -> Callable[..., str]:
    """``refused(env, size, servers, project, **settings)``: the one line of the refusal.

    Checks that it is all the operator sees, and that nothing was made in the master or
    in ``project`` (a connection to the project the settings point at; the demo project
    when not given).
    """

    def build(
        env: str, size: str = "m1.small", servers: int = 2, project: Any = None, **settings: Any
    ) -> str:
        os_master.gdl_settings = {
            "provider": "openstack",
            "openstack": {**openstack_section, **settings},
        }
        os_master.write_config()
        roots = (os_master.state_dir, os_master.pki_dir)
        before = footprint(*roots)
        result = os_master.run(
            "gdl.build",
            "app=blog",
            f"env={env}",
            f"servers={servers}",
            f"size={size}",
            timeout=180,
        )
        line = one_line_refusal(result)
        # Nothing made: no key, record or lock on the master, nothing in the project.
        assert footprint(*roots) == before
        assert made_for(project or demo, env) == []
        return line

    return build


@pytest.fixture
def env() -> str:
    return f"r{secrets.token_hex(3)}"
