"""The interface every provider implements, and the records it returns.

Both providers (``local`` and ``openstack``) have the same verbs and return
the same small records, so the runner, the salt-cloud drivers and the
orchestration have one code path.  Verbs are idempotent the way the
openstacksdk cloud layer's are: deleting what is gone is not an error, and
every waiting call takes ``timeout``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gdl.errors import ProviderError
from gdl.spec import EnvSpec

# Server states, the same words for every provider.
RUNNING = "running"  # booted; its minion may still be starting
BUILDING = "building"  # being made
STOPPED = "stopped"  # exists, not running (powered off; a local host whose PID 1 died)
ERROR = "error"  # the provider gave up on it; ``fault`` says why

Progress = Callable[[str], None]


def no_progress(message: str) -> None:
    """The default progress callback: say nothing."""


@dataclass(frozen=True)
class Server:
    """One server as its provider reports it."""

    name: str
    app: str
    env: str
    role: str
    state: str
    address: str | None  # fixed address on the environment's network
    size: str
    provider_id: str
    fault: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "state": self.state,
            "address": self.address,
            "size": self.size,
            "id": self.provider_id,
            **({"fault": self.fault} if self.fault else {}),
        }


@dataclass(frozen=True)
class ServerRequest:
    """What is needed to make one server: its identity and its minion's."""

    name: str
    app: str
    env: str
    role: str
    size: str
    minion_public_key: str  # PEM, already accepted on the master
    minion_private_key: str = field(repr=False)  # PEM, handed to the server at boot only
    master_address: str
    # The master's key fingerprint: the minion refuses a master whose key differs.
    master_finger: str = ""


@dataclass(frozen=True)
class EnvNetwork:
    """The environment-wide parts ``ensure_env`` made or found."""

    vip: str  # the virtual address keepalived moves between the LBs
    public_address: str  # where users reach the app (a floating IP, or the VIP)
    cidr: str  # the network the servers share
    router_id: int  # VRRP virtual router id, unique on that network
    master_address: str  # where minions reach the master


class Provider(abc.ABC):
    """A place that makes servers."""

    name: str = ""
    # How long a new server's minion may take to answer the master: booting, and on
    # a cloud image also installing Salt, happen in this time.
    minion_timeout: float = 120.0
    # How long making a server may take until it runs (its minion not waited for).
    server_timeout: float = 600.0

    @abc.abstractmethod
    def sizes(self) -> list[str]:
        """The size (flavor) names this provider accepts."""

    @abc.abstractmethod
    def check(self, spec: EnvSpec) -> None:
        """Refuse, with one clear ProviderError, a request that cannot succeed.

        Credentials, size, capacity, required features: everything that can be
        known before anything is made.
        """

    @abc.abstractmethod
    def ensure_env(self, app: str, env: str) -> EnvNetwork:
        """Make (or find) the environment's shared parts; idempotent."""

    @abc.abstractmethod
    def find_env(self, app: str, env: str) -> EnvNetwork | None:
        """The environment's shared parts if they exist; makes nothing."""

    @abc.abstractmethod
    def create_servers(
        self,
        requests: Sequence[ServerRequest],
        timeout: float | None = None,
        progress: Progress = no_progress,
    ) -> list[Server]:
        """Make servers in parallel and wait until each runs (``timeout`` None: the provider's own).

        Raises ProviderError naming every server that failed; the ones that
        were made stay (a re-run keeps them, destroy removes them).
        """

    @abc.abstractmethod
    def list_servers(self, app: str | None = None, env: str | None = None) -> list[Server]:
        """Servers gdl made, read from the provider itself, optionally of one environment."""

    @abc.abstractmethod
    def delete_servers(
        self, names: Iterable[str], timeout: float = 300, progress: Progress = no_progress
    ) -> list[str]:
        """Delete servers by name; names already gone are skipped.  Returns those deleted."""

    @abc.abstractmethod
    def teardown_env(self, app: str, env: str) -> None:
        """Remove everything ``ensure_env`` made; idempotent."""

    def console_tail(self, name: str, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of server ``name``'s console; [] when there is none.

        Evidence for an error already being reported: never raises.
        """
        return []

    def get_server(self, name: str) -> Server | None:
        """The server gdl made under ``name``, or None."""
        return next((s for s in self.list_servers() if s.name == name), None)

    # -- what salt-cloud's listings show (``--list-images``, ``--list-sizes``, ...) ----------

    @abc.abstractmethod
    def images(self) -> dict[str, dict[str, object]]:
        """The images servers can boot, by name."""

    @abc.abstractmethod
    def flavors(self) -> dict[str, dict[str, object]]:
        """The sizes servers can have, by name, with vcpus, ram (MB) and disk (GB)."""

    @abc.abstractmethod
    def zones(self) -> dict[str, dict[str, object]]:
        """The places servers can be made in (availability zones), by name."""

    def attach_floating_ip(self, name: str) -> str:
        """Give server ``name`` a public address of its own; returns it."""
        raise ProviderError(
            f"{self.name} servers have no floating IPs",
            "remove floating_ip from the salt-cloud profile",
        )

    def placement_warnings(self, app: str, env: str) -> list[str]:
        """What the operator should know of where the load balancers were placed."""
        return []

    def list_envs(self) -> list[tuple[str, str]]:
        """The (app, env) pairs that have servers or shared parts here."""
        return sorted({(s.app, s.env) for s in self.list_servers()})
