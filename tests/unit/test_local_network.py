"""The local cloud's address rules: subnet choice, allocation, VRRP router ids."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import time

import pytest

from gdl.errors import CapacityError, LockHeld
from gdl.providers.local import network

net = ipaddress.ip_network


def test_choose_cidr_skips_every_overlapping_network() -> None:
    taken = [net("10.0.0.0/24"), net("10.0.1.0/25"), net("10.0.2.7/32")]
    assert network.choose_cidr(taken, seed=0) == net("10.0.3.0/24")


def test_choose_cidr_ignores_the_default_route() -> None:
    assert network.choose_cidr([net("0.0.0.0/0")], seed=0) == net("10.0.0.0/24")


def test_choose_cidr_starts_at_the_seed_and_wraps() -> None:
    pools = [net("10.9.0.0/23")]  # two /24s
    assert network.choose_cidr([], seed=1, pools=pools) == net("10.9.1.0/24")
    assert network.choose_cidr([net("10.9.1.0/24")], seed=1, pools=pools) == net("10.9.0.0/24")


def test_choose_cidr_returns_none_when_everything_clashes() -> None:
    pools = [net("10.9.0.0/23")]
    assert network.choose_cidr([net("10.9.0.0/16")], pools=pools) is None


def test_choose_cidr_default_pools_are_private() -> None:
    chosen = network.choose_cidr([], seed=123456)
    assert chosen is not None and chosen.is_private and chosen.prefixlen == 24


def test_gateway_is_the_first_address() -> None:
    assert str(network.gateway_address(net("10.4.5.0/24"))) == "10.4.5.1"


def test_free_addresses_skip_the_gateway_and_used_ones() -> None:
    found = network.free_addresses(net("10.4.5.0/24"), ["10.4.5.2", "10.4.5.4"], 3)
    assert [str(a) for a in found] == ["10.4.5.3", "10.4.5.5", "10.4.5.6"]


def test_free_addresses_never_hand_out_network_or_broadcast() -> None:
    found = network.free_addresses(net("10.4.5.0/29"), [], 5)
    assert [str(a) for a in found] == [f"10.4.5.{i}" for i in range(2, 7)]


def test_free_addresses_full_subnet_is_one_clear_line() -> None:
    with pytest.raises(CapacityError) as caught:
        network.free_addresses(net("10.4.5.0/29"), ["10.4.5.2"], 5)
    message = str(caught.value)
    assert "\n" not in message
    assert "10.4.5.0/29" in message and "4 free addresses, 5 needed" in message


def test_free_addresses_zero_is_nothing() -> None:
    assert network.free_addresses(net("10.4.5.0/30"), ["10.4.5.2"], 0) == []


def test_router_id_prefers_its_own_then_probes_upwards_and_wraps() -> None:
    assert network.next_router_id(7, []) == 7
    assert network.next_router_id(7, [7, 8]) == 9
    assert network.next_router_id(255, [255]) == 1


def test_router_id_all_taken() -> None:
    with pytest.raises(CapacityError):
        network.next_router_id(1, range(1, 256))


def test_interface_names_are_checked() -> None:
    network.check_interface_name("gdl0")
    for bad in ("", "x" * 16, "a b", "a/b"):
        with pytest.raises(Exception, match="not a valid interface name"):
            network.check_interface_name(bad)


def test_records_are_written_atomically(tmp_path) -> None:
    path = tmp_path / "sub" / "r.json"
    network.write_json(path, {"a": 1})
    assert network.read_json(path) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
    path.write_text("{cut")
    assert network.read_json(path) is None
    assert network.read_json(tmp_path / "missing.json") is None


def test_choose_cidr_small_prefixes_are_counted_not_listed() -> None:
    # 10.0.0.0/8 holds two million /29s: the choice must not list them all.
    chosen = network.choose_cidr([net("10.0.0.0/9")], seed=0, prefix=29)
    assert chosen == net("10.128.0.0/29")
    chosen = network.choose_cidr([], seed=(1 << 21) + 1, prefix=29)  # the 2nd /29 of 172.16/12
    assert chosen == net("172.16.0.8/29")


def test_choose_cidr_skips_a_clash_that_starts_before_the_seed() -> None:
    pools = [net("10.9.0.0/22")]  # four /24s: 10.9.0-3
    # The seed lands on 10.9.1.0, inside a taken 10.9.0.0/23: the next free is 10.9.2.0.
    assert network.choose_cidr([net("10.9.0.0/23")], seed=1, pools=pools) == net("10.9.2.0/24")
    # A taken network larger than the pool ends the pool, not the search.
    two = [net("10.9.0.0/23"), net("172.20.0.0/23")]
    assert network.choose_cidr([net("10.0.0.0/8")], seed=1, pools=two) == net("172.20.0.0/24")


def test_allocation_lock_held_too_long_is_one_line_naming_the_lock(tmp_path) -> None:
    holder = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another open file: as another process would
        started = time.monotonic()
        with pytest.raises(LockHeld) as refused, network.locked(tmp_path, timeout=0.3):
            pytest.fail("the lock was taken while another holder had it")
        assert time.monotonic() - started < 5
        line = str(refused.value)
        assert "\n" not in line
        assert str(tmp_path / "lock") in line
        assert "held the local cloud's allocation lock" in line
    finally:
        os.close(holder)  # closing drops the holder's lock
    with network.locked(tmp_path, timeout=0.3):
        pass
