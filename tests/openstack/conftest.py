"""The OpenStack rig for the provider tests: started when needed, stopped if started here.

The rig (``tests/openstack/rig/rig``) is a real OpenStack control plane on 127.0.0.1.
This session fixture uses a running rig as it is; otherwise it installs the rig's
packages when they are missing and starts it, and stops it at the end of the session.
The tests are skipped only when the packages are missing and ``GDL_RIG=0`` says not to
install them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack
import openstack.config
import openstack.exceptions
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gdl.config import Settings
from gdl.providers.openstack import OpenStackProvider, OpenStackSettings

RIG = Path(__file__).resolve().parent / "rig" / "rig"
ADMIN_CLOUD = "gdl-rig"
DEMO_CLOUD = "gdl-rig-demo"
# The clouds.yaml entry of a quota test's project of its own (quota_project).
QUOTA_CLOUD = "gdl-rig-quota"
IMAGE = "gdl-rig-image"
NETWORK = "private"
EXTERNAL_NETWORK = "public"
KEY_NAME = "gdl-test"
# The rig's cloud: the network namespace holding its bridges, taps and agents.
CLOUD_NETNS = "gdl-rig-cloud"
# A made-up master for the provider tests: their servers boot, and their minions knock
# at an address where nobody answers (tests/openstack/test_build.py runs a real one).
MASTER_ADDRESS = "10.231.0.250"
RIG_TIMEOUT = 1800


def _rig(*args: str, timeout: float = RIG_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RIG), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _must(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def rig() -> Iterator[dict[str, Any]]:
    """The running rig: its state dir and clouds.yaml."""
    started_here = False
    if os.environ.get("GDL_RIG_MANAGED") == "1":
        # tests/run.sh started the rig (maybe still starting) and stops it: wait for it.
        _must(_rig("up"), "tests/openstack/rig/rig up")
    elif _rig("status").returncode != 0:
        if _rig("installed").returncode != 0:
            if os.environ.get("GDL_RIG") == "0":
                pytest.skip(
                    "the OpenStack rig's packages are not installed and GDL_RIG=0: "
                    "run tests/openstack/rig/rig install (or unset GDL_RIG) to run these tests"
                )
            _must(_rig("install"), "tests/openstack/rig/rig install")
        _must(_rig("up"), "tests/openstack/rig/rig up")
        started_here = True
    state = Path(os.environ.get("GDL_RIG_STATE", "/var/lib/gdl-rig"))
    try:
        yield {"state": state, "clouds_file": state / "clouds.yaml", "cloud_netns": CLOUD_NETNS}
    finally:
        if started_here:
            _must(_rig("down", timeout=300), "tests/openstack/rig/rig down")


def _connect(clouds_file: Path, cloud: str) -> openstack.connection.Connection:
    loader = openstack.config.OpenStackConfig(config_files=[str(clouds_file)])
    return openstack.connection.Connection(config=loader.get_one(cloud=cloud))


@pytest.fixture(scope="session")
def admin(rig: dict[str, Any]) -> openstack.connection.Connection:
    """The rig's admin (project admin)."""
    return _connect(rig["clouds_file"], ADMIN_CLOUD)


@pytest.fixture(scope="session")
def demo(rig: dict[str, Any]) -> openstack.connection.Connection:
    """The rig's demo project, where gdl works."""
    conn = _connect(rig["clouds_file"], DEMO_CLOUD)
    if conn.compute.find_keypair(KEY_NAME) is None:
        # Nobody logs in to the rig's servers: any valid public key does.
        public = (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        )
        # Another worker of the same session may make it meanwhile: theirs does as well.
        with contextlib.suppress(openstack.exceptions.ConflictException):
            conn.compute.create_keypair(name=KEY_NAME, public_key=public.decode())
    return conn


@pytest.fixture(scope="session")
def openstack_section(rig: dict[str, Any], demo: openstack.connection.Connection) -> dict:
    """The ``gdl: openstack:`` settings that point at the rig's demo project."""
    return {
        "cloud": DEMO_CLOUD,
        "clouds_file": str(rig["clouds_file"]),
        "image": IMAGE,
        "network": NETWORK,
        "external_network": EXTERNAL_NETWORK,
        "key_name": KEY_NAME,
        "master_address": MASTER_ADDRESS,
        # The rig's image has what Salt needs; cloud-init must not reach for a mirror.
        "minion_packages": [],
        # ... and Salt itself: the master builds no wheelhouse for it.
        "salt_in_image": True,
    }


@pytest.fixture
def make_provider(openstack_section: dict, tmp_path: Path) -> Callable[..., OpenStackProvider]:
    """An OpenStackProvider on the rig; keyword arguments override settings."""

    def make(**overrides: Any) -> OpenStackProvider:
        section = {**openstack_section, **overrides}
        settings = Settings(provider="openstack", state_dir=tmp_path / "gdl", openstack=section)
        return OpenStackProvider.from_settings(settings)

    return make


@pytest.fixture
def provider(make_provider: Callable[..., OpenStackProvider]) -> OpenStackProvider:
    return make_provider()


@pytest.fixture
def settings_of(openstack_section: dict) -> Callable[..., OpenStackSettings]:
    return lambda **overrides: OpenStackSettings.from_mapping({**openstack_section, **overrides})


@pytest.fixture
def env_name() -> Callable[[], str]:
    """Fresh environment names, so runs against a long-lived rig never meet old leftovers."""
    return lambda: f"t{secrets.token_hex(3)}"


@dataclass
class QuotaProject:
    """A project of its own, reached as the rig's admin user with the ``member`` role."""

    project: Any  # the Keystone project: its id and name
    conn: openstack.connection.Connection  # the admin user scoped to the project
    section: dict  # ``gdl: openstack:`` settings for it: a clouds.yaml of its own, in tmp


@pytest.fixture(scope="module")
def quota_project(
    admin: openstack.connection.Connection,
    openstack_section: dict,
    rig: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[QuotaProject]:
    """A project of its own, with its own network and router, for tests that change quotas.

    Test sessions may share one rig: quotas lowered on the shared demo project would
    fail another session's tests.  The project's clouds.yaml (``section``) is what a
    master reads: the admin user's credentials scoped to the project.  One project
    serves a test module (making one takes seconds): a test that lowers its quotas
    puts back the defaults (``admin.delete_compute_quotas``, ``delete_network_quotas``).
    The project goes at the end (its quotas with it).
    """
    project = admin.identity.create_project(
        name=f"gdl-quota-{secrets.token_hex(3)}", domain_id="default"
    )
    conn = None
    try:
        user = admin.identity.find_user("admin")
        member = admin.identity.find_role("member")
        admin.identity.assign_project_role_to_user(project, user, member)
        conn = admin.connect_as_project(
            {"id": project.id, "name": project.name, "domain_id": "default"}
        )
        network = conn.network.create_network(name=NETWORK)
        subnet = conn.network.create_subnet(
            network_id=network.id, ip_version=4, cidr="10.232.0.0/24", name=f"{NETWORK}-subnet"
        )
        # Floating IPs reach the subnet only through a router to the external network.
        public = conn.network.find_network(EXTERNAL_NETWORK)
        router = conn.network.create_router(
            name="router1", external_gateway_info={"network_id": public.id}
        )
        conn.network.add_interface_to_router(router, subnet_id=subnet.id)
        if conn.compute.find_keypair(KEY_NAME) is None:
            # Key pairs belong to users: this one is the admin user's.
            public = (
                Ed25519PrivateKey.generate()
                .public_key()
                .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            )
            conn.compute.create_keypair(name=KEY_NAME, public_key=public.decode())
        clouds = yaml.safe_load(Path(rig["clouds_file"]).read_text())
        entry = clouds["clouds"][ADMIN_CLOUD]
        auth = {
            key: value
            for key, value in entry["auth"].items()
            if key not in ("project_name", "project_domain_name")
        }
        clouds_file = tmp_path_factory.mktemp("quota") / "clouds.yaml"
        clouds_file.touch(mode=0o600)  # it holds the admin user's password
        clouds_file.write_text(
            yaml.safe_dump(
                {"clouds": {QUOTA_CLOUD: {**entry, "auth": {**auth, "project_id": project.id}}}}
            )
        )
        section = {**openstack_section, "cloud": QUOTA_CLOUD, "clouds_file": str(clouds_file)}
        yield QuotaProject(project=project, conn=conn, section=section)
    finally:
        if conn is not None:
            for router in conn.network.routers(project_id=project.id):
                for port in conn.network.ports(
                    device_id=router.id, device_owner="network:router_interface"
                ):
                    for fixed in port.fixed_ips:
                        conn.network.remove_interface_from_router(
                            router, subnet_id=fixed["subnet_id"]
                        )
                conn.network.delete_router(router)
            for network in conn.network.networks(project_id=project.id):
                for port in conn.network.ports(network_id=network.id):
                    conn.network.delete_port(port)
                conn.network.delete_network(network)
        admin.identity.delete_project(project)
