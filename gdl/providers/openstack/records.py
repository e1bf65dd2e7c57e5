"""Nova's servers in the Provider interface's words: their states and records."""

from __future__ import annotations

from typing import Any

from gdl import naming
from gdl.providers.base import BUILDING, ERROR, RUNNING, STOPPED, Server
from gdl.providers.openstack.marks import MARK_SIZE

# States Nova passes through on its own: waiting for ACTIVE is worth it.
TRANSITIONAL = frozenset(
    {
        "BUILD",
        "REBUILD",
        "REBOOT",
        "HARD_REBOOT",
        "RESIZE",
        "REVERT_RESIZE",
        "MIGRATING",
        "PASSWORD",
    }
)
# Deleted, or soft-deleted by a cloud with deferred delete (reclaimed later, never back
# unless restored): gone, as far as an environment is concerned.
GONE = frozenset({"DELETED", "SOFT_DELETED"})

# Nova's server states in the Provider interface's words; any other is an error the
# record names (UNKNOWN: Nova lost its compute host; a state newer than this table).
STATES = {
    "ACTIVE": RUNNING,
    "VERIFY_RESIZE": RUNNING,  # runs on its new flavor, waiting for a confirmation
    **dict.fromkeys(TRANSITIONAL, BUILDING),
    "SHUTOFF": STOPPED,
    "STOPPED": STOPPED,
    "SUSPENDED": STOPPED,
    "PAUSED": STOPPED,
    "SHELVED": STOPPED,
    "SHELVED_OFFLOADED": STOPPED,
    "RESCUE": STOPPED,  # runs a rescue image, not its own disk
    "ERROR": ERROR,
}


def state_of(status: str | None) -> str:
    """The Provider interface's state for Nova's ``status``."""
    return STATES.get(status or "", ERROR)


def server_record(
    server: Any, network_name: str | None = None, floating: dict[str, str] | None = None
) -> Server:
    """A Nova server as the Provider interface's record.

    ``network_name`` is the resolved name of the servers' network (Nova keys a server's
    addresses by network name, never by id); ``floating``: server name -> floating IP.
    """
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
    status = server.status or ""
    fault = ""
    if status == "ERROR" and server.fault:
        fault = " ".join(str(server.fault.get("message", "")).split())
    elif status not in STATES:
        fault = f"Nova reports it {status or 'without a state'}"
    image = server.image.get("id", "") if isinstance(server.image, dict) else ""
    return Server(
        name=server.name,
        app=marks.get(naming.MARK_APP, ""),
        env=marks.get(naming.MARK_ENV, ""),
        role=marks.get(naming.MARK_ROLE, ""),
        state=state_of(status),
        address=address,
        size=marks.get(MARK_SIZE, ""),
        provider_id=server.id,
        fault=fault,
        extra={
            "status": status,
            "image": image,
            # Nova's hash of the project and the compute host: equal on one host.
            **({"host_id": server.host_id} if getattr(server, "host_id", None) else {}),
            **({"public_address": public} if public else {}),
        },
    )
