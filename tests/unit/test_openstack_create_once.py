"""A create is never sent again blindly after a 5xx or a lost connection.

What the failed attempt made is looked for first, by name and mark, and kept. The rig
cannot be made to answer 504 after it made something, so a stand-in connection
(tests/support/fake_openstack.py) does: its first create makes the resource, then fails.
"""

import time
from types import SimpleNamespace

import pytest
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions

from gdl import naming
from gdl.providers import openstack as provider
from gdl.providers.base import ServerRequest
from gdl.providers.openstack.api import create_once
from gdl.providers.openstack.marks import ROLE_VIP, vip_description
from tests.support.fake_openstack import PROJECT, FakeConnection

APP, ENV = "blog", "dev"
SETTINGS = {
    "image": "debian-12",
    "network": "private",
    "master_address": "10.0.0.2",
    "floating_ip": False,
}


def http_error(status: int) -> os_exceptions.HttpException:
    error = os_exceptions.HttpException(message="boom", details="boom")
    error.status_code = status
    return error


def no_pause(_: float) -> None:
    pass


def test_a_resource_the_failed_attempt_made_is_kept_not_made_again():
    made: list[str] = []

    def create():
        made.append("port")
        if len(made) == 1:
            raise http_error(504)  # the proxy gave up; the cloud made it all the same
        return "second"

    found = create_once(create, lambda: made[0] if made else None, sleep=no_pause)
    assert found == "port" and made == ["port"]


def test_when_the_failed_attempt_made_nothing_the_create_is_sent_again():
    calls = []

    def create():
        calls.append(1)
        if len(calls) == 1:
            raise ks_exceptions.ConnectFailure("reset")
        return "made"

    looked = []
    assert create_once(create, lambda: looked.append(1), sleep=no_pause) == "made"
    assert (len(calls), len(looked)) == (2, 1)


def test_a_refused_create_is_not_looked_for_nor_sent_again():
    calls, looked = [], []

    def create():
        calls.append(1)
        raise http_error(400)

    with pytest.raises(os_exceptions.HttpException):
        create_once(create, lambda: looked.append(1), sleep=no_pause)
    assert (calls, looked) == ([1], [])


def failing_after_making(conn: FakeConnection, method: str, status: int = 504) -> list[int]:
    """Make ``conn.network.<method>``'s first call make its resource, then fail."""
    real = getattr(conn.network, method)
    calls: list[int] = []

    def create(**fields):
        calls.append(1)
        made = real(**fields)
        if len(calls) == 1:
            raise http_error(status)
        return made

    setattr(conn.network, method, create)
    return calls


@pytest.fixture
def cloud(monkeypatch):
    monkeypatch.setattr("gdl.providers.openstack.api.time.sleep", no_pause)
    conn = FakeConnection(PROJECT)
    network = conn.network.add("network", name="private", is_router_external=False)
    conn.network.add(
        "subnet", name="private-subnet", network_id=network.id, ip_version=4, cidr="10.0.0.0/24"
    )
    made = provider.OpenStackProvider(
        provider.OpenStackSettings.from_mapping(SETTINGS), connection=conn
    )
    return made, conn


def of_kind(conn: FakeConnection, kind: str) -> list:
    return [r for r in conn.network.resources.values() if r.kind == kind]


def test_the_environments_parts_are_made_once_through_a_504_each(cloud):
    made, conn = cloud
    calls = {
        method: failing_after_making(conn, method)
        for method in ("create_security_group", "create_port", "create_ip")
    }
    made.ensure_env(APP, ENV)
    parts = made.parts.find(APP, ENV, made.cloud.network())
    made.parts.make_floating_ip(
        conn.network.add("network", name="public", is_router_external=True),
        parts.vip_port,
        {**naming.ownership(APP, ENV), naming.MARK_ROLE: ROLE_VIP},
        vip_description(APP, ENV),
    )
    # Each first create failed after making: nothing made twice, nothing deleted.
    assert len(calls["create_security_group"]) == 2  # one per role, neither sent again
    assert len(of_kind(conn, "security_group")) == 2
    assert (len(calls["create_port"]), len(of_kind(conn, "port"))) == (1, 1)
    assert (len(calls["create_ip"]), len(of_kind(conn, "ip"))) == (1, 1)
    assert conn.network.deleted == []


class Nova(SimpleNamespace):
    """Nova's servers for one test: the first create makes the server, then fails."""

    def __init__(self, compute) -> None:
        super().__init__(made=[], creates=0, compute=compute)

    def create_server(self, name, metadata, **_):
        self.creates += 1
        server = SimpleNamespace(
            id=f"srv-{self.creates}",
            name=name,
            metadata=metadata,
            status="ACTIVE",
            fault=None,
            addresses={},
            image={},
        )
        self.made.append(server)
        if self.creates == 1:
            raise ks_exceptions.ConnectTimeout("no answer")
        return server

    def servers(self, **_):
        return list(self.made)

    def get_server(self, server_id):
        return next(s for s in self.made if s.id == server_id)

    def __getattr__(self, name):
        return getattr(self.compute, name)


def test_a_server_whose_create_timed_out_is_kept_not_made_twice(cloud):
    made, conn = cloud
    nova = Nova(conn.compute)
    conn.compute = nova
    parts = made.parts.ensure(APP, ENV)
    port_calls = failing_after_making(conn, "create_port", status=502)
    request = ServerRequest(
        name=f"app-0-{APP}-{ENV}",
        app=APP,
        env=ENV,
        role="app",
        size="m1.small",
        minion_public_key="pub",
        minion_private_key="priv",
        master_address="10.0.0.2",
    )
    image, flavor = SimpleNamespace(id="img-1"), SimpleNamespace(id="flavor-1")
    record = made.servers._create_one(
        request, parts, image, flavor, None, time.monotonic() + 5, lambda _: None
    )
    assert record.provider_id == "srv-1" and nova.creates == 1
    ports = [p for p in of_kind(conn, "port") if p.name == request.name]
    assert (len(port_calls), len(ports)) == (1, 1)
