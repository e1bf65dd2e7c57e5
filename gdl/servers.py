"""Making and removing servers of either role: provider, minion keys, and the wait.

The one path every server takes, whether the runner makes app servers or a
salt-cloud driver makes the VRRP pair:

1. a name that already belongs to a server is refused before any key is touched,
   so a running minion keeps its key;
2. each new server's key pair is made and accepted on the master (preseeded),
   unless salt-cloud made one already;
3. the provider makes the servers in parallel;
4. a server the provider could not make loses its key again, so no accepted key
   outlives its server;
5. the caller's ``wait`` returns once every new minion answers; when one stays
   silent, the error ends with the last lines of its server's console, and the
   next build replaces a server whose minion never joined (:func:`never_joined`).

Removing a server always forgets its key and what the master cached of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gdl import keys, naming
from gdl.errors import GdlError, MinionsSilent, NameClash
from gdl.providers.base import RUNNING, Progress, Provider, Server, ServerRequest, no_progress

if TYPE_CHECKING:
    from gdl.saltops import SaltOps

# Waits until the named minions answer, or raises; the timeout is the provider's.
MinionWait = Callable[[list[str], float], None]

# What a silent minion's error shows of its server's console.
CONSOLE_LINES = 20
CONSOLE_LINE_WIDTH = 200
ANSI_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_])")
# How long a minion with a key but no data on the master is given to answer.
JOIN_PING_TIMEOUT = 5.0


@dataclass(frozen=True)
class NewServer:
    """A server to make: its identity, and a key pair salt-cloud already made, if any."""

    name: str
    app: str
    env: str
    role: str
    size: str
    pair: keys.KeyPair | None = None


def make(
    provider: Provider,
    minion_keys: keys.MasterKeys,
    wanted: Sequence[NewServer],
    master_address: str,
    wait: MinionWait | None = None,
    progress: Progress = no_progress,
) -> list[Server]:
    """Make ``wanted`` in parallel, keys preseeded; wait for their minions when asked."""
    if not wanted:
        return []
    existing = _existing(provider, wanted)
    for server in wanted:
        if server.name in existing:
            taken = existing[server.name]
            raise NameClash(
                f"server {server.name} exists already "
                f"(environment {naming.env_id(taken.app, taken.env)})",
                f"delete it first (salt-cloud -d {server.name}) or choose another name",
            )
    requests = []
    master_finger = minion_keys.master_finger()
    for server in wanted:
        pair = server.pair
        if pair is None:
            pair = minion_keys.preseed(server.name)
        else:
            minion_keys.accept(server.name, pair.public_pem)
        requests.append(
            ServerRequest(
                name=server.name,
                app=server.app,
                env=server.env,
                role=server.role,
                size=server.size,
                minion_public_key=pair.public_pem,
                minion_private_key=pair.private_pem,
                master_address=master_address,
                master_finger=master_finger,
            )
        )
    try:
        made = provider.create_servers(requests, progress=progress)
    except GdlError:
        # The provider cleaned up the servers it could not make: their keys go too.
        present = _existing(provider, wanted)
        minion_keys.forget(*(server.name for server in wanted if server.name not in present))
        raise
    if wait is not None:
        wait_explained(provider, wait, [w.name for w in wanted], provider.minion_timeout)
    return made


def wait_explained(provider: Provider, wait: MinionWait, names: list[str], timeout: float) -> None:
    """``wait(names, timeout)``; when minions stay silent, the error shows their consoles' ends."""
    try:
        wait(names, timeout)
    except MinionsSilent as error:
        raise MinionsSilent(
            error.silent, error.timeout, console_evidence(provider, error.silent)
        ) from None


def console_evidence(
    provider: Provider, names: Iterable[str], lines: int = CONSOLE_LINES
) -> list[str]:
    """Per server: its console's last line, then the lines before it, indented."""
    evidence = []
    for name in names:
        tail = [clean for line in provider.console_tail(name, lines) if (clean := _printable(line))]
        if not tail:
            evidence.append(f"{name}: no console output")
            continue
        evidence.append(f"{name}: {tail[-1]}")
        evidence += [f"    {line}" for line in tail[:-1]]
    return evidence


def _printable(line: str) -> str:
    """A console line without terminal escapes or control characters, shortened."""
    text = ANSI_ESCAPE.sub("", line)
    return "".join(c for c in text if c.isprintable()).strip()[:CONSOLE_LINE_WIDTH]


def never_joined(
    minion_keys: keys.MasterKeys, salt: SaltOps, existing: Iterable[Server]
) -> list[str]:
    """Running servers whose minion never joined this master: to be replaced.

    A minion that joined once has data cached on the master; one without an accepted
    key cannot join at all.  A minion with a key and nothing cached (a cleared cache)
    is asked once before it is judged.
    """
    running = [s.name for s in existing if s.state == RUNNING]
    if not running:
        return []
    cached = minion_keys.cached_minions()
    keyless = [n for n in running if minion_keys.public_key(n) is None]
    unknown = [n for n in running if n not in cached and n not in keyless]
    answered = salt.ping(unknown, JOIN_PING_TIMEOUT) if unknown else set()
    return sorted([*keyless, *(n for n in unknown if n not in answered)])


def _existing(provider: Provider, wanted: Sequence[NewServer]) -> dict[str, Server]:
    """The servers the provider has under the names of ``wanted``, read once per environment."""
    found: dict[str, Server] = {}
    for app, env in {(w.app, w.env) for w in wanted}:
        found.update({s.name: s for s in provider.list_servers(app, env)})
    names = {w.name for w in wanted}
    return {name: server for name, server in found.items() if name in names}


def remove(
    provider: Provider,
    minion_keys: keys.MasterKeys,
    names: Iterable[str],
    progress: Progress = no_progress,
) -> list[str]:
    """Delete servers and forget their keys and cached data; returns those deleted."""
    names = list(dict.fromkeys(names))
    if not names:
        return []
    deleted = provider.delete_servers(names, progress=progress)
    minion_keys.forget(*names)
    return deleted
