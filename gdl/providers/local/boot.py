"""What a local host boots with: its size's caps, its files, what it sees of the machine.

A host's *boot description* is the JSON :mod:`gdl.providers.local.hostinit`
reads as PID 1: the host's name and namespace, the directories it starts with
empty (:func:`fresh_dirs`) or still sees from the machine (:func:`machine_dirs`),
the files written into it (its /etc/hosts, its minion's config and preseeded
key) and the salt-minion it runs.  Everything here is computed, nothing made;
:mod:`gdl.providers.local.lifecycle` boots hosts from these descriptions.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gdl import naming
from gdl.providers.base import ServerRequest
from gdl.providers.local import confine, host, network

# Where a host's salt-minion writes what it prints: the host's console.
MINION_CONSOLE_LOG = "/var/log/salt/minion-console.log"

# Directories a host starts with empty instead of seeing the machine's: its
# own Salt identity, a new server's /root and /srv.  The state dir is added
# at run time (it holds other hosts' records and the runner's pillar).
FRESH_DIRS = ("/etc/salt", "/var/cache/salt", "/var/log/salt", "/var/lib/salt", "/root", "/srv")


@dataclass(frozen=True)
class Size:
    """An OpenStack classic flavor, as a local host's caps."""

    memory_mb: int
    vcpus: int
    disk_gb: int  # the cap of the host's private writable layer (tmpfs)


SIZES = {
    "m1.tiny": Size(512, 1, 1),
    "m1.small": Size(2048, 1, 20),
    "m1.medium": Size(4096, 2, 40),
    "m1.large": Size(8192, 4, 80),
    "m1.xlarge": Size(16384, 8, 160),
}


@dataclass(frozen=True)
class HostSettings:
    """What every host of one local cloud is made with."""

    tag: str  # the cloud's tag, in the kernel names of its hosts
    bridge: str
    cidr: ipaddress.IPv4Network
    venv: Path  # where salt-minion is installed
    master_port: int
    publish_port: int
    hidden_dirs: tuple[str, ...] = ()  # the master's directories hosts must not read

    @property
    def gateway(self) -> str:
        """The bridge's address: the master and the machine on the cloud network."""
        return str(network.gateway_address(self.cidr))


def _is_under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _outermost(paths: Iterable[str]) -> list[str]:
    """The paths not inside another of them (hiding a directory hides its subtree)."""
    unique = sorted({os.path.normpath(p) for p in paths})
    return [p for p in unique if not any(o != p and _is_under(p, o) for o in unique)]


def fresh_dirs(candidates: Iterable[str], needed: Iterable[str]) -> list[str]:
    """The directories a host starts with empty: the candidates, minus what must stay.

    /tmp and /run are fresh mounts anyway; a directory holding a path in
    ``needed`` (the minion's interpreter) stays visible.
    """
    needed = list(needed)
    return _outermost(
        d
        for d in candidates
        # Paths compared, not files made: /tmp and /run are never hidden.
        if not _is_under(d, "/tmp") and not _is_under(d, "/run") and d != "/"  # nosec B108
        if not any(_is_under(path, d) for path in needed)
    )


def machine_dirs(needed: Iterable[str]) -> list[str]:
    """Directories under /tmp or /run (fresh in every host) that hosts must still see.

    A venv or checkout there (a CI clone under /tmp, say) is bind-mounted into
    each host read-only, at the same path.
    """
    return _outermost(
        path
        for path in needed
        # Paths compared, not files made.
        if os.path.isdir(path) and (_is_under(path, "/tmp") or _is_under(path, "/run"))  # nosec B108
    )


def hosts_file(gateway: str, records: Iterable[dict]) -> str:
    """An /etc/hosts naming the master and every host of ``records``."""
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{gateway}\tsalt gdl-master",
    ]
    lines += [f"{r['address']}\t{r['name']}" for r in sorted(records, key=lambda r: r["name"])]
    return "\n".join(lines) + "\n"


def minion_config(settings: HostSettings, request: ServerRequest) -> str:
    """The host's /etc/salt/minion: its id, its master, its ownership grains."""
    return "\n".join(
        [
            f"id: {request.name}",
            f"master: {request.master_address or settings.gateway}",
            f"master_port: {settings.master_port}",
            f"publish_port: {settings.publish_port}",
            "ipv6: false",
            # Join fast: the key is preseeded, so there is nothing to wait for.
            "acceptance_wait_time: 1",
            "acceptance_wait_time_max: 5",
            "random_reauth_delay: 0",
            "auth_timeout: 10",
            "recon_default: 200",
            "recon_max: 2000",
            "recon_randomize: false",
            # What each job did, in the host's /var/log/salt/minion: where a failed
            # or stopped run's line sends the operator (warnings only, by default).
            "log_level_logfile: info",
            # fqdn grains do reverse lookups; there is no resolver here.
            "enable_fqdns_grains: false",
            # See STRICT_LOADER in gdl/userdata.py: a second of CPU less per state run.
            "lazy_loader_strict_matching: true",
            # The minion checks the master's key against it before it trusts it.
            *([f"master_finger: '{request.master_finger}'"] if request.master_finger else []),
            "grains:",
            *(
                f"  {key}: {value}"
                for key, value in naming.ownership(request.app, request.env, request.role).items()
            ),
            "",
        ]
    )


def boot_description(
    settings: HostSettings,
    request: ServerRequest,
    size: Size,
    stage_dir: Path,
    hosts: Iterable[dict],
    cgroups: Sequence[str] = (),
) -> dict:
    """The boot description of the host ``request`` asks for (without its interfaces).

    ``stage_dir`` is the host's private directory on the machine; ``hosts``
    are the records its /etc/hosts lists; ``cgroups`` are the host's own.
    """
    names = host.HostNames.of(settings.tag, request.name)
    # The minion's interpreter must stay visible (a pyenv Python lives under /root).
    needed = [os.path.realpath(p) for p in (settings.venv, settings.venv / "bin" / "python3")]
    # An editable install of gdl (a checkout) is read through the venv too.
    needed.append(os.path.realpath(Path(__file__).resolve().parents[3]))
    hidden = fresh_dirs((*FRESH_DIRS, *settings.hidden_dirs), needed)
    return {
        "hostname": request.name,
        "netns": str(names.netns_path),
        "stage_dir": str(stage_dir),
        "disk_bytes": size.disk_gb * 1024**3,
        "fresh_dirs": hidden,
        "machine_dirs": machine_dirs(needed),
        "cgroups": list(cgroups),
        "sysctls": dict(confine.NETWORK_SETTINGS),
        "files": {
            "/etc/hostname": {"text": request.name + "\n"},
            "/etc/hosts": {"text": hosts_file(settings.gateway, hosts)},
            "/etc/resolv.conf": {
                # Nothing listens on port 53 here: lookups fail at once instead of hanging.
                "text": "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
            },
            "/etc/salt/minion": {"text": minion_config(settings, request)},
            "/etc/salt/minion_id": {"text": request.name},
            "/etc/salt/pki/minion/minion.pem": {
                "text": request.minion_private_key,
                "mode": "400",
            },
            "/etc/salt/pki/minion/minion.pub": {"text": request.minion_public_key},
        },
        "services": [
            {
                # The host's init restarts a minion that ends: Salt's own keepalive
                # process would be a second interpreter doing the same, per host.
                "argv": [
                    str(settings.venv / "bin" / "salt-minion"),
                    "-c",
                    "/etc/salt",
                    "--disable-keepalive",
                ],
                "log": MINION_CONSOLE_LOG,
            }
        ],
    }
