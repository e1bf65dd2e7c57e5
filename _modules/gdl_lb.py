"""Drive the load balancer of a gdl environment from its LB servers.

Talks to haproxy's runtime API (the stats socket the ``gdl.lb`` states set
up, mode 600, level admin) and looks at this host's addresses for the VIP.
Runs on the minion with Salt and the standard library only.

The socket path comes from the ``gdl:roles:lb:haproxy:socket`` config or
pillar key (default ``/run/haproxy/admin.sock``); every function also takes
``socket=`` to override it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket as socketlib
import time
import urllib.error
import urllib.request

import salt.utils.network
from salt.exceptions import CommandExecutionError

__virtualname__ = "gdl_lb"

DEFAULT_SOCKET = "/run/haproxy/admin.sock"
SOCKET_CONFIG_KEY = "gdl:roles:lb:haproxy:socket"
READ_TIMEOUT = 5.0
# Rows of `show stat` that are not servers.
AGGREGATE_ROWS = ("FRONTEND", "BACKEND")


def __virtual__():
    if not hasattr(socketlib, "AF_UNIX"):
        return (False, "gdl_lb needs Unix sockets to reach haproxy's runtime API")
    return __virtualname__


def _socket_path(socket=None):
    if socket:
        return socket
    try:
        configured = __salt__["config.get"](SOCKET_CONFIG_KEY, "")
    except (NameError, KeyError):
        configured = ""
    return configured or DEFAULT_SOCKET


def command(cmd, socket=None, timeout=READ_TIMEOUT):
    """
    Send one command to haproxy's runtime API and return its answer.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' gdl_lb.command 'show info'
    """
    path = _socket_path(socket)
    try:
        with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(cmd.strip().encode() + b"\n")
            # Without `prompt`, haproxy answers one command and closes.
            chunks = []
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except FileNotFoundError as exc:
        raise CommandExecutionError(
            f"haproxy's runtime socket {path} does not exist: is haproxy running "
            "(apply gdl.lb to this server)?"
        ) from exc
    except OSError as exc:
        raise CommandExecutionError(f"haproxy's runtime socket {path}: {exc}") from exc
    return b"".join(chunks).decode(errors="replace")


def parse_stat(text):
    """Turn `show stat` CSV into one dict per server (frontend/backend rows left out)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise CommandExecutionError(f"unexpected answer to 'show stat': {text[:200]!r}")
    header = lines[0][2:].rstrip(",").split(",")
    servers = []
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname") in AGGREGATE_ROWS:
            continue
        servers.append(
            {
                "backend": row.get("pxname", ""),
                "name": row.get("svname", ""),
                "status": row.get("status", ""),
                "sessions": _int(row.get("scur")),
                # A server row has no req_rate (haproxy keeps it for frontends); its
                # `rate` counts the requests it was given over the last second.
                "request_rate": _int(row.get("req_rate") or row.get("rate")),
                "weight": _int(row.get("weight")),
                "check": row.get("check_status", ""),
                "address": row.get("addr", ""),
                "downtime": _int(row.get("downtime")),
            }
        )
    return servers


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def servers(backend=None, socket=None):
    """
    The state of each backend server: status (UP, DOWN, DRAIN, MAINT...),
    current sessions, requests per second over the last second, weight,
    last check.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' gdl_lb.servers
        salt 'lb-0-blog-dev' gdl_lb.servers backend=be_blog_dev
    """
    found = parse_stat(command("show stat", socket=socket))
    if backend:
        found = [server for server in found if server["backend"] == backend]
    return found


def _find(server, backend=None, socket=None):
    matches = [row for row in servers(backend=backend, socket=socket) if row["name"] == server]
    if not matches:
        known = sorted({row["name"] for row in servers(socket=socket)})
        raise CommandExecutionError(
            f"haproxy has no server {server!r}: use one of {', '.join(known) or 'none'}"
        )
    if len(matches) > 1:
        backends = ", ".join(sorted(row["backend"] for row in matches))
        raise CommandExecutionError(
            f"server {server!r} is in several backends ({backends}): give backend="
        )
    return matches[0]


def _set_state(server, state, backend=None, socket=None):
    row = _find(server, backend=backend, socket=socket)
    answer = command(f"set server {row['backend']}/{row['name']} state {state}", socket=socket)
    if answer.strip():
        raise CommandExecutionError(
            f"haproxy refused to set {row['backend']}/{row['name']} {state}: {answer.strip()}"
        )
    return True


def drain(server, backend=None, socket=None):
    """
    Stop sending new requests to ``server``; requests in flight finish.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' gdl_lb.drain app-1-blog-dev
    """
    return _set_state(server, "drain", backend=backend, socket=socket)


def ready(server, backend=None, socket=None):
    """
    Put ``server`` back in rotation (health checks still decide if it gets traffic).

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' gdl_lb.ready app-1-blog-dev
    """
    return _set_state(server, "ready", backend=backend, socket=socket)


def wait_drained(server, timeout=30, backend=None, socket=None, interval=0.2):
    """
    Wait until ``server`` has no current sessions; True when it got there
    within ``timeout`` seconds, False otherwise.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' gdl_lb.wait_drained app-1-blog-dev timeout=60
    """
    deadline = time.monotonic() + float(timeout)
    while True:
        if _find(server, backend=backend, socket=socket)["sessions"] == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def local_addresses():
    """The IPv4 and IPv6 addresses on this host's interfaces."""
    addresses = set()
    for details in salt.utils.network.interfaces().values():
        # keepalived adds the VIP beside the LB's own address: Salt lists it as secondary.
        for family in ("inet", "inet6", "secondary"):
            for entry in details.get(family, []):
                if entry.get("address"):
                    addresses.add(entry["address"].split("%")[0])
    return sorted(addresses)


def address_in(vip, addresses):
    """True when ``vip`` is one of ``addresses`` (compared as IP addresses)."""
    try:
        wanted = ipaddress.ip_address(str(vip).split("/")[0])
    except ValueError as exc:
        raise CommandExecutionError(f"{vip!r} is not an IP address") from exc
    for address in addresses:
        try:
            if ipaddress.ip_address(address) == wanted:
                return True
        except ValueError:
            continue
    return False


def holds_vip(vip):
    """
    True when the VIP is on one of this host's interfaces (this LB is the VRRP master).

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' gdl_lb.holds_vip 10.20.0.10
    """
    return address_in(vip, local_addresses())


def running(names=("haproxy", "keepalived"), proc="/proc"):
    """
    Which of the daemons ``names`` have a process on this host, by process name.

    A re-run of the build asks this instead of applying the LB role again
    when nothing it depends on changed.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' gdl_lb.running
    """
    if isinstance(names, str):
        names = [name for name in names.split(",") if name]
    found = set()
    try:
        entries = os.listdir(proc)
    except OSError as exc:
        raise CommandExecutionError(f"cannot list {proc}: {exc}") from exc
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "comm"), encoding="utf-8") as handle:
                found.add(handle.read().strip())
        except OSError:
            continue  # the process ended meanwhile
    return {name: name in found for name in names}


def wait_up(server, timeout=30, backend=None, socket=None, interval=0.2):
    """
    Wait until haproxy counts ``server`` UP (its health checks pass and it is
    in rotation); True when it got there within ``timeout`` seconds.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' gdl_lb.wait_up app-1-blog-dev timeout=30
    """
    deadline = time.monotonic() + float(timeout)
    while True:
        # "UP 1/2" is a server on its way down: only a plain UP is fit.
        if _find(server, backend=backend, socket=socket)["status"] in ("UP", "no check"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _get(url, host, timeout):
    """(status, body) of one GET; (None, reason) when no HTTP answer came."""
    if not str(url).startswith(("http://", "https://")):
        raise CommandExecutionError(f"{url!r} is not an http(s) URL")
    request = urllib.request.Request(url, headers={"Host": host} if host else {})  # noqa: S310
    try:
        # The scheme is checked above: no file: or custom scheme is opened.
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310  # nosec B310
            return response.status, response.read(65536).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(65536).decode(errors="replace")
    except (OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))


def check_http(url, host=None, version=None, timeout=30, interval=0.5):
    """
    Ask ``url`` (an app server's health check, straight, not through haproxy)
    until it answers 200, and, when ``version`` is given and the answer is
    JSON with a ``version`` key, until that is ``version``.  Gives up after
    ``timeout`` seconds.

    Returns ``healthy`` (True or False), the last ``status`` (None when no
    HTTP answer came), the ``version`` the answer named, and ``detail``.

    CLI Example:

    .. code-block:: bash

        salt 'lb-0-blog-dev' gdl_lb.check_http http://10.20.0.11/healthz host=blog
    """
    deadline = time.monotonic() + float(timeout)
    while True:
        status, body = _get(url, host, timeout=min(5.0, max(1.0, float(timeout))))
        answered = None
        if status is not None:
            try:
                data = json.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict) and data.get("version") is not None:
                answered = str(data["version"])
        if status == 200 and (version is None or answered in (None, str(version))):
            return {"healthy": True, "status": status, "version": answered, "detail": "ok"}
        if status is None:
            detail = f"no answer ({body})"
        elif status != 200:
            detail = f"answered {status}"
        else:
            detail = f"runs version {answered}, not {version}"
        if time.monotonic() >= deadline:
            return {"healthy": False, "status": status, "version": answered, "detail": detail}
        time.sleep(float(interval))
