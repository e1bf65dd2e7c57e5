"""Environments kept apart on the local cloud's one bridge, at layer 2.

Every host's veth is a port of the same bridge, so without filtering any host
could reach, and answer for, any address of any environment (a VIP included).
Bridge filtering (ebtables, in the machine's ``filter`` table) keeps, for the
ports of each local cloud:

- **one environment's hosts apart from the others'**: a frame from a host's
  port is forwarded only to the ports of its own environment's hosts;
  broadcast and multicast (ARP, VRRP) included.  The master and the machine,
  on the bridge itself, still reach every host.
- **each host to its own addresses**: only IPv4 and ARP leave a host's port,
  and only with its own address as source (a load balancer's also its
  environment's VIP), so no host can pose as another, to its neighbours or to
  the master.  Anything else a host sends (IPv6, which no role uses, or any
  other protocol a raw socket can write) is dropped at its port.

The rules are rebuilt from the cloud's records (in one ``ebtables-restore``
transaction, under the cloud's allocation lock) whenever hosts are made or
deleted, and removed with the cloud's last host.  The nf_tables ebtables
races with other writers of the machine's rule set: a command fails ("RULE_DELETE
failed (No such file or directory)") when another process commits between its
read of the rule set and its own commit.  So every local cloud's changes to the
filtering go one at a time, under a machine-wide lock, and a failed command is
tried again.  Chains are named
``gdl-<cloud tag>`` (forwarding), ``gdl-<tag>-src`` (sources) and
``gdl-<tag>-<env hash>`` (one environment's ports).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from gdl import naming
from gdl.errors import LockHeld, ProviderError
from gdl.lock import lock_within
from gdl.providers.local import host, network
from gdl.providers.local.records import Records

EBTABLES = "ebtables"
# The built-in chains that jump into the cloud's chains.
HOOKS = {"FORWARD": "", "INPUT": "-src"}
# Shared by every local cloud on the machine (each cloud's own lock is in its state dir).
MACHINE_LOCK = Path("/run/lock/gdl-bridge-filtering.lock")
MACHINE_LOCK_TIMEOUT = 60.0
# Tries of one ebtables command; the race above is over in milliseconds.
ATTEMPTS = 4


def forward_chain(tag: str) -> str:
    return f"gdl-{tag}"


def sources_chain(tag: str) -> str:
    return f"gdl-{tag}-src"


def env_chain(tag: str, app: str, env: str) -> str:
    return f"gdl-{tag}-{naming.short_hash(app, env, length=8)}"


@contextlib.contextmanager
def machine_locked() -> Iterator[None]:
    """Hold the machine-wide lock on the local clouds' bridge filtering."""
    MACHINE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        lock_within(
            fd,
            MACHINE_LOCK_TIMEOUT,
            lambda: LockHeld(
                f"another process has held the bridge filtering lock {MACHINE_LOCK} "
                f"for more than {MACHINE_LOCK_TIMEOUT:.0f} s",
                f"stop the stuck gdl or salt-cloud process that holds it (fuser -v "
                f"{MACHINE_LOCK} names it), then run this again",
            ),
        )
        yield
    finally:
        os.close(fd)  # closing drops the lock


def _ebtables(*args: str, stdin: str | None = None, check: bool = True) -> str:
    # Each command is one nf_tables transaction: a failed one changed nothing,
    # so trying it again is safe.
    for attempt in range(ATTEMPTS):
        result = subprocess.run(
            [EBTABLES if not stdin else f"{EBTABLES}-restore", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if result.returncode == 0:
            break
        time.sleep(0.05 * (attempt + 1))
    if check and result.returncode != 0:
        raise ProviderError(
            f"'{EBTABLES} {' '.join(args)}' failed: {result.stderr.strip()}",
            "the local cloud needs bridge filtering (apt-get install ebtables)",
        )
    return result.stdout


def rules(tag: str, hosts: Iterable[dict], vips: dict[tuple[str, str], str]) -> str:
    """The ``ebtables-restore --noflush`` text of the cloud's chains, from its host records.

    ``vips`` gives each environment's VIP by (app, env); a load balancer may
    use it as a source.
    """
    ports: dict[tuple[str, str], list[str]] = {}
    lines = ["*filter", f":{forward_chain(tag)} RETURN", f":{sources_chain(tag)} RETURN"]
    sources: list[str] = []
    forwards: list[str] = []
    for record in sorted(hosts, key=lambda r: r["name"]):
        if not record.get("address"):
            continue
        veth = host.HostNames.of(tag, record["name"]).veth
        env = (record["app"], record["env"])
        ports.setdefault(env, []).append(veth)
        owned = [record["address"]]
        if record.get("role") == "lb" and vips.get(env):
            owned.append(vips[env])
        port = f"-A {sources_chain(tag)} -i {veth}"
        for address in owned:
            sources.append(f"{port} -p IPv4 --ip-src {address} -j RETURN")
            sources.append(f"{port} -p ARP --arp-ip-src {address} -j RETURN")
        sources.append(f"{port} -j DROP")
        forwards.append(f"-A {forward_chain(tag)} -i {veth} -j {env_chain(tag, *env)}")
    for (app, env), veths in sorted(ports.items()):
        # Anything from this environment to a port outside it is dropped.
        lines.append(f":{env_chain(tag, app, env)} DROP")
        forwards += [f"-A {env_chain(tag, app, env)} -o {veth} -j RETURN" for veth in veths]
    lines.append(f"-A {forward_chain(tag)} -j {sources_chain(tag)}")
    return "\n".join([*lines, *forwards, *sources, "COMMIT", ""])


def chains(tag: str) -> list[str]:
    """The cloud's chains that exist now."""
    listing = _ebtables("-L", check=False)
    pattern = re.compile(rf"^Bridge chain: (gdl-{re.escape(tag)}(?:-[0-9a-z]+)?),", re.M)
    return pattern.findall(listing)


def _jumps(hook: str, chain: str) -> int:
    listing = _ebtables("-L", hook, check=False)
    return sum(1 for line in listing.splitlines() if line.strip() == f"-j {chain}")


def sync(records: Records) -> None:
    """Make the cloud's filtering match its records (none left when no host is)."""
    tag = records.tag
    with network.locked(records.state_dir), machine_locked():
        hosts = [r for r in records.hosts().values() if r.get("address")]
        vips = {(r["app"], r["env"]): r.get("vip", "") for r in records.envs().values()}
        before = chains(tag)
        if not hosts:
            remove(tag, before)
            return
        text = rules(tag, hosts, vips)
        _ebtables("--noflush", stdin=text)
        wanted = set(re.findall(r"^:(\S+) ", text, re.M))
        for hook, suffix in HOOKS.items():
            chain = forward_chain(tag) + suffix
            if not _jumps(hook, chain):
                _ebtables("-A", hook, "-j", chain)
        for stale in set(before) - wanted:
            _ebtables("-F", stale, check=False)
            _ebtables("-X", stale, check=False)


def remove(tag: str, existing: list[str] | None = None) -> None:
    """Remove every chain of the cloud and the jumps into them."""
    existing = chains(tag) if existing is None else existing
    if not existing:
        return
    for hook, suffix in HOOKS.items():
        chain = forward_chain(tag) + suffix
        for _ in range(_jumps(hook, chain)):
            _ebtables("-D", hook, "-j", chain, check=False)
    for chain in existing:
        _ebtables("-F", chain, check=False)
    for chain in existing:
        with contextlib.suppress(ProviderError):
            _ebtables("-X", chain, check=False)
