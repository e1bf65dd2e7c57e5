"""A silent server's console on OpenStack: the end of what Nova keeps of it, never an error."""

from types import SimpleNamespace

from openstack import exceptions as os_exceptions

from gdl.providers import openstack as provider
from tests.support.fake_openstack import PROJECT, FakeConnection

SETTINGS = {"image": "debian-12", "network": "private", "master_address": "10.0.0.2"}
NAME = "app-0-blog-dev"


def with_server(console) -> tuple[provider.OpenStackProvider, list]:
    conn = FakeConnection(PROJECT)
    server = SimpleNamespace(
        id="srv-1", name=NAME, status="ACTIVE", metadata={"gdl_app": "blog", "gdl_env": "dev"}
    )
    conn.compute.servers = lambda **_: [server]
    asked = []

    def console_output(found, length=None):
        asked.append((found.id, length))
        if isinstance(console, Exception):
            raise console
        return {"output": console}

    conn.compute.get_server_console_output = console_output
    made = provider.OpenStackProvider(
        provider.OpenStackSettings.from_mapping(SETTINGS), connection=conn
    )
    return made, asked


def test_the_console_tail_is_the_last_lines_nova_returns():
    made, asked = with_server("\n".join(f"line {i}" for i in range(1, 41)) + "\n")
    assert made.console_tail(NAME, 20) == [f"line {i}" for i in range(21, 41)]
    assert asked == [("srv-1", 20)]
    assert made.console_tail("app-9-blog-dev") == []  # no such server


def test_a_console_nova_cannot_give_is_empty_not_an_error():
    error = os_exceptions.HttpException(message="console unavailable", details="no")
    error.status_code = 409
    made, _ = with_server(error)
    assert made.console_tail(NAME) == []
