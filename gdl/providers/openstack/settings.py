"""The ``gdl:openstack`` settings of the master config, checked.

::

    cloud: mycloud            # clouds.yaml entry; else OS_CLOUD; else OS_* variables
    clouds_file: /etc/openstack/clouds.yaml   # optional: a clouds.yaml outside the usual places
    image: debian-12          # image name or id (of several active images of one name: the newest)
    network: private          # an existing network the servers share: name or id
    subnet: private-v4        # optional: name or id; else the network's only IPv4 subnet
    external_network: public  # optional: where floating IPs come from; else the external
                              # network of the subnet's router
    floating_ip: true         # optional: false when the master reaches the fixed addresses
                              # (a provider network): the VIP is served at its own address
    key_name: ops             # optional: a key pair given SSH access; else none
    boot_from_volume: false   # optional: true for flavors with no disk (disk 0)
    volume_size: 20           # optional, GiB: the boot volume's size (default: what the
                              # image needs, at least the flavor's disk)
    master_address: 10.0.0.2  # what minions dial: an IPv4 address or a DNS name
    master_source_cidr: 203.0.113.7/32   # optional: where the master's traffic comes from
                              # as the cloud sees it (SSH and metrics rules); default:
                              # master_address/32 when it is an address
    master_security_group: salt-master   # optional: the master's own group (a master in
                              # the cloud): gdl adds Salt's ports from the servers to it
    master_port: 4506         # optional: the master's ports, when not Salt's defaults
    publish_port: 4505
    minion_packages: []       # optional: Debian packages cloud-init installs first (none
                              # needed: Salt comes from the master's package source)
    pip_index_url: https://mirror.example/simple   # optional: a package index the servers
                              # reach, used besides the master's wheels
    http_proxy: http://proxy.example:3128   # optional: the servers' proxy for pip
    salt_in_image: false      # optional: true for an image with Salt in /opt/gdl/salt
                              # already: the master builds no wheelhouse for it
    api_timeout: 60           # optional: seconds one API request may take (openstacksdk's
                              # api_timeout; it replaces one set in clouds.yaml)
    server_timeout: 600       # optional: seconds for Nova to make a server ACTIVE
    minion_timeout: 900       # optional: seconds from ACTIVE until its minion answers
                              # (first boot installs Salt from the master)
    flavor: {m1.small: g1.small}   # optional: size -> flavor name
    availability_zone: nova   # optional
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from gdl import userdata
from gdl.errors import ConfigError


@dataclass(frozen=True)
class OpenStackSettings:
    """The ``gdl:openstack`` settings, checked."""

    image: str
    network: str
    master_address: str
    cloud: str | None = None
    clouds_file: str | None = None
    subnet: str | None = None
    external_network: str | None = None
    floating_ip: bool = True
    boot_from_volume: bool = False
    volume_size: int | None = None
    key_name: str | None = None
    availability_zone: str | None = None
    flavors: dict[str, str] = field(default_factory=dict)
    # Without it keystoneauth waits for an answer forever, while the build holds its lock.
    api_timeout: float = 60.0
    server_timeout: float = 600.0
    minion_timeout: float = 900.0
    master_source_cidr: str | None = None
    master_security_group: str | None = None
    master_port: int | None = None
    publish_port: int | None = None
    minion_packages: tuple[str, ...] = userdata.DEFAULT_PACKAGES
    pip_index_url: str | None = None
    http_proxy: str | None = None
    salt_in_image: bool = False

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
        master_security_group = text("master_security_group")
        master_source_cidr = source_cidr(
            master_address, text("master_source_cidr"), master_security_group
        )
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

        def flag(key: str, default: bool) -> bool:
            value = section.get(key, default)
            if not isinstance(value, bool):
                raise ConfigError(
                    f"gdl:openstack:{key} {value!r} is not true or false",
                    f"write {key}: true or {key}: false (unquoted)",
                )
            return value

        volume_size = section.get("volume_size")
        if volume_size is not None and (
            isinstance(volume_size, bool) or not isinstance(volume_size, int) or volume_size < 1
        ):
            raise ConfigError(
                f"gdl:openstack:volume_size {volume_size!r} is not a number of GiB",
                "give a whole number of GiB, or leave it out for what the image needs",
            )

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
            pip_index_url=_url(text("pip_index_url"), "pip_index_url"),
            http_proxy=_url(text("http_proxy"), "http_proxy"),
            salt_in_image=flag("salt_in_image", False),
            image=text("image", required=True) or "",
            network=text("network", required=True) or "",
            master_address=master_address,
            master_source_cidr=master_source_cidr,
            master_security_group=master_security_group,
            cloud=text("cloud"),
            clouds_file=text("clouds_file"),
            subnet=text("subnet"),
            external_network=text("external_network"),
            floating_ip=flag("floating_ip", True),
            boot_from_volume=flag("boot_from_volume", False),
            volume_size=volume_size,
            key_name=text("key_name"),
            availability_zone=text("availability_zone"),
            flavors={str(k): str(v) for k, v in flavors.items()},
            api_timeout=seconds("api_timeout", 60),
            server_timeout=seconds("server_timeout", 600),
            minion_timeout=seconds("minion_timeout", 900),
        )


def _url(value: str | None, key: str) -> str | None:
    """An http(s) URL without spaces or quotes (it lands in a shell script), or None."""
    if value is None:
        return None
    if not re.fullmatch(r"https?://[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]+", value) or "'" in value:
        raise ConfigError(
            f"gdl:openstack:{key} {value!r} is not an http or https URL",
            "give a URL such as http://host:port/..., or leave it out",
        )
    return value


# A DNS name as minions dial it (RFC 1123 labels).
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"(?=.{{1,253}}$){LABEL}(\.{LABEL})*\.?")


def source_cidr(
    master_address: str, configured: str | None, master_security_group: str | None
) -> str | None:
    """The IPv4 network the master's traffic comes from, as the cloud sees it.

    ``master_address`` is what minions dial: an address or a name, maybe NAT'd.  The
    security groups need the source: given, else ``master_address/32`` when it is an
    address.  A name with neither a source nor the master's security group is refused:
    the rules for SSH and metrics would have no one to admit.
    """
    try:
        address = ipaddress.ip_address(master_address)
    except ValueError:
        address = None
        if not HOSTNAME.fullmatch(master_address):
            raise ConfigError(
                f"gdl:openstack:master_address {master_address!r} is neither an IP address "
                "nor a DNS name",
                "give the address or name minions use to reach the master",
            ) from None
    if address is not None and address.version != 4:
        # The security group rules, the subnet and the VIP are IPv4 only.
        raise ConfigError(
            f"gdl:openstack:master_address {master_address} is IPv6, "
            "which the openstack provider does not support yet",
            "give the master's IPv4 address or a name that resolves to it",
        )
    if configured is not None:
        try:
            network = ipaddress.ip_network(configured, strict=False)
        except ValueError:
            network = None
        if network is None or network.version != 4:
            raise ConfigError(
                f"gdl:openstack:master_source_cidr {configured!r} is not an IPv4 address "
                "or network",
                "give the address the cloud sees the master's traffic come from, "
                "e.g. 203.0.113.7/32",
            )
        return str(network)
    if address is not None:
        return f"{address}/32"
    if master_security_group is None:
        raise ConfigError(
            f"gdl:openstack:master_address {master_address!r} is a name, and the security "
            "groups need the address the master's traffic comes from",
            "set gdl:openstack:master_source_cidr (e.g. 203.0.113.7/32), or "
            "master_security_group for a master in the cloud",
        )
    return None
