"""salt-cloud driver for gdl's local cloud: servers as namespace hosts on the master.

A thin adapter over :class:`gdl.providers.local.LocalProvider`.  The master's
``gdl:`` settings come with salt-cloud's options (salt-cloud reads the master
config first, then its own); keys of the provider entry (``bridge``,
``cidr``, ``state_dir``, ``venv``) override ``gdl: local:``.

Provider (``/etc/salt/cloud.providers.d/local.conf``)::

    gdl-local:
      driver: gdl_local

Profile keys: ``size`` (m1.tiny..m1.xlarge), ``role`` (app or lb), and
``app``/``env`` (read from the server name ``<role>-<index>-<app>-<env>``
when absent); ``wait_for_minion`` (default True) and ``minion_timeout``
(seconds, default 60).

The minion key is preseeded on the master (``pki_dir``) before the host
boots and removed when it is destroyed; nothing is ever auto-accepted.

CLI Example:

.. code-block:: bash

    salt-cloud -p gdl-local-app app-0-blog-dev
    salt-cloud -d app-0-blog-dev
"""

from __future__ import annotations

import dataclasses
import logging

import salt.config as config
import salt.utils.cloud
from salt.exceptions import SaltCloudSystemExit

try:
    from gdl import cloud_driver, keys
    from gdl.config import Settings
    from gdl.errors import GdlError
    from gdl.providers.base import ServerRequest
    from gdl.providers.local import SIZES, LocalProvider

    HAS_GDL = True
except ImportError:  # pragma: no cover - gdl is installed with this module
    HAS_GDL = False

log = logging.getLogger(__name__)

__virtualname__ = "gdl_local"

PROVIDER_KEYS = ("bridge", "cidr", "state_dir", "venv")


def __virtual__():
    """Load when gdl is importable."""
    if not HAS_GDL:
        return False, "gdl_local: the gdl package is not installed"
    return __virtualname__


def _get_active_provider_name():
    try:
        return __active_provider_name__.value()
    except AttributeError:
        return __active_provider_name__


def get_configured_provider():
    """Return the first configured gdl_local provider entry."""
    return config.is_provider_configured(
        __opts__, _get_active_provider_name() or __virtualname__, ()
    )


def _settings():
    settings = Settings.from_opts(__opts__)
    local = dict(settings.local)
    entry = get_configured_provider() or {}
    for key in PROVIDER_KEYS:
        if entry.get(key):
            local[key] = entry[key]
    # salt-cloud's options carry the master's ports; its conf_file is the
    # cloud config, not the master's, so nothing would be read from there.
    local.setdefault("master_port", __opts__.get("ret_port"))
    local.setdefault("publish_port", __opts__.get("publish_port"))
    return dataclasses.replace(settings, local=local)


def _provider():
    return LocalProvider.from_settings(_settings())


def _node(server):
    return {
        "id": server.provider_id,
        "name": server.name,
        "image": "machine",
        "size": server.size,
        "state": server.state,
        "private_ips": [server.address] if server.address else [],
        "public_ips": [],
    }


def _node_full(server):
    return {
        **_node(server),
        "app": server.app,
        "env": server.env,
        "role": server.role,
        **server.extra,
    }


def avail_images(call=None):
    """The one image: the master's own installed system, seen through an overlay.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-images gdl-local
    """
    if call == "action":
        raise SaltCloudSystemExit("avail_images is a function: use -f or --list-images")
    return {
        "machine": {
            "name": "machine",
            "description": "the master's installed system; writes stay private to each host",
        }
    }


def avail_sizes(call=None):
    """The sizes (OpenStack's classic flavors) a local host can have.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-sizes gdl-local
    """
    if call == "action":
        raise SaltCloudSystemExit("avail_sizes is a function: use -f or --list-sizes")
    return {
        name: {"name": name, "ram": size.memory_mb, "vcpus": size.vcpus, "disk": size.disk_gb}
        for name, size in SIZES.items()
    }


def avail_locations(call=None):
    """One location: this machine.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-locations gdl-local
    """
    if call == "action":
        raise SaltCloudSystemExit("avail_locations is a function: use -f or --list-locations")
    return {"local": {"name": "local", "description": "this machine"}}


def list_nodes(call=None):
    """The local hosts, with salt-cloud's standard fields.

    CLI Example:

    .. code-block:: bash

        salt-cloud -Q
    """
    if call == "action":
        raise SaltCloudSystemExit("list_nodes is a function: use -f or -Q")
    return {server.name: _node(server) for server in _provider().list_servers()}


def list_nodes_full(call=None):
    """The local hosts with every field gdl records.

    CLI Example:

    .. code-block:: bash

        salt-cloud -F
    """
    if call == "action":
        raise SaltCloudSystemExit("list_nodes_full is a function: use -f or -F")
    return {server.name: _node_full(server) for server in _provider().list_servers()}


def list_nodes_select(call=None):
    """The local hosts with the fields named in ``query.selection``.

    CLI Example:

    .. code-block:: bash

        salt-cloud -S
    """
    return salt.utils.cloud.list_nodes_select(
        list_nodes_full("function"), __opts__["query.selection"], call
    )


def show_instance(name, call=None):
    """One local host.

    CLI Example:

    .. code-block:: bash

        salt-cloud -a show_instance app-0-blog-dev
    """
    if call != "action":
        raise SaltCloudSystemExit("show_instance is an action: use -a")
    server = _provider().get_server(name)
    if server is None:
        raise SaltCloudSystemExit(f"no local host {name}")
    return _node_full(server)


def create(vm_):
    """Make one local host with its minion key preseeded; wait for the minion to join.

    CLI Example:

    .. code-block:: bash

        salt-cloud -p gdl-local-app app-0-blog-dev
    """
    name = vm_["name"]
    app, env, role = cloud_driver.server_identity(vm_, __opts__)
    size = config.get_cloud_config_value("size", vm_, __opts__, default="m1.small")
    pki_dir = __opts__["pki_dir"]
    provider = _provider()
    try:
        provider.size(size)  # refuse before a key is made
    except GdlError as exc:
        raise SaltCloudSystemExit(str(exc)) from exc
    pair = cloud_driver.minion_pair(pki_dir, vm_)
    request = ServerRequest(
        name=name,
        app=app,
        env=env,
        role=role,
        size=size,
        minion_public_key=pair.public_pem,
        minion_private_key=pair.private_pem,
        master_address="",  # the bridge's address
    )
    try:
        (server,) = provider.create_servers([request], progress=log.info)
    except GdlError as exc:
        # Nothing was made for this name unless it existed already: keep its key then.
        if provider.get_server(name) is None:
            keys.remove(pki_dir, name)
        raise SaltCloudSystemExit(str(exc)) from exc
    if config.get_cloud_config_value("wait_for_minion", vm_, __opts__, default=True):
        timeout = float(config.get_cloud_config_value("minion_timeout", vm_, __opts__, default=60))
        if provider.wait_minions([name], timeout=timeout):
            log.warning("%s: the minion has not joined the master after %.0f s", name, timeout)
    log.info("Created local host %s at %s", name, server.address)
    return _node_full(provider.get_server(name) or server)


def destroy(name, call=None):
    """Delete a local host and its minion key.

    CLI Example:

    .. code-block:: bash

        salt-cloud -d app-0-blog-dev
    """
    if call == "function":
        raise SaltCloudSystemExit("destroy is an action: use -d or -a destroy")
    try:
        deleted = _provider().delete_servers([name])
    except GdlError as exc:
        raise SaltCloudSystemExit(str(exc)) from exc
    keys.remove(__opts__["pki_dir"], name)
    return {name: "deleted" if deleted else "not found"}
