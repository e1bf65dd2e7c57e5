"""The local cloud's network: one Linux bridge, one subnet, addresses handed out once.

The bridge stands for the cloud network.  Its first address belongs to the
machine (the salt-master listens there, and the machine reaches every host
and VIP through it); hosts and VIP reservations get the following ones.
Allocation reads the records in the provider's state dir under one lock
file, so hosts created at the same time by several processes (salt-cloud
``-P`` forks one per server) never share an address.

The pure functions (:func:`choose_cidr`, :func:`free_addresses`,
:func:`next_router_id`) hold the rules and are unit-tested without root.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

from gdl.errors import CapacityError, ConfigError, LockHeld, ProviderError
from gdl.lock import lock_within

# Where choose_cidr looks for a free /24: private ranges, probed from an
# offset so two machines (or test sessions) rarely start at the same one.
CANDIDATE_POOLS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("172.16.0.0/12"))
DEFAULT_PREFIX = 24
MAX_ROUTER_ID = 255
# Holders of the allocation lock only read and write small records (and load the
# cloud's filter rules): a wait this long means a holder is stuck, not busy.
ALLOCATION_LOCK_TIMEOUT = 60.0


def choose_cidr(
    taken: Iterable[ipaddress.IPv4Network],
    seed: int = 0,
    prefix: int = DEFAULT_PREFIX,
    pools: Iterable[ipaddress.IPv4Network] = CANDIDATE_POOLS,
) -> ipaddress.IPv4Network | None:
    """The first subnet of ``prefix`` length, from ``seed`` on, that overlaps nothing taken."""
    taken = [net for net in taken if net.prefixlen > 0]  # a default route clashes with nothing
    # Subnets are counted, not listed: 10.0.0.0/8 alone holds two million /29s.
    counts = [(pool, 1 << (prefix - pool.prefixlen)) for pool in pools if pool.prefixlen <= prefix]
    total = sum(count for _, count in counts)
    step = 0
    while step < total:
        candidate, left_in_pool = _nth_subnet(counts, (seed + step) % total, prefix)
        clash = next((other for other in taken if candidate.overlaps(other)), None)
        if clash is None:
            return candidate
        # Skip every candidate up to the clashing network's end at once (within the pool).
        inside = (int(clash.broadcast_address) - int(candidate.network_address) + 1) >> (
            32 - prefix
        )
        step += max(1, min(inside, left_in_pool))
    return None


def _nth_subnet(
    counts: list[tuple[ipaddress.IPv4Network, int]], index: int, prefix: int
) -> tuple[ipaddress.IPv4Network, int]:
    """Candidate ``index`` over all pools, and how many candidates its pool has from it on."""
    for pool, count in counts:
        if index < count:
            start = int(pool.network_address) + (index << (32 - prefix))
            return ipaddress.ip_network((start, prefix)), count - index
        index -= count
    raise IndexError(index)


def gateway_address(cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    """The bridge's (the machine's) address: the subnet's first."""
    return next(cidr.hosts())


def free_addresses(
    cidr: ipaddress.IPv4Network, used: Iterable[str], count: int
) -> list[ipaddress.IPv4Address]:
    """The ``count`` lowest addresses of ``cidr`` not used and not the gateway's.

    Raises CapacityError when fewer are free.
    """
    used_set = {ipaddress.ip_address(address) for address in used}
    used_set.add(gateway_address(cidr))
    found: list[ipaddress.IPv4Address] = []
    if count <= 0:
        return found
    for address in cidr.hosts():
        if address not in used_set:
            found.append(address)
            if len(found) == count:
                return found
    free = len(found)
    raise CapacityError(
        f"subnet {cidr} of the local cloud has {free} free address{'es' if free != 1 else ''}, "
        f"{count} needed",
        "delete servers or environments you no longer need, or give the local cloud a larger cidr",
    )


def next_router_id(preferred: int, taken: Iterable[int]) -> int:
    """``preferred``, or the next VRRP router id upwards (wrapping) that nobody holds."""
    taken_set = set(taken)
    for step in range(MAX_ROUTER_ID):
        candidate = (preferred - 1 + step) % MAX_ROUTER_ID + 1
        if candidate not in taken_set:
            return candidate
    raise CapacityError(
        "every VRRP router id (1-255) is taken on the local cloud's network",
        "destroy environments you no longer need",
    )


# --- the machine's routes and the bridge ------------------------------------------------


def _ip_json(*args: str) -> list[dict]:
    result = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return []
    return json.loads(result.stdout or "[]")


def machine_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the machine routes or has an address on."""
    networks: list[ipaddress.IPv4Network] = []
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = route.get("dst", "")
        if dst in ("", "default"):
            continue
        with contextlib.suppress(ValueError):
            networks.append(ipaddress.ip_network(dst, strict=False))
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                networks.append(
                    ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
                )
    return networks


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def bridge_cidr(bridge: str) -> ipaddress.IPv4Interface | None:
    """The bridge's IPv4 address with its prefix, or None (no bridge, no address)."""
    for link in _ip_json("-4", "addr", "show", "dev", bridge):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                return ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}")
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProviderError(
            f"'ip {' '.join(args)}' failed: {result.stderr.strip() or result.returncode}",
            "check that gdl runs as root on a Linux machine with iproute2",
        )


def check_interface_name(name: str) -> None:
    if not name or len(name) > 15 or "/" in name or any(c.isspace() for c in name):
        raise ConfigError(
            f"bridge name {name!r} is not a valid interface name",
            "use at most 15 characters, no spaces or '/'",
        )


def ensure_bridge(bridge: str, cidr: ipaddress.IPv4Network) -> ipaddress.IPv4Interface:
    """Make the bridge with its gateway address, up; a no-op when it is already so."""
    check_interface_name(bridge)
    gateway = ipaddress.ip_interface(f"{gateway_address(cidr)}/{cidr.prefixlen}")
    current = bridge_cidr(bridge)
    if current is not None and current != gateway:
        raise ConfigError(
            f"bridge {bridge} has address {current}, not {gateway}",
            f"remove it (python -m gdl.providers.local remove-network --bridge {bridge}) "
            "or use its cidr",
        )
    if not link_exists(bridge):
        clash = [net for net in machine_networks() if net.overlaps(cidr)]
        if clash:
            raise ConfigError(
                f"cidr {cidr} overlaps the machine's network {clash[0]}",
                "pick a free one with: python -m gdl.providers.local choose-cidr",
            )
        _ip("link", "add", bridge, "type", "bridge")
    if current is None:
        _ip("addr", "replace", str(gateway), "dev", bridge)
    _ip("link", "set", bridge, "up")
    return gateway


def remove_bridge(bridge: str) -> bool:
    """Delete the bridge; False when it was not there."""
    check_interface_name(bridge)
    if not link_exists(bridge):
        return False
    _ip("link", "del", bridge)
    return True


# --- the records that hold addresses ------------------------------------------------------


@contextlib.contextmanager
def locked(state_dir: Path, timeout: float = ALLOCATION_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the local cloud's allocation lock (across processes).

    Raises LockHeld, one line naming the lock file, when another process holds it
    past ``timeout`` seconds.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        lock_within(
            fd,
            timeout,
            lambda: LockHeld(
                f"another process has held the local cloud's allocation lock {path} "
                f"for more than {timeout:.0f} s",
                f"stop the stuck salt-cloud or gdl process that holds it (fuser -v {path} "
                "names it), then run this again",
            ),
        )
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:
        return None  # a record cut short by a crash holds nothing worth keeping


def write_json(path: Path, data: dict) -> None:
    """Write a record atomically (readers see the old or the new, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
