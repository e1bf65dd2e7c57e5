"""What gdl's salt-cloud drivers (``_clouds/gdl_local.py``, ``_clouds/gdl_openstack.py``) do.

Both drivers are the same adapter over a :class:`gdl.providers.base.Provider`:
salt-cloud's functions and actions map onto the provider's verbs here, and each
driver module only says which provider it builds and documents its options.
Servers are made through :func:`gdl.servers.make`, the path the runner's app
servers take too (keys preseeded, cleaned up on failure, the minion waited for).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import salt.config
import salt.utils.cloud
from salt.exceptions import SaltCloudSystemExit

from gdl import keys, naming, servers
from gdl.config import Settings
from gdl.errors import GdlError
from gdl.providers.base import Provider, Server
from gdl.saltops import MasterOps


def settings(
    opts: dict[str, Any], section: str, entry: dict[str, Any], keys_: tuple[str, ...]
) -> Settings:
    """The master's gdl settings; the provider entry's ``keys_`` override ``gdl: <section>:``.

    salt-cloud reads the master config first, then its own, so ``opts`` carry both.
    """
    base = Settings.from_opts(opts)
    merged = dict(getattr(base, section))
    merged.update({key: entry[key] for key in keys_ if entry.get(key)})
    return dataclasses.replace(base, **{section: merged})


def master_opts(opts: dict[str, Any]) -> dict[str, Any]:
    """The master's own options, read from its config file beside salt-cloud's.

    salt-cloud's options are the master's with a cache dir of salt-cloud's own,
    so the master's keys, minion cache and event bus are reached through these.
    """
    path = opts.get("master_config") or os.path.join(
        os.path.dirname(opts.get("conf_file") or "/etc/salt/cloud"), "master"
    )
    return salt.config.master_config(path)


def server_identity(vm_: dict[str, Any], opts: dict[str, Any]) -> tuple[str, str, str]:
    """(app, env, role) of the server salt-cloud is making.

    From the profile (or the caller's overrides) first, else from the server name
    ``<role>-<index>-<app>-<env>``.
    """
    name = vm_["name"]
    parsed = naming.parse_server_name(name)
    value = {}
    for key in ("app", "env", "role"):
        given = salt.config.get_cloud_config_value(key, vm_, opts, default=None)
        value[key] = given or (getattr(parsed, key) if parsed else None)
    missing = [key for key, given in value.items() if not given]
    if missing:
        raise SaltCloudSystemExit(
            f"{name}: no {', '.join(missing)}: name the server <role>-<index>-<app>-<env> "
            "or set them in the profile"
        )
    return value["app"], value["env"], value["role"]


def node(server: Server) -> dict[str, Any]:
    """A server in salt-cloud's standard fields."""
    public = server.extra.get("public_address", "")
    return {
        "id": server.provider_id,
        "name": server.name,
        "image": server.extra.get("image", ""),
        "size": server.size,
        "state": server.state,
        "private_ips": [server.address] if server.address else [],
        "public_ips": [public] if public else [],
    }


def node_full(server: Server) -> dict[str, Any]:
    """A server with every field gdl records."""
    return {
        **node(server),
        "app": server.app,
        "env": server.env,
        "role": server.role,
        **({"fault": server.fault} if server.fault else {}),
        **server.extra,
    }


class Driver:
    """salt-cloud's functions and actions over one provider."""

    def __init__(
        self,
        opts: dict[str, Any],
        make_provider: Callable[[], Provider],
        wait_for_minion: bool = True,
    ) -> None:
        self.opts = opts
        self._make_provider = make_provider
        # The profile's wait_for_minion default: whether create returns only once the
        # new server's minion answers.
        self.wait_for_minion = wait_for_minion

    @functools.cached_property
    def master(self) -> dict[str, Any]:
        return master_opts(self.opts)

    def provider(self) -> Provider:
        try:
            return self._make_provider()
        except GdlError as exc:
            raise SaltCloudSystemExit(str(exc)) from exc

    def listing(
        self, call: str | None, function: str, flag: str, read: Callable[[Provider], Any]
    ) -> Any:
        """A salt-cloud function (``-f`` or its ``--list-*`` flag), never an action."""
        if call == "action":
            raise SaltCloudSystemExit(f"{function} is a function: use -f or {flag}")
        try:
            return read(self.provider())
        except GdlError as exc:
            raise SaltCloudSystemExit(str(exc)) from exc

    def list_nodes(self, call: str | None) -> dict[str, Any]:
        return self.listing(
            call, "list_nodes", "-Q", lambda p: {s.name: node(s) for s in p.list_servers()}
        )

    def list_nodes_full(self, call: str | None) -> dict[str, Any]:
        return self.listing(
            call,
            "list_nodes_full",
            "-F",
            lambda p: {s.name: node_full(s) for s in p.list_servers()},
        )

    def list_nodes_select(self, call: str | None) -> dict[str, Any]:
        return salt.utils.cloud.list_nodes_select(
            self.list_nodes_full("function"), self.opts["query.selection"], call
        )

    def show_instance(self, name: str, call: str | None) -> dict[str, Any]:
        if call != "action":
            raise SaltCloudSystemExit("show_instance is an action: use -a")
        try:
            server = self.provider().get_server(name)
        except GdlError as exc:
            raise SaltCloudSystemExit(str(exc)) from exc
        if server is None:
            raise SaltCloudSystemExit(f"no server {name} made by gdl")
        return node_full(server)

    def create(self, vm_: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
        """Make one server, its minion key preseeded; wait for its minion unless told not to."""
        name = vm_["name"]
        app, env, role = server_identity(vm_, self.opts)
        size = salt.config.get_cloud_config_value("size", vm_, self.opts, default="m1.small")
        provider = self.provider()
        # salt-cloud makes a pair itself when a profile has ``deploy: True``.
        pair = None
        if vm_.get("pub_key") and vm_.get("priv_key"):
            pair = keys.KeyPair(public_pem=vm_["pub_key"], private_pem=vm_["priv_key"])
        wait = None
        if salt.config.get_cloud_config_value(
            "wait_for_minion", vm_, self.opts, default=self.wait_for_minion
        ):
            timeout = float(
                salt.config.get_cloud_config_value(
                    "minion_timeout", vm_, self.opts, default=provider.minion_timeout
                )
            )
            wait = self._waiter(timeout, log)
        try:
            network = provider.ensure_env(app, env)
            (server,) = servers.make(
                provider,
                keys.MasterKeys(self.master),
                [servers.NewServer(name, app, env, role, size, pair)],
                master_address=network.master_address,
                wait=wait,
                progress=log,
            )
            if salt.config.get_cloud_config_value("floating_ip", vm_, self.opts, default=False):
                provider.attach_floating_ip(name)
        except GdlError as exc:
            raise SaltCloudSystemExit(str(exc)) from exc
        log(f"created {name} at {server.address}")
        return node_full(provider.get_server(name) or server)

    def _waiter(self, timeout: float, log: Callable[[str], None]) -> servers.MinionWait:
        def wait(names: list[str], _provider_timeout: float) -> None:
            master = MasterOps(self.master)
            try:
                master.wait_for_minions(names, timeout, log)
            finally:
                master.close()

        return wait

    def destroy(self, name: str, call: str | None) -> dict[str, str]:
        if call == "function":
            raise SaltCloudSystemExit("destroy is an action: use -d or -a destroy")
        try:
            deleted = servers.remove(self.provider(), keys.MasterKeys(self.master), [name])
        except GdlError as exc:
            raise SaltCloudSystemExit(str(exc)) from exc
        return {name: "deleted" if deleted else "not found"}
