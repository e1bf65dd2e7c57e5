"""Where the load balancer pair is placed: hard anti-affinity, else soft, and the warnings.

The rig has one compute host, so a rig build shows the fallback (tests/openstack); here
the decisions around it, on fakes of what Nova answers.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gdl.errors import ProviderError
from gdl.providers.base import Server, ServerRequest
from gdl.providers.openstack import network as network_module
from gdl.providers.openstack import records, servers
from gdl.providers.openstack.provider import OpenStackProvider
from gdl.providers.openstack.settings import OpenStackSettings

HARD_GROUP = SimpleNamespace(id="g-hard", name="gdl-blog-dev-lb", policy="anti-affinity")
SOFT_GROUP = SimpleNamespace(id="g-soft", name="gdl-blog-dev-lb", policy="soft-anti-affinity")


def request(role: str = "lb") -> ServerRequest:
    return ServerRequest(
        name=f"{role}-1-blog-dev",
        app="blog",
        env="dev",
        role=role,
        size="m1.small",
        minion_public_key="",
        minion_private_key="",
        master_address="10.0.0.2",
        master_finger="",
    )


def nova_server(**fields: Any) -> SimpleNamespace:
    values = {"name": "lb-1-blog-dev", "id": "s-1", "metadata": {}, "addresses": {}}
    values.update(status="ACTIVE", fault=None, image={}, host_id="h-1")
    return SimpleNamespace(**{**values, **fields})


class FakeParts:
    def __init__(self, soft_supported: bool = True) -> None:
        self.soft_supported = soft_supported
        self.softened: list[tuple[str, str, str]] = []

    def soft_anti_affinity(self) -> bool:
        return self.soft_supported

    def soften(self, app: str, env: str, role: str) -> Any:
        self.softened.append((app, env, role))
        return SOFT_GROUP


def maker(parts: FakeParts, outcomes: list[Any]) -> tuple[servers.Servers, list[Any]]:
    """Servers whose boots give ``outcomes`` in turn; the groups each boot was made in."""
    cloud = SimpleNamespace(owned_servers=lambda app, env: [])
    made = servers.Servers(cloud, parts)  # type: ignore[arg-type]
    groups: list[Any] = []

    def boot(req, env_parts, image, flavor, key_name, server, deadline, source=None):
        groups.append(env_parts.server_groups[req.role])
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    made._boot = boot  # type: ignore[method-assign]
    return made, groups


def env_parts(group: Any, role: str = "lb") -> Any:
    return SimpleNamespace(server_groups={role: group}, network=SimpleNamespace(name="private"))


def no_host() -> servers.NoValidHost:
    return servers.NoValidHost("server lb-1-blog-dev went to ERROR (No valid host was found)", "")


def test_a_load_balancer_with_no_valid_host_is_made_again_in_a_soft_group():
    parts = FakeParts()
    made, groups = maker(parts, [no_host(), nova_server()])
    shown: list[str] = []
    where = env_parts(HARD_GROUP)
    record = made._create_one(request(), where, None, None, None, 0.0, shown.append)
    assert record.name == "lb-1-blog-dev"
    assert groups == [HARD_GROUP, SOFT_GROUP]
    assert parts.softened == [("blog", "dev", "lb")]
    assert where.server_groups["lb"] is SOFT_GROUP  # the other builders of this call too
    assert shown == ["lb-1-blog-dev is running on OpenStack"]


@pytest.mark.parametrize(
    ("group", "soft_supported"),
    [(SOFT_GROUP, True), (HARD_GROUP, False)],
    ids=["already soft", "no soft-anti-affinity in this cloud"],
)
def test_no_valid_host_is_an_error_when_there_is_nothing_to_fall_back_to(group, soft_supported):
    parts = FakeParts(soft_supported)
    made, _groups = maker(parts, [no_host()])
    with pytest.raises(servers.NoValidHost):
        made._create_one(request(), env_parts(group), None, None, None, 0.0, print)
    assert parts.softened == []


def test_other_errors_do_not_fall_back():
    parts = FakeParts()
    made, _groups = maker(parts, [ProviderError("server lb-1-blog-dev went to ERROR (disk)", "")])
    with pytest.raises(ProviderError) as caught:
        made._create_one(request(), env_parts(HARD_GROUP), None, None, None, 0.0, print)
    assert not isinstance(caught.value, servers.NoValidHost)
    assert parts.softened == []


@pytest.mark.parametrize(
    ("fault", "no_valid_host"),
    [
        ("No valid host was found. There are not enough hosts available.", True),
        (
            "Exceeded maximum number of retries. Exhausted all hosts available for retrying "
            "build failures for instance 1.",
            True,
        ),
        ("Build of instance 1 aborted: Volume 2 did not finish being created", False),
    ],
)
def test_novas_faults_for_no_host_are_told_apart(fault, no_valid_host):
    failed = nova_server(status="ERROR", fault={"message": fault})
    conn = SimpleNamespace(compute=SimpleNamespace(get_server=lambda server_id: failed))
    made = servers.Servers(SimpleNamespace(conn=conn), FakeParts())  # type: ignore[arg-type]
    made._delete_one = lambda name, server, deadline: True  # type: ignore[method-assign]
    with pytest.raises(ProviderError) as caught:
        made._wait_active("lb-1-blog-dev", failed, 1e12)
    assert isinstance(caught.value, servers.NoValidHost) is no_valid_host
    assert "removed" in caught.value.problem


def test_the_load_balancers_ask_for_hard_anti_affinity_and_app_servers_for_soft():
    parts = network_module.Parts(SimpleNamespace(conn=None))  # type: ignore[arg-type]
    parts.soft_anti_affinity = lambda: True  # type: ignore[method-assign]
    assert parts._anti_affinity_policy("lb") == "anti-affinity"
    assert parts._anti_affinity_policy("app") == "soft-anti-affinity"
    parts.soft_anti_affinity = lambda: False  # type: ignore[method-assign]
    assert parts._anti_affinity_policy("app") == "anti-affinity"


def provider_with(lbs: list[Server], groups: list[Any]) -> OpenStackProvider:
    cfg = OpenStackSettings.from_mapping(
        {"image": "i", "network": "n", "master_address": "10.0.0.2"}
    )
    conn = SimpleNamespace(compute=SimpleNamespace(server_groups=lambda: groups))
    made = OpenStackProvider(cfg, connection=conn)  # type: ignore[arg-type]
    made.list_servers = lambda app=None, env=None: lbs  # type: ignore[method-assign]
    return made


def lb_record(index: int, host_id: str | None) -> Server:
    fields = {} if host_id is None else {"host_id": host_id}
    server = nova_server(name=f"lb-{index}-blog-dev", id=f"s-{index}", **fields)
    if host_id is None:
        del server.host_id
    server.metadata = {"gdl_app": "blog", "gdl_env": "dev", "gdl_role": "lb"}
    return records.server_record(server)


def test_load_balancers_on_one_host_are_warned_of():
    warnings = provider_with([lb_record(0, "h-1"), lb_record(1, "h-1")], [HARD_GROUP])
    (warning,) = warnings.placement_warnings("blog", "dev")
    assert warning.startswith("lb-0-blog-dev and lb-1-blog-dev run on the same host")


def test_load_balancers_apart_or_unknown_are_not_warned_of():
    assert (
        provider_with([lb_record(0, "h-1"), lb_record(1, "h-2")], [HARD_GROUP]).placement_warnings(
            "blog", "dev"
        )
        == []
    )
    assert (
        provider_with([lb_record(0, None), lb_record(1, None)], [HARD_GROUP]).placement_warnings(
            "blog", "dev"
        )
        == []
    )
    assert (
        provider_with([lb_record(0, "h-1")], [HARD_GROUP]).placement_warnings("blog", "dev") == []
    )


def test_a_soft_group_is_warned_of():
    (warning,) = provider_with(
        [lb_record(0, "h-1"), lb_record(1, "h-2")], [SOFT_GROUP]
    ).placement_warnings("blog", "dev")
    assert "soft-anti-affinity (server group gdl-blog-dev-lb)" in warning
