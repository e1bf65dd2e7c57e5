"""The OpenStack provider, on openstacksdk.

An environment (app, env) on OpenStack is:

- two security groups, ``gdl-<app>-<env>-lb`` and ``gdl-<app>-<env>-app``;
- two server groups of the same names (soft anti-affinity when the compute API has it);
- a VIP port on the environment's network: its fixed address is the address keepalived
  moves between the two load balancers, and its tags hold the VRRP router id;
- a floating IP on the VIP port when that network is not itself external;
- servers, each with one port made by gdl (a load balancer's port lists the VIP as an
  allowed address pair, so Neutron's port security lets it answer for the VIP).

Neutron resources carry the environment's ownership marks as tags (``gdl_app=blog``,
``gdl_env=dev``, ...), servers carry them as metadata, and server groups are found by name.
Everything is looked up from the cloud, never remembered: a destroy after a build that
died half-way finds and removes whatever was made.

Settings (the ``gdl:openstack`` mapping of the master config)::

    cloud: mycloud            # clouds.yaml entry; else OS_CLOUD; else OS_* variables
    clouds_file: /etc/openstack/clouds.yaml   # optional: a clouds.yaml outside the usual places
    image: debian-12          # image name or id
    network: private          # an existing network the servers share
    external_network: public  # where floating IPs come from (when `network` is not external)
    key_name: ops             # optional: else the account's first key pair
    master_address: 10.0.0.2  # what minions connect to
    master_port: 4506         # optional: the master's ports, when not Salt's defaults
    publish_port: 4505
    minion_packages: [python3-venv]   # optional: Debian packages cloud-init installs first
                                      # ([] for an image that already has python3-venv)
    server_timeout: 600       # optional: seconds for Nova to make a server ACTIVE
    minion_timeout: 900       # optional: seconds from ACTIVE until its minion answers
                              # (first boot installs Salt from PyPI)
    flavor: {m1.small: g1.small}   # optional: size -> flavor name
    availability_zone: nova   # optional
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import openstack
import openstack.config
from keystoneauth1 import discover
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions

from gdl import naming, userdata
from gdl.config import Settings
from gdl.errors import (
    CapacityError,
    ConfigError,
    CredentialsError,
    GdlError,
    LockHeld,
    NotFound,
    ProviderError,
)
from gdl.providers.base import (
    BUILDING,
    ERROR,
    RUNNING,
    STOPPED,
    EnvNetwork,
    Progress,
    Provider,
    Server,
    ServerRequest,
    no_progress,
)
from gdl.spec import EnvSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

# What openstacksdk and keystoneauth raise when a call fails.
API_ERRORS = (os_exceptions.SDKException, ks_exceptions.ClientException)

# HTTP answers worth another try: the cloud is busy or briefly inconsistent.
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
RETRY_ATTEMPTS = 5
RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 8.0
POLL_SECONDS = 2.0
DELETE_TIMEOUT = 300.0

# Extra marks beside naming.ownership(): which server a port belongs to, the VRRP id.
MARK_SERVER = "gdl_server"
MARK_SIZE = "gdl_size"
MARK_VRID = "gdl_vrid"
ROLE_VIP = "vip"

VRRP_PROTOCOL = "112"
SALT_PORTS = (4505, 4506)
# soft-anti-affinity came with compute API 2.15; every cloud since Mitaka has it.
SOFT_ANTI_AFFINITY_VERSION = (2, 15)

STATES = {
    "ACTIVE": RUNNING,
    "BUILD": BUILDING,
    "REBUILD": BUILDING,
    "HARD_REBOOT": BUILDING,
    "REBOOT": BUILDING,
    "SHUTOFF": STOPPED,
    "SUSPENDED": STOPPED,
    "PAUSED": STOPPED,
    "SHELVED": STOPPED,
    "SHELVED_OFFLOADED": STOPPED,
    "STOPPED": STOPPED,
    "ERROR": ERROR,
}


def tags_of(marks: dict[str, str]) -> list[str]:
    """Ownership marks as Neutron tags (``key=value``; tags are plain strings)."""
    return [f"{key}={value}" for key, value in sorted(marks.items())]


def marks_of(tags: Iterable[str]) -> dict[str, str]:
    """Neutron tags back into marks; tags that are not ``key=value`` are ignored."""
    marks = {}
    for tag in tags or ():
        key, sep, value = tag.partition("=")
        if sep:
            marks[key] = value
    return marks


def group_name(app: str, env: str, role: str) -> str:
    """The name of the environment's security group and server group for ``role``."""
    return f"gdl-{naming.env_id(app, env)}-{role}"


def vip_port_name(app: str, env: str) -> str:
    return f"gdl-{naming.env_id(app, env)}-{ROLE_VIP}"


# Descriptions are set in the same call that makes a resource (Neutron here takes tags only
# afterwards): a build killed between the two still leaves something destroy recognises.
def group_description(app: str, env: str, role: str) -> str:
    return f"gdl {naming.env_id(app, env)} {role} servers"


def vip_description(app: str, env: str) -> str:
    return f"gdl {naming.env_id(app, env)} virtual IP (keepalived)"


def server_description(name: str) -> str:
    """Description of the port (and any floating IP) gdl makes for server ``name``."""
    return f"gdl {name}"


def ours_by_description(resource: Any, app: str, env: str) -> bool:
    """True when a resource's description is one gdl gives (app, env)'s resources."""
    description = resource.description or ""
    fixed = (vip_description(app, env), *(group_description(app, env, r) for r in naming.ROLES))
    if description in fixed:
        return True
    server = description.removeprefix("gdl ")
    parsed = naming.parse_server_name(server)
    return parsed is not None and (parsed.app, parsed.env) == (app, env)


def keeper(resources: Sequence[Any]) -> Any:
    """The one of several equal resources every concurrent builder keeps: the oldest."""
    return min(resources, key=lambda r: (getattr(r, "created_at", None) or "", r.id))


def next_router_id(preferred: int, taken: Iterable[int]) -> int | None:
    """The first VRRP router id (1..255) from ``preferred`` upwards, wrapping, not taken."""
    used = set(taken)
    for step in range(255):
        candidate = (preferred - 1 + step) % 255 + 1
        if candidate not in used:
            return candidate
    return None


def is_transient(error: BaseException, conflict_is_transient: bool = False) -> bool:
    """True for errors a bounded retry may get past (5xx, lost connections, a busy port)."""
    if isinstance(error, os_exceptions.HttpException):
        status = error.status_code or 0
        return status in TRANSIENT_STATUS or (conflict_is_transient and status == 409)
    return isinstance(
        error,
        ks_exceptions.ConnectFailure
        | ks_exceptions.ConnectTimeout
        | ks_exceptions.RetriableConnectionFailure,
    )


def retry(
    call: Callable[[], T],
    conflict_is_transient: bool = False,
    attempts: int = RETRY_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, tried again with growing pauses while it fails transiently."""
    delay = RETRY_FIRST_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if attempt == attempts or not is_transient(error, conflict_is_transient):
                raise
            log.info("OpenStack call failed (%s), try %d of %d", _reason(error), attempt, attempts)
            sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)
    raise AssertionError("unreachable")


def find(finder: Callable[..., T], name_or_id: str) -> T | None:
    """``finder(name_or_id)`` (an SDK ``find_*``), None when nothing matches."""
    try:
        return finder(name_or_id, ignore_missing=False)
    except os_exceptions.NotFoundException:
        return None


def _reason(error: BaseException) -> str:
    """The cloud's own words for an error, on one line."""
    if isinstance(error, os_exceptions.HttpException):
        text = error.details or error.message or str(error)
        status = f"HTTP {error.status_code}: " if error.status_code else ""
        return " ".join(f"{status}{text}".split())[:300]
    return " ".join(str(error).split())[:300] or type(error).__name__


def translate(error: BaseException, doing: str) -> GdlError:
    """An SDK/keystoneauth error as the one-line GdlError the operator reads."""
    if isinstance(error, GdlError):
        return error
    if isinstance(error, ks_exceptions.Unauthorized) or (
        isinstance(error, os_exceptions.HttpException) and error.status_code == 401
    ):
        return CredentialsError(
            "OpenStack rejected the credentials",
            "check the user name, password and project in clouds.yaml or the OS_* variables",
        )
    if isinstance(error, ks_exceptions.ConnectFailure | ks_exceptions.ConnectTimeout):
        return ProviderError(
            f"cannot reach OpenStack while {doing} ({_reason(error)})",
            "check the auth_url and that the cloud's API endpoints answer from this master",
        )
    if (
        isinstance(error, os_exceptions.HttpException)
        and error.status_code in (403, 409, 413)
        and "quota" in _reason(error).lower()
    ):
        return CapacityError(
            f"OpenStack quota exceeded while {doing} ({_reason(error)})",
            "raise the project's quota or ask for fewer or smaller servers",
        )
    return ProviderError(
        f"OpenStack failed while {doing} ({_reason(error)})",
        "fix the cause and run the same command again: it continues where it stopped",
    )


# keystoneauth logs request and response bodies at DEBUG (salt-cloud -l debug shows them)
# and masks passwords and tokens only; a server's user data holds its minion's private key.
_USER_DATA = re.compile(r'("(?:OS-EXT-SRV-ATTR:)?user_data"\s*:\s*)"[^"]*"')
_LOGGERS_WITH_BODIES = (
    "keystoneauth.session",
    "keystoneauth.session.request",
    "keystoneauth.session.body",
    "keystoneauth.session.response",
    "openstack",
    "openstack.compute",
)


class RedactUserData(logging.Filter):
    """Replace user data in log records with a placeholder."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "user_data" in message:
            record.msg = _USER_DATA.sub(r'\1"<redacted>"', message)
            record.args = None
        return True


def redact_user_data_in_logs() -> None:
    """Install :class:`RedactUserData` on the loggers that print API bodies (once)."""
    for name in _LOGGERS_WITH_BODIES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUserData) for f in logger.filters):
            logger.addFilter(RedactUserData())


@contextlib.contextmanager
def parts_lock(lock_dir: Path | None, app: str, env: str, timeout: float = 300) -> Iterator[None]:
    """Serialise the making of one environment's parts on this master.

    salt-cloud makes servers in parallel processes, and each makes sure the parts exist;
    without this, two could each make a VIP port.  (An flock: it dies with its holder.)
    """
    if lock_dir is None:
        yield
        return
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = lock_dir / f"openstack-parts-{naming.env_id(app, env)}.lock"
    with open(path, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockHeld(
                        f"another process has been making the parts of "
                        f"{naming.env_id(app, env)} for {timeout:.0f} s",
                        "wait for it to finish, then run this again",
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class OpenStackSettings:
    """The ``gdl:openstack`` settings, checked."""

    image: str
    network: str
    master_address: str
    cloud: str | None = None
    clouds_file: str | None = None
    external_network: str | None = None
    key_name: str | None = None
    availability_zone: str | None = None
    flavors: dict[str, str] = field(default_factory=dict)
    server_timeout: float = 600.0
    minion_timeout: float = 900.0
    master_port: int | None = None
    publish_port: int | None = None
    minion_packages: tuple[str, ...] = userdata.DEFAULT_PACKAGES

    @classmethod
    def from_mapping(cls, section: dict[str, Any]) -> OpenStackSettings:
        def text(key: str, required: bool = False) -> str | None:
            value = section.get(key)
            if value in (None, ""):
                if required:
                    raise ConfigError(
                        f"gdl:openstack:{key} is not set",
                        f"add '{key}:' under gdl:openstack in the master config "
                        "(/etc/salt/master.d/gdl.conf)",
                    )
                return None
            if not isinstance(value, str):
                raise ConfigError(
                    f"gdl:openstack:{key} is not a string ({value!r})",
                    "quote it in the master config",
                )
            return value

        master_address = text("master_address", required=True) or ""
        try:
            ipaddress.ip_address(master_address)
        except ValueError:
            raise ConfigError(
                f"gdl:openstack:master_address {master_address!r} is not an IP address",
                "give the address minions use to reach the master (security groups need it)",
            ) from None
        flavors = section.get("flavor") or {}
        if not isinstance(flavors, dict):
            raise ConfigError(
                "gdl:openstack:flavor is not a mapping",
                "give size names mapped to flavor names, e.g. {m1.small: g1.small}",
            )

        def port(key: str) -> int | None:
            value = section.get(key)
            if value in (None, ""):
                return None
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise ConfigError(
                    f"gdl:openstack:{key} {value!r} is not a TCP port",
                    "give a number from 1 to 65535, or leave it out for Salt's default",
                )
            return value

        def seconds(key: str, default: float) -> float:
            value = section.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(
                    f"gdl:openstack:{key} {value!r} is not a number of seconds",
                    f"give a positive number, or leave it out for {default:.0f}",
                )
            return float(value)

        packages = section.get("minion_packages", list(userdata.DEFAULT_PACKAGES))
        if not isinstance(packages, list) or not all(
            isinstance(p, str) and re.fullmatch(r"[a-z0-9][a-z0-9+.-]*", p) for p in packages
        ):
            raise ConfigError(
                f"gdl:openstack:minion_packages {packages!r} is not a list of package names",
                "give a list such as [python3-venv], or [] when the image has what Salt needs",
            )
        return cls(
            master_port=port("master_port"),
            publish_port=port("publish_port"),
            minion_packages=tuple(packages),
            image=text("image", required=True) or "",
            network=text("network", required=True) or "",
            master_address=master_address,
            cloud=text("cloud"),
            clouds_file=text("clouds_file"),
            external_network=text("external_network"),
            key_name=text("key_name"),
            availability_zone=text("availability_zone"),
            flavors={str(k): str(v) for k, v in flavors.items()},
            server_timeout=seconds("server_timeout", 600),
            minion_timeout=seconds("minion_timeout", 900),
        )


def connect(cfg: OpenStackSettings) -> openstack.connection.Connection:
    """A connection for the configured cloud; a clear ConfigError when it is not configured."""
    cloud = cfg.cloud or os.environ.get("OS_CLOUD")
    if cloud is None and not os.environ.get("OS_AUTH_URL"):
        raise ConfigError(
            "no OpenStack cloud is configured",
            "set gdl:openstack:cloud to a clouds.yaml entry, or OS_CLOUD, "
            "or source the project's openrc before starting the master",
        )
    try:
        loader = openstack.config.OpenStackConfig(
            config_files=[cfg.clouds_file] if cfg.clouds_file else None,
            app_name="gdl",
        )
        region = loader.get_one(cloud=cloud)
    except os_exceptions.ConfigException as error:
        if cloud and "was not found" in str(error):
            names = ", ".join(sorted(loader.get_cloud_names())) or "none"
            raise ConfigError(
                f"cloud {cloud!r} is not in clouds.yaml (clouds there: {names})",
                "fix gdl:openstack:cloud or OS_CLOUD, or add the cloud to clouds.yaml",
            ) from None
        raise ConfigError(f"the OpenStack configuration is unusable ({error})", "fix it") from None
    except ks_exceptions.MissingRequiredOptions as error:
        raise ConfigError(
            f"the OpenStack credentials are incomplete ({error})",
            "complete clouds.yaml or the OS_* variables",
        ) from None
    return openstack.connection.Connection(config=region)


@dataclass
class EnvParts:
    """The environment's OpenStack resources ``ensure_env`` makes, as found in the cloud."""

    app: str
    env: str
    network: Any
    subnet: Any
    security_groups: dict[str, Any] = field(default_factory=dict)  # role -> SG
    server_groups: dict[str, Any] = field(default_factory=dict)  # role -> server group
    vip_port: Any = None
    floating_ip: Any = None

    @property
    def vip(self) -> str:
        return self.vip_port.fixed_ips[0]["ip_address"]

    @property
    def router_id(self) -> int:
        return int(marks_of(self.vip_port.tags)[MARK_VRID])


class OpenStackProvider(Provider):
    """Servers on an OpenStack cloud, through openstacksdk."""

    name = "openstack"

    def __init__(
        self,
        cfg: OpenStackSettings,
        connection: openstack.connection.Connection | None = None,
        lock_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.minion_timeout = cfg.minion_timeout
        self._connection = connection
        self.lock_dir = lock_dir
        redact_user_data_in_logs()
        self._flavor_cache: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenStackProvider:
        return cls(OpenStackSettings.from_mapping(settings.openstack), lock_dir=settings.lock_dir)

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def conn(self) -> openstack.connection.Connection:
        if self._connection is None:
            self._connection = connect(self.cfg)
        return self._connection

    def _authorize(self) -> None:
        """Fetch a token now, so bad credentials fail first and alone."""
        try:
            self.conn.session.get_token()
        except Exception as error:
            raise translate(error, "logging in") from None

    def _project_id(self) -> str:
        return self.conn.current_project_id

    def _network(self) -> Any:
        network = find(self.conn.network.find_network, self.cfg.network)
        if network is None:
            raise NotFound(
                f"network {self.cfg.network!r} does not exist in this project",
                "set gdl:openstack:network to an existing network (openstack network list)",
            )
        return network

    def _subnet(self, network: Any) -> Any:
        for subnet in self.conn.network.subnets(network_id=network.id):
            if subnet.ip_version == 4:
                return subnet
        raise NotFound(
            f"network {network.name!r} has no IPv4 subnet",
            "add an IPv4 subnet to it or choose another network",
        )

    def _external_network(self, network: Any) -> Any | None:
        """Where floating IPs come from; None when the servers' network is external itself."""
        if network.is_router_external:
            return None
        if self.cfg.external_network:
            external = find(self.conn.network.find_network, self.cfg.external_network)
            if external is None:
                raise NotFound(
                    f"external network {self.cfg.external_network!r} does not exist",
                    "set gdl:openstack:external_network to a network with router:external",
                )
            return external
        externals = list(self.conn.network.networks(is_router_external=True))
        if len(externals) == 1:
            return externals[0]
        raise ConfigError(
            f"network {network.name!r} is not external and "
            f"{'no' if not externals else len(externals)} external networks exist",
            "set gdl:openstack:external_network to the one floating IPs come from",
        )

    def _flavor(self, size: str) -> Any:
        name = self.cfg.flavors.get(size, size)
        if name not in self._flavor_cache:
            flavor = find(self.conn.compute.find_flavor, name)
            if flavor is None:
                known = ", ".join(sorted(f.name for f in self.conn.compute.flavors()))
                raise NotFound(
                    f"flavor {name!r} (size={size}) does not exist",
                    f"use one of: {known}" if known else "ask the cloud's operator for flavors",
                )
            self._flavor_cache[name] = flavor
        return self._flavor_cache[name]

    def _image(self) -> Any:
        image = find(self.conn.image.find_image, self.cfg.image)
        if image is None:
            raise NotFound(
                f"image {self.cfg.image!r} does not exist",
                "set gdl:openstack:image to an image this project can see (openstack image list)",
            )
        return image

    def _key_name(self) -> str:
        if self.cfg.key_name:
            if find(self.conn.compute.find_keypair, self.cfg.key_name) is None:
                raise NotFound(
                    f"key pair {self.cfg.key_name!r} does not exist",
                    "create it (openstack keypair create) or fix gdl:openstack:key_name",
                )
            return self.cfg.key_name
        first = next(iter(self.conn.compute.keypairs()), None)
        if first is None:
            raise NotFound(
                "the OpenStack account has no key pair",
                "create one (openstack keypair create --public-key ~/.ssh/id_ed25519.pub ops) "
                "or set gdl:openstack:key_name",
            )
        return first.name

    def _owned_servers(self, app: str | None = None, env: str | None = None) -> list[Any]:
        found = []
        for server in self.conn.compute.servers(details=True):
            marks = server.metadata or {}
            if naming.MARK_APP not in marks or naming.MARK_ENV not in marks:
                continue
            if app is not None and marks[naming.MARK_APP] != app:
                continue
            if env is not None and marks[naming.MARK_ENV] != env:
                continue
            found.append(server)
        return found

    def _tagged(self, kind: str, marks: dict[str, str], **query: Any) -> list[Any]:
        """Neutron resources of ``kind`` carrying every one of ``marks``."""
        lister = getattr(self.conn.network, kind)
        return list(lister(tags=",".join(tags_of(marks)), **query))

    def _set_tags(self, resource: Any, marks: dict[str, str]) -> Any:
        return retry(lambda: self.conn.network.set_tags(resource, tags_of(marks)))

    def _floating_addresses(self) -> dict[str, str]:
        """Server name -> the floating IP gdl gave that server (Nova lists it late, if ever)."""
        found = {}
        for fip in self.conn.network.ips():
            name = marks_of(fip.tags).get(MARK_SERVER)
            if name:
                found[name] = fip.floating_ip_address
        return found

    def _server_record(
        self, server: Any, network_name: str | None = None, floating: dict[str, str] | None = None
    ) -> Server:
        marks = server.metadata or {}
        address = public = None
        for name, entries in (server.addresses or {}).items():
            if network_name is not None and name != network_name:
                continue
            for entry in entries:
                if entry.get("version") != 4:
                    continue
                if entry.get("OS-EXT-IPS:type", "fixed") == "floating":
                    public = public or entry.get("addr")
                else:
                    address = address or entry.get("addr")
        public = (floating or {}).get(server.name, public)
        fault = ""
        if server.status == "ERROR" and server.fault:
            fault = " ".join(str(server.fault.get("message", "")).split())
        image = server.image.get("id", "") if isinstance(server.image, dict) else ""
        return Server(
            name=server.name,
            app=marks.get(naming.MARK_APP, ""),
            env=marks.get(naming.MARK_ENV, ""),
            role=marks.get(naming.MARK_ROLE, ""),
            state=STATES.get(server.status or "", BUILDING),
            address=address,
            size=marks.get(MARK_SIZE, ""),
            provider_id=server.id,
            fault=fault,
            extra={
                "status": server.status or "",
                "image": image,
                **({"public_address": public} if public else {}),
            },
        )

    # -- listings for salt-cloud ------------------------------------------------------------

    def get_server(self, name: str) -> Server | None:
        """The server gdl made under ``name``, or None."""
        try:
            for server in self._owned_servers():
                if server.name == name:
                    return self._server_record(server, self.cfg.network, self._floating_addresses())
        except API_ERRORS as error:
            raise translate(error, f"looking up {name}") from None
        return None

    def images(self) -> dict[str, dict[str, Any]]:
        """The images the project can boot, by name."""
        try:
            return {
                image.name or image.id: {
                    "id": image.id,
                    "name": image.name,
                    "status": image.status,
                    "visibility": image.visibility,
                }
                for image in self.conn.image.images()
            }
        except API_ERRORS as error:
            raise translate(error, "listing images") from None

    def flavors(self) -> dict[str, dict[str, Any]]:
        """The flavors the project can use, by name."""
        try:
            return {
                flavor.name: {
                    "id": flavor.id,
                    "name": flavor.name,
                    "vcpus": flavor.vcpus,
                    "ram": flavor.ram,
                    "disk": flavor.disk,
                }
                for flavor in self.conn.compute.flavors()
            }
        except API_ERRORS as error:
            raise translate(error, "listing flavors") from None

    def zones(self) -> dict[str, dict[str, Any]]:
        """The compute availability zones, by name."""
        try:
            return {
                zone.name: {
                    "name": zone.name,
                    "available": bool((zone.state or {}).get("available")),
                }
                for zone in self.conn.compute.availability_zones()
            }
        except API_ERRORS as error:
            raise translate(error, "listing availability zones") from None

    # -- the Provider verbs -----------------------------------------------------------------

    def sizes(self) -> list[str]:
        try:
            return sorted(f.name for f in self.conn.compute.flavors())
        except API_ERRORS as error:
            raise translate(error, "listing flavors") from None

    def check(self, spec: EnvSpec) -> None:
        self._authorize()
        try:
            self._image()
            flavor = self._flavor(spec.size)
            network = self._network()
            self._subnet(network)
            self._external_network(network)
            self._key_name()
            if find(self.conn.network.find_extension, "allowed-address-pairs") is None:
                raise ProviderError(
                    "this cloud's Neutron lacks the allowed-address-pairs extension",
                    "the VIP needs it: ask the cloud's operator to enable it",
                )
            self._check_quotas(spec, flavor, network)
        except API_ERRORS as error:
            raise translate(error, "checking the request") from None

    def _check_quotas(self, spec: EnvSpec, flavor: Any, network: Any) -> None:
        existing = self._owned_servers(spec.app, spec.env)
        new_servers = max(0, spec.servers + 2 - len(existing))
        parts = self._find_parts(spec.app, spec.env, network)
        need_compute = {
            "instances": new_servers,
            "cores": new_servers * (flavor.vcpus or 0),
            "ram": new_servers * (flavor.ram or 0),
            "server_groups": 2 - len(parts.server_groups) if parts else 2,
        }
        need_network = {
            "ports": new_servers + (0 if parts and parts.vip_port else 1),
            "security_groups": 2 - len(parts.security_groups) if parts else 2,
            "floating_ips": 0 if network.is_router_external or (parts and parts.floating_ip) else 1,
        }
        project = self._project_id()
        compute = self.conn.compute.get_quota_set(project, usage=True)
        short = []
        for key, need in need_compute.items():
            limit = getattr(compute, key, None)
            used = (compute.usage or {}).get(key, 0)
            if need and limit is not None and limit >= 0 and limit - used < need:
                short.append(f"{key} needs {need}, {max(0, limit - used)} free of {limit}")
        quota = self.conn.network.get_quota(project, details=True)
        for key, need in need_network.items():
            detail = getattr(quota, key, None) or {}
            limit = detail.get("limit", -1)
            used = detail.get("used", 0) + detail.get("reserved", 0)
            if need and limit >= 0 and limit - used < need:
                short.append(f"{key} needs {need}, {max(0, limit - used)} free of {limit}")
        if short:
            raise CapacityError(
                f"the project's quota cannot hold {spec.env_id}: {'; '.join(short)}",
                "raise the quota (openstack quota set) or ask for fewer or smaller servers",
            )

    def find_env(self, app: str, env: str) -> EnvNetwork | None:
        try:
            network = self._network()
            parts = self._find_parts(app, env, network)
        except API_ERRORS as error:
            raise translate(error, f"looking up {naming.env_id(app, env)}") from None
        if parts is None or parts.vip_port is None:
            return None
        return self._env_network(parts)

    def ensure_env(self, app: str, env: str) -> EnvNetwork:
        try:
            return self._env_network(self._ensure_parts(app, env))
        except API_ERRORS as error:
            raise translate(
                error, f"making the network parts of {naming.env_id(app, env)}"
            ) from None

    def _env_network(self, parts: EnvParts) -> EnvNetwork:
        public = parts.floating_ip.floating_ip_address if parts.floating_ip else parts.vip
        return EnvNetwork(
            vip=parts.vip,
            public_address=public,
            cidr=parts.subnet.cidr,
            router_id=parts.router_id,
            master_address=self.cfg.master_address,
        )

    def _find_parts(self, app: str, env: str, network: Any) -> EnvParts | None:
        marks = naming.ownership(app, env)
        parts = EnvParts(app=app, env=env, network=network, subnet=self._subnet(network))
        groups = self._tagged("security_groups", marks)
        for role in naming.ROLES:
            of_role = [g for g in groups if marks_of(g.tags).get(naming.MARK_ROLE) == role]
            if of_role:
                parts.security_groups[role] = keeper(of_role)
        server_groups = list(self.conn.compute.server_groups())
        for role in naming.ROLES:
            named = [g for g in server_groups if g.name == group_name(app, env, role)]
            if named:
                parts.server_groups[role] = keeper(named)
        vip_marks = {**marks, naming.MARK_ROLE: ROLE_VIP}
        vip_ports = self._tagged("ports", vip_marks, network_id=network.id)
        parts.vip_port = keeper(vip_ports) if vip_ports else None
        if parts.vip_port is not None:
            fips = self._tagged("ips", vip_marks, port_id=parts.vip_port.id)
            parts.floating_ip = keeper(fips) if fips else None
        if not (parts.security_groups or parts.server_groups or parts.vip_port):
            return None
        return parts

    def _ensure_parts(self, app: str, env: str) -> EnvParts:
        with parts_lock(self.lock_dir, app, env):
            return self._ensure_parts_locked(app, env)

    def _ensure_parts_locked(self, app: str, env: str) -> EnvParts:
        network = self._network()
        parts = self._find_parts(app, env, network) or EnvParts(
            app=app, env=env, network=network, subnet=self._subnet(network)
        )
        for role in naming.ROLES:
            if role not in parts.security_groups:
                parts.security_groups[role] = self._make_security_group(app, env, role)
        self._ensure_rules(parts)
        for role in naming.ROLES:
            if role not in parts.server_groups:
                parts.server_groups[role] = self._make_server_group(app, env, role)
        if parts.vip_port is None:
            parts.vip_port = self._make_vip_port(app, env, network, parts)
        if parts.floating_ip is None:
            external = self._external_network(network)
            if external is not None:
                parts.floating_ip = self._make_floating_ip(
                    external,
                    parts.vip_port,
                    {**naming.ownership(app, env), naming.MARK_ROLE: ROLE_VIP},
                    vip_description(app, env),
                )
        return parts

    def _settle(
        self, made: Any, same: list[Any], marks: dict[str, str], delete: Callable[[Any], Any]
    ) -> Any:
        """Of ``same`` (``made`` and its twins by name and description), keep the oldest.

        Two builders making an environment's parts at once (salt-cloud creates servers
        in parallel) each find the other's twin here and keep the same one; a twin left
        untagged by a build that died is adopted and tagged.
        """
        winner = keeper([made, *same]) if same else made
        if winner.id != made.id:
            retry(lambda: delete(made), True)
        if set(tags_of(marks)) - set(winner.tags or ()):
            self._set_tags(winner, marks)
        return winner

    def _make_security_group(self, app: str, env: str, role: str) -> Any:
        marks = naming.ownership(app, env, role)
        name, description = group_name(app, env, role), group_description(app, env, role)
        group = retry(
            lambda: self.conn.network.create_security_group(name=name, description=description)
        )
        self._set_tags(group, marks)
        same = list(self.conn.network.security_groups(name=name, description=description))
        winner = self._settle(
            group,
            same,
            marks,
            lambda g: self.conn.network.delete_security_group(g, ignore_missing=True),
        )
        return self.conn.network.get_security_group(winner.id)

    def _wanted_rules(self, parts: EnvParts) -> dict[str, list[dict[str, Any]]]:
        master = f"{self.cfg.master_address}/32"
        lb = parts.security_groups["lb"].id

        def tcp(low: int, high: int | None = None, **source: Any) -> dict[str, Any]:
            return {
                "protocol": "tcp",
                "port_range_min": low,
                "port_range_max": high or low,
                **source,
            }

        from_master = [tcp(22, remote_ip_prefix=master), tcp(*SALT_PORTS, remote_ip_prefix=master)]
        return {
            "lb": [
                tcp(80, remote_ip_prefix="0.0.0.0/0"),
                tcp(443, remote_ip_prefix="0.0.0.0/0"),
                *from_master,
                {"protocol": VRRP_PROTOCOL, "remote_group_id": lb},
            ],
            "app": [tcp(80, remote_group_id=lb), *from_master],
        }

    def _ensure_rules(self, parts: EnvParts) -> None:
        def key(rule: dict[str, Any]) -> tuple:
            return (
                str(rule.get("protocol")),
                rule.get("port_range_min"),
                rule.get("port_range_max"),
                rule.get("remote_ip_prefix"),
                rule.get("remote_group_id"),
            )

        for role, rules in self._wanted_rules(parts).items():
            group = parts.security_groups[role]
            have = {
                key(
                    {
                        "protocol": r.protocol,
                        "port_range_min": r.port_range_min,
                        "port_range_max": r.port_range_max,
                        "remote_ip_prefix": r.remote_ip_prefix,
                        "remote_group_id": r.remote_group_id,
                    }
                )
                for r in self.conn.network.security_group_rules(
                    security_group_id=group.id, direction="ingress"
                )
            }
            for rule in rules:
                if key(rule) in have:
                    continue
                # Another builder of the same environment may add it at the same time.
                with contextlib.suppress(os_exceptions.ConflictException):
                    retry(
                        lambda rule=rule, group=group: self.conn.network.create_security_group_rule(
                            security_group_id=group.id,
                            direction="ingress",
                            ethertype="IPv4",
                            **rule,
                        )
                    )

    def _anti_affinity_policy(self) -> str:
        version = self.conn.compute.get_endpoint_data().max_microversion
        if version and discover.normalize_version_number(version) >= SOFT_ANTI_AFFINITY_VERSION:
            return "soft-anti-affinity"
        return "anti-affinity"

    def _make_server_group(self, app: str, env: str, role: str) -> Any:
        policy = self._anti_affinity_policy()
        name = group_name(app, env, role)
        group = retry(lambda: self.conn.compute.create_server_group(name=name, policy=policy))
        same = [g for g in self.conn.compute.server_groups() if g.name == name]
        winner = keeper([group, *same])
        if winner.id != group.id:
            retry(lambda: self.conn.compute.delete_server_group(group, ignore_missing=True))
        return winner

    def _make_vip_port(self, app: str, env: str, network: Any, parts: EnvParts) -> Any:
        preferred = naming.preferred_router_id(app, env)
        taken = []
        for port in self.conn.network.ports(
            network_id=network.id, tags=f"{naming.MARK_ROLE}={ROLE_VIP}"
        ):
            value = marks_of(port.tags).get(MARK_VRID, "")
            if value.isdigit():
                taken.append(int(value))
        router_id = next_router_id(preferred, taken)
        if router_id is None:
            raise CapacityError(
                f"all 255 VRRP router ids on network {network.name!r} are taken",
                "destroy an environment on that network or use another network",
            )
        marks = {
            **naming.ownership(app, env),
            naming.MARK_ROLE: ROLE_VIP,
            MARK_VRID: str(router_id),
        }
        name, description = vip_port_name(app, env), vip_description(app, env)
        port = retry(
            lambda: self.conn.network.create_port(
                name=name,
                network_id=network.id,
                fixed_ips=[{"subnet_id": parts.subnet.id}],
                security_group_ids=[parts.security_groups["lb"].id],
                description=description,
            )
        )
        self._set_tags(port, marks)
        same = list(
            self.conn.network.ports(network_id=network.id, name=name, description=description)
        )
        # Never re-tag another builder's VIP port: its router id may already be in use.
        winner = self._settle(
            port, same, {}, lambda p: self.conn.network.delete_port(p, ignore_missing=True)
        )
        if not marks_of(self.conn.network.get_port(winner.id).tags).get(MARK_VRID):
            self._set_tags(winner, marks)  # adopted from a build that died before tagging
        return self.conn.network.get_port(winner.id)

    def _make_floating_ip(
        self, external: Any, port: Any, marks: dict[str, str], description: str
    ) -> Any:
        try:
            fip = retry(
                lambda: self.conn.network.create_ip(
                    floating_network_id=external.id, port_id=port.id, description=description
                )
            )
        except os_exceptions.ConflictException:
            # One floating IP per fixed IP: another builder's is there already.
            existing = list(self.conn.network.ips(port_id=port.id, description=description))
            if not existing:
                raise
            fip = keeper(existing)
        self._set_tags(fip, marks)
        same = list(self.conn.network.ips(port_id=port.id, description=description))
        winner = self._settle(
            fip, same, marks, lambda f: self.conn.network.delete_ip(f, ignore_missing=True)
        )
        return self.conn.network.get_ip(winner.id)

    def create_servers(
        self,
        requests: Sequence[ServerRequest],
        timeout: float | None = None,
        progress: Progress = no_progress,
    ) -> list[Server]:
        if not requests:
            return []
        if timeout is None:
            timeout = self.cfg.server_timeout
        try:
            envs = {(r.app, r.env): self._ensure_parts(r.app, r.env) for r in requests}
            image = self._image()
            key_name = self._key_name()
            flavors = {r.size: self._flavor(r.size) for r in requests}
        except API_ERRORS as error:
            raise translate(error, "preparing servers") from None
        deadline = time.monotonic() + timeout

        def make(request: ServerRequest) -> Server:
            return self._create_one(
                request,
                envs[(request.app, request.env)],
                image,
                flavors[request.size],
                key_name,
                deadline,
                progress,
            )

        made: list[Server] = []
        failed: list[str] = []
        with ThreadPoolExecutor(max_workers=min(8, len(requests))) as pool:
            futures = [(r, pool.submit(make, r)) for r in requests]
            for request, future in futures:
                try:
                    made.append(future.result())
                except Exception as error:
                    reason = translate(error, f"making {request.name}")
                    failed.append(f"{request.name}: {reason.problem}")
        if failed:
            raise ProviderError(
                f"could not make {'; '.join(failed)}",
                "fix the cause and run the build again: servers already made are kept",
            )
        return made

    def _server_port(self, request: ServerRequest, parts: EnvParts) -> Any:
        marks = {
            **naming.ownership(request.app, request.env, request.role),
            MARK_SERVER: request.name,
        }
        found = self._tagged("ports", marks, network_id=parts.network.id)
        if found:
            return found[0]
        pairs = [{"ip_address": f"{parts.vip}/32"}] if request.role == "lb" else []
        port = retry(
            lambda: self.conn.network.create_port(
                name=request.name,
                network_id=parts.network.id,
                fixed_ips=[{"subnet_id": parts.subnet.id}],
                security_group_ids=[parts.security_groups[request.role].id],
                allowed_address_pairs=pairs,
                description=server_description(request.name),
            )
        )
        self._set_tags(port, marks)
        return port

    def _create_one(
        self,
        request: ServerRequest,
        parts: EnvParts,
        image: Any,
        flavor: Any,
        key_name: str,
        deadline: float,
        progress: Progress,
    ) -> Server:
        existing = [
            s for s in self._owned_servers(request.app, request.env) if s.name == request.name
        ]
        server = existing[0] if existing else None
        if server is not None and server.status == "ERROR":
            self._delete_one(request.name, server, deadline)
            server = None
        if server is None:
            port = self._server_port(request, parts)
            metadata = {
                **naming.ownership(request.app, request.env, request.role),
                MARK_SIZE: request.size,
            }
            document = userdata.render(
                request,
                self.cfg.minion_packages,
                master_port=self.cfg.master_port,
                publish_port=self.cfg.publish_port,
            )
            encoded = base64.b64encode(document.encode()).decode()
            options: dict[str, Any] = {}
            if self.cfg.availability_zone:
                options["availability_zone"] = self.cfg.availability_zone
            server = retry(
                lambda: self.conn.compute.create_server(
                    name=request.name,
                    image_id=image.id,
                    flavor_id=flavor.id,
                    networks=[{"port": port.id}],
                    key_name=key_name,
                    metadata=metadata,
                    user_data=encoded,
                    scheduler_hints={"group": parts.server_groups[request.role].id},
                    **options,
                )
            )
            log.info("creating server %s (%s)", request.name, server.id)
        server = self._wait_active(request.name, server, deadline)
        progress(f"{request.name} is running on OpenStack")
        return self._server_record(server, parts.network.name)

    def _wait_active(self, name: str, server: Any, deadline: float) -> Any:
        while True:
            server = retry(lambda server=server: self.conn.compute.get_server(server.id))
            if server.status == "ACTIVE":
                return server
            if server.status == "ERROR":
                fault = " ".join(str((server.fault or {}).get("message", "no fault given")).split())
                self._delete_one(name, server, deadline + DELETE_TIMEOUT)
                raise ProviderError(
                    f"server {name} went to ERROR ({fault}); it was removed",
                    "fix the cause (flavor, image, quota, capacity) and run the build again",
                )
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"server {name} is still {server.status} after the timeout",
                    "check the cloud, then run the build again (it keeps waiting for it)",
                )
            time.sleep(POLL_SECONDS)

    def list_servers(self, app: str | None = None, env: str | None = None) -> list[Server]:
        try:
            servers = self._owned_servers(app, env)
            floating = self._floating_addresses() if servers else {}
        except API_ERRORS as error:
            raise translate(error, "listing servers") from None
        return sorted(
            (self._server_record(s, self.cfg.network, floating) for s in servers),
            key=lambda s: s.name,
        )

    def delete_servers(
        self, names: Iterable[str], timeout: float = 300, progress: Progress = no_progress
    ) -> list[str]:
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return []
        try:
            owned = {s.name: s for s in self._owned_servers() if s.name in wanted}
        except API_ERRORS as error:
            raise translate(error, "listing servers") from None
        deadline = time.monotonic() + timeout
        deleted, failed = [], []
        with ThreadPoolExecutor(max_workers=min(8, len(wanted))) as pool:
            futures = [
                (n, pool.submit(self._delete_one, n, owned.get(n), deadline)) for n in wanted
            ]
            for name, future in futures:
                try:
                    if future.result():
                        deleted.append(name)
                        progress(f"{name} deleted")
                except Exception as error:
                    failed.append(f"{name}: {translate(error, f'deleting {name}').problem}")
        if failed:
            raise ProviderError(
                f"could not delete {'; '.join(failed)}", "run the same command again"
            )
        return deleted

    def _delete_one(self, name: str, server: Any | None, deadline: float) -> bool:
        """Delete a server and the ports and floating IPs gdl made for it; True if it existed."""
        if server is not None:
            retry(lambda: self.conn.compute.delete_server(server, ignore_missing=True), True)
            while find(self.conn.compute.find_server, server.id) is not None:
                if time.monotonic() >= deadline:
                    raise ProviderError(
                        f"server {name} is still being deleted after the timeout",
                        "run the same command again",
                    )
                time.sleep(POLL_SECONDS)
        marks = {MARK_SERVER: name}
        parsed = naming.parse_server_name(name)
        if parsed is not None:
            marks.update(naming.ownership(parsed.app, parsed.env))
        # By tags, and by description for what a build that died left untagged.
        described = server_description(name)
        fips = {f.id: f for f in self._tagged("ips", marks)}
        fips.update((f.id, f) for f in self.conn.network.ips(description=described))
        ports = {p.id: p for p in self._tagged("ports", marks)}
        ports.update((p.id, p) for p in self.conn.network.ports(name=name, description=described))
        for fip in fips.values():
            retry(lambda fip=fip: self.conn.network.delete_ip(fip, ignore_missing=True), True)
        for port in ports.values():
            # Nova detaches the port asynchronously: Neutron answers 409 until it has.
            retry(lambda port=port: self.conn.network.delete_port(port, ignore_missing=True), True)
        return server is not None

    def attach_floating_ip(self, name: str) -> str:
        """Give server ``name`` a floating IP of its own (tagged to go with it); its address."""
        parsed = naming.parse_server_name(name)
        if parsed is None:
            raise NotFound(f"{name!r} is not a gdl server name", "use <role>-<index>-<app>-<env>")
        marks = {**naming.ownership(parsed.app, parsed.env), MARK_SERVER: name}
        try:
            existing = self._tagged("ips", marks)
            if existing:
                return existing[0].floating_ip_address
            network = self._network()
            external = self._external_network(network)
            if external is None:
                raise ProviderError(
                    f"network {network.name!r} is external: {name} needs no floating IP",
                    "drop floating_ip from the profile",
                )
            ports = self._tagged("ports", marks, network_id=network.id)
            if not ports:
                raise NotFound(f"server {name} has no gdl port", "create the server first")
            return self._make_floating_ip(
                external, ports[0], marks, server_description(name)
            ).floating_ip_address
        except API_ERRORS as error:
            raise translate(error, f"attaching a floating IP to {name}") from None

    def teardown_env(self, app: str, env: str) -> None:
        """Remove the environment's servers still there, floating IPs, ports, groups.

        Found by tags, and by the names and descriptions gdl gives, so parts a build left
        untagged when it died go too; other environments' resources are never touched.
        """
        env_id = naming.env_id(app, env)
        marks = naming.ownership(app, env)
        try:
            leftovers = self._owned_servers(app, env)
            if leftovers:
                self.delete_servers([s.name for s in leftovers])
            # By tags, and by description for what a build that died left untagged.
            fips = {f.id: f for f in self._tagged("ips", marks)}
            fips.update(
                (f.id, f) for f in self.conn.network.ips() if ours_by_description(f, app, env)
            )
            for fip in fips.values():
                retry(lambda fip=fip: self.conn.network.delete_ip(fip, ignore_missing=True), True)
            ports = {p.id: p for p in self._tagged("ports", marks)}
            network = find(self.conn.network.find_network, self.cfg.network)
            if network is not None:
                ports.update(
                    (p.id, p)
                    for p in self.conn.network.ports(network_id=network.id)
                    if ours_by_description(p, app, env)
                )
            for port in ports.values():
                retry(
                    lambda port=port: self.conn.network.delete_port(port, ignore_missing=True), True
                )
            groups = {g.id: g for g in self._tagged("security_groups", marks)}
            for role in naming.ROLES:
                groups.update(
                    (g.id, g)
                    for g in self.conn.network.security_groups(
                        name=group_name(app, env, role),
                        description=group_description(app, env, role),
                    )
                )
            for group in groups.values():
                # A port being deleted may still hold the group for a moment: 409, retried.
                retry(
                    lambda group=group: self.conn.network.delete_security_group(
                        group, ignore_missing=True
                    ),
                    True,
                )
            names = {group_name(app, env, role) for role in naming.ROLES}
            for group in list(self.conn.compute.server_groups()):
                if group.name in names:
                    retry(
                        lambda group=group: self.conn.compute.delete_server_group(
                            group, ignore_missing=True
                        )
                    )
        except API_ERRORS as error:
            raise translate(error, f"removing the network parts of {env_id}") from None

    def list_envs(self) -> list[tuple[str, str]]:
        envs = set(super().list_envs())
        for port in self.conn.network.ports(tags=f"{naming.MARK_ROLE}={ROLE_VIP}"):
            marks = marks_of(port.tags)
            if naming.MARK_APP in marks and naming.MARK_ENV in marks:
                envs.add((marks[naming.MARK_APP], marks[naming.MARK_ENV]))
        return sorted(envs)
