"""The OpenStack provider's decisions on what the cloud lists: networks, images, states.

What these functions are given is plain data shaped as the cloud returns it; the rig
(tests/openstack, tests/reliability) shows the same rules against a real cloud.  Only
the 429 answer is faked at the SDK's level: the rig cannot be made to give one.
"""

import itertools
from email.utils import formatdate
from types import SimpleNamespace

import pytest
from openstack import exceptions as os_exceptions

from gdl.errors import ConfigError, NotFound
from gdl.providers import openstack as provider
from gdl.providers.base import BUILDING, ERROR, RUNNING, STOPPED
from gdl.providers.openstack import boot, records, routing

BASE = {"image": "debian-12", "network": "private", "master_address": "10.0.0.2"}


def settings(**overrides):
    return provider.OpenStackSettings.from_mapping({**BASE, **overrides})


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and ": " in text and len(text) < 300, text
    return text


# -- settings ---------------------------------------------------------------------------


def test_new_settings_default_to_floating_ips_a_local_disk_and_no_key():
    cfg = settings()
    assert cfg.floating_ip is True
    assert (cfg.subnet, cfg.key_name, cfg.volume_size) == (None, None, None)
    assert cfg.boot_from_volume is False


def test_new_settings_are_read_and_checked():
    cfg = settings(subnet="v4", floating_ip=False, boot_from_volume=True, volume_size=30)
    assert (cfg.subnet, cfg.floating_ip, cfg.boot_from_volume, cfg.volume_size) == (
        "v4",
        False,
        True,
        30,
    )
    for bad in ({"floating_ip": "no"}, {"boot_from_volume": 1}):
        with pytest.raises(ConfigError, match="is not true or false") as caught:
            settings(**bad)
        one_line(caught.value)
    for bad in (0, "20", True, 2.5):
        with pytest.raises(ConfigError, match="is not a number of GiB"):
            settings(volume_size=bad)


def test_an_ipv6_master_address_is_refused_in_one_line():
    with pytest.raises(ConfigError) as caught:
        settings(master_address="2001:db8::2")
    assert "is IPv6" in one_line(caught.value)


def test_the_masters_source_is_its_address_unless_given():
    cfg = settings()
    assert (cfg.master_address, cfg.master_source_cidr) == ("10.0.0.2", "10.0.0.2/32")
    assert cfg.master_security_group is None
    # Behind NAT: minions dial the public address, the cloud sees another source.
    cfg = settings(master_address="198.51.100.4", master_source_cidr="203.0.113.0/28")
    assert (cfg.master_address, cfg.master_source_cidr) == ("198.51.100.4", "203.0.113.0/28")
    assert settings(master_source_cidr="203.0.113.7").master_source_cidr == "203.0.113.7/32"


def test_a_named_master_needs_its_source_or_its_security_group():
    cfg = settings(master_address="salt.example.org", master_source_cidr="203.0.113.7/32")
    assert (cfg.master_address, cfg.master_source_cidr) == ("salt.example.org", "203.0.113.7/32")
    # A master in the cloud: its group stands for it in the rules.
    cfg = settings(master_address="salt.internal", master_security_group="salt-master")
    assert (cfg.master_source_cidr, cfg.master_security_group) == (None, "salt-master")
    with pytest.raises(ConfigError) as caught:
        settings(master_address="salt.example.org")
    assert "master_source_cidr" in one_line(caught.value)


def test_a_bad_master_source_is_refused_in_one_line():
    for bad in ("203.0.113.300/32", "2001:db8::/64", "salt.example.org"):
        with pytest.raises(ConfigError) as caught:
            settings(master_source_cidr=bad)
        assert "master_source_cidr" in one_line(caught.value)


# -- the network: by id or name, its subnet, its router's gateway -------------------------


def net(name="private", id="net-1"):
    return SimpleNamespace(name=name, id=id)


def subnet(name, version=4, network_id="net-1", id=None):
    return SimpleNamespace(
        name=name, id=id or f"id-{name}", ip_version=version, network_id=network_id
    )


def test_the_only_ipv4_subnet_is_taken_and_several_are_refused():
    assert only(subnet("v4"), subnet("v6", 6)).name == "v4"
    with pytest.raises(ConfigError, match=r"has 2 IPv4 subnets \(a, b\)") as caught:
        only(subnet("b"), subnet("a"))
    assert "gdl:openstack:subnet" in one_line(caught.value)
    with pytest.raises(NotFound, match="has no IPv4 subnet"):
        only(subnet("v6", 6))


def only(*subnets):
    return routing.only_ipv4_subnet(net(), subnets)


def test_a_named_subnet_must_be_an_ipv4_subnet_of_the_network():
    mine = subnet("v4")
    assert routing.checked_subnet("v4", net(), mine) is mine
    with pytest.raises(NotFound, match="is not a subnet of network 'private'"):
        routing.checked_subnet("other", net(), subnet("other", network_id="net-2"))
    with pytest.raises(NotFound):
        routing.checked_subnet("gone", net(), None)
    with pytest.raises(ConfigError, match="is IPv6") as caught:
        routing.checked_subnet("v6", net(), subnet("v6", 6))
    one_line(caught.value)


def test_floating_ips_come_from_the_gateway_of_the_subnets_router():
    v4 = subnet("v4")
    public = SimpleNamespace(id="ext-1", name="public")
    assert routing.floating_network_id(v4, {"ext-1"}, None) == "ext-1"
    assert routing.floating_network_id(v4, {"ext-1", "ext-2"}, public) == "ext-1"
    # A router this project cannot read: the setting is trusted, a guess is not made.
    assert routing.floating_network_id(v4, {routing.UNSEEN}, public) == "ext-1"
    with pytest.raises(ConfigError, match="external_network"):
        routing.floating_network_id(v4, {routing.UNSEEN}, None)
    with pytest.raises(ConfigError, match="cannot choose between"):
        routing.floating_network_id(v4, {"ext-1", "ext-2"}, None)


def test_a_subnet_without_a_router_to_the_external_network_is_refused():
    v4 = subnet("v4")
    with pytest.raises(ConfigError) as caught:
        routing.floating_network_id(v4, set(), None)
    line = one_line(caught.value)
    assert "subnet 'v4' has no router to an external network" in line
    assert "floating_ip: false" in line
    public = SimpleNamespace(id="ext-1", name="public")
    with pytest.raises(ConfigError, match="has no router to external network 'public'"):
        routing.floating_network_id(v4, {"ext-2"}, public)


def nova_server(status="ACTIVE", addresses=None, name="app-0-blog-dev"):
    return SimpleNamespace(
        name=name,
        id="srv-1",
        status=status,
        fault=None,
        image={"id": "img-1"},
        metadata={"gdl_app": "blog", "gdl_env": "dev", "gdl_role": "app", "gdl_size": "m1.small"},
        addresses=addresses or {},
    )


def test_server_addresses_are_read_under_the_networks_name_whatever_the_setting():
    # Nova keys addresses by network name; the provider passes the resolved name, so a
    # network given by id (as in the settings) still finds the server's address.
    addresses = {
        "other": [{"version": 4, "addr": "192.0.2.9"}],
        "private": [
            {"version": 6, "addr": "fd00::5"},
            {"version": 4, "addr": "10.0.0.5", "OS-EXT-IPS:type": "fixed"},
            {"version": 4, "addr": "203.0.113.5", "OS-EXT-IPS:type": "floating"},
        ],
    }
    record = records.server_record(nova_server(addresses=addresses), "private")
    assert record.address == "10.0.0.5"
    assert record.extra["public_address"] == "203.0.113.5"
    by_raw_id = records.server_record(nova_server(addresses=addresses), "net-1")
    assert by_raw_id.address is None  # what matching the raw id did: no address at all


# -- images and disks ----------------------------------------------------------------------


def image(id, created, status="active", min_disk=0, size=0, name="debian-12"):
    return SimpleNamespace(
        id=id, name=name, status=status, created_at=created, min_disk=min_disk, size=size
    )


def flavor(disk, name="m1.small"):
    return SimpleNamespace(id=f"fl-{name}", name=name, disk=disk)


def test_of_several_images_of_one_name_the_newest_active_one():
    images = [
        image("old", "2026-01-01T00:00:00Z"),
        image("new", "2026-06-01T00:00:00Z"),
        image("newest-queued", "2026-09-01T00:00:00Z", status="queued"),
    ]
    assert boot.newest_active(images).id == "new"
    assert boot.newest_active([images[2]]) is None
    assert boot.newest_active([]) is None


def test_a_flavor_with_no_disk_needs_boot_from_volume():
    with pytest.raises(ConfigError) as caught:
        boot.check_disk(settings(), image("i", "t"), flavor(0, "m1.nodisk"))
    line = one_line(caught.value)
    assert "flavor 'm1.nodisk' has no disk (disk 0)" in line and "boot_from_volume" in line
    boot.check_disk(settings(boot_from_volume=True), image("i", "t"), flavor(0))


def test_an_image_needing_more_disk_than_the_flavor_has_is_refused():
    big = image("i", "t", min_disk=40)
    with pytest.raises(ConfigError) as caught:
        boot.check_disk(settings(), big, flavor(20))
    assert "needs a 40 GiB disk and flavor 'm1.small' has 20 GiB" in one_line(caught.value)
    boot.check_disk(settings(), big, flavor(40))
    with pytest.raises(ConfigError, match="volume_size 30 GiB is below"):
        boot.check_disk(settings(boot_from_volume=True, volume_size=30), big, flavor(0))


def test_boot_options_boot_the_image_or_a_volume_and_name_a_key_only_when_set():
    img, fl = image("img-1", "t", min_disk=3, size=5 * boot.GIB + 1), flavor(0)
    local = boot.boot_options(settings(), img, flavor(20), None)
    assert local == {"flavor_id": "fl-m1.small", "image_id": "img-1"}
    assert "key_name" not in local
    assert boot.boot_options(settings(), img, flavor(20), "ops")["key_name"] == "ops"
    volume = boot.boot_options(settings(boot_from_volume=True), img, fl, None)
    assert "image_id" not in volume
    (mapping,) = volume["block_device_mapping"]
    assert mapping["uuid"] == "img-1" and mapping["boot_index"] == 0
    assert (mapping["source_type"], mapping["destination_type"]) == ("image", "volume")
    assert mapping["volume_size"] == 6  # the image's 5 GiB and a byte, rounded up
    assert mapping["delete_on_termination"] is True
    sized = boot.boot_options(settings(boot_from_volume=True, volume_size=50), img, fl, None)
    assert sized["block_device_mapping"][0]["volume_size"] == 50


# -- Nova's states -------------------------------------------------------------------------


def test_nova_states_that_never_end_on_their_own_are_not_building():
    assert records.state_of("ACTIVE") == RUNNING
    for status in ("BUILD", "REBUILD", "RESIZE", "MIGRATING", "HARD_REBOOT"):
        assert records.state_of(status) == BUILDING
    for status in ("SHELVED", "SHELVED_OFFLOADED", "RESCUE", "SHUTOFF", "SUSPENDED"):
        assert records.state_of(status) == STOPPED
    for status in ("UNKNOWN", "SOMETHING_NEW", None):
        assert records.state_of(status) == ERROR
    record = records.server_record(nova_server("UNKNOWN"))
    assert record.state == ERROR and "UNKNOWN" in record.fault


def test_soft_deleted_counts_as_deleted():
    assert {"SOFT_DELETED", "DELETED"} <= records.GONE
    assert not records.GONE & set(records.TRANSITIONAL)


# -- API manners: 429 and polling ----------------------------------------------------------


def too_many_requests(retry_after=None):
    """A 429 as openstacksdk raises it, with the response's headers."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    response = SimpleNamespace(status_code=429, headers=headers)
    error = os_exceptions.HttpException(message="Too Many Requests", response=response)
    error.status_code = 429
    return error


def test_429_is_retried_after_its_retry_after():
    answers = [too_many_requests("3"), too_many_requests(None), "made"]
    pauses = []

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert provider.retry(call, sleep=pauses.append) == "made"
    assert pauses == [3.0, 2.0]  # as asked; then the usual back-off's second step


def test_retry_after_is_bounded_and_read_as_seconds_or_a_date():
    assert provider.retry_after(too_many_requests("7")) == 7.0
    assert provider.retry_after(too_many_requests("86400")) == 60.0
    assert provider.retry_after(too_many_requests("soon")) is None
    dated = too_many_requests(formatdate(1_000_030, usegmt=True))
    assert provider.retry_after(dated, now=lambda: 1_000_000.0) == pytest.approx(30.0)
    assert provider.retry_after(too_many_requests(formatdate(0, usegmt=True))) == 0.0
    server_error = os_exceptions.HttpException(message="boom")
    server_error.status_code = 503
    assert provider.retry_after(server_error) is None


def test_429_retries_are_bounded():
    calls = []

    def call():
        calls.append(1)
        raise too_many_requests("1")

    with pytest.raises(os_exceptions.HttpException):
        provider.retry(call, attempts=3, sleep=lambda _: None)
    assert len(calls) == 3


def test_polling_backs_off_up_to_a_ceiling():
    delays = provider.poll_delays()
    taken = [next(delays) for _ in range(10)]
    assert taken[:3] == [1.0, 1.5, 2.25]
    assert all(a <= b for a, b in itertools.pairwise(taken))
    assert taken[-1] == 5.0
