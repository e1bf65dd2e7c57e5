"""salt-cloud driver for OpenStack, on openstacksdk (Salt 3008 ships none).

A thin adapter over :class:`gdl.providers.openstack.OpenStackProvider`.  The
master's ``gdl:`` settings come with salt-cloud's options (salt-cloud reads the
master config first, then its own); keys of the provider entry override
``gdl: openstack:`` (``cloud``, ``clouds_file``, ``image``, ``network``,
``external_network``, ``key_name``, ``master_address``, ``availability_zone``,
``flavor``).

Provider (``/etc/salt/cloud.providers.d/openstack.conf``)::

    gdl-openstack:
      driver: gdl_openstack
      cloud: mycloud            # a clouds.yaml entry

Profile keys: ``size`` (a flavor name, or a size mapped by ``flavor``), ``role``
(app or lb), ``app``/``env`` (read from the server name
``<role>-<index>-<app>-<env>`` when absent), ``floating_ip`` (default False:
give the server a floating IP of its own, released on destroy).

The server joins the environment's network parts (``ensure_env`` makes them
when missing: security groups, server groups, VIP port); a load balancer's port
carries the VIP as an allowed address pair.  The minion key is preseeded on the
master (``pki_dir``) and handed to the server in its user data; it is removed
when the server is destroyed.  Nothing is ever auto-accepted.

CLI Example:

.. code-block:: bash

    salt-cloud -p gdl-openstack-lb lb-0-blog-dev
    salt-cloud -d lb-0-blog-dev
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
    from gdl.providers.openstack import OpenStackProvider

    HAS_GDL = True
except ImportError:  # pragma: no cover - gdl is installed with this module
    HAS_GDL = False

log = logging.getLogger(__name__)

__virtualname__ = "gdl_openstack"

PROVIDER_KEYS = (
    "cloud",
    "clouds_file",
    "image",
    "network",
    "external_network",
    "key_name",
    "master_address",
    "availability_zone",
    "flavor",
)


def __virtual__():
    """Load when gdl (and with it openstacksdk) is importable."""
    if not HAS_GDL:
        return False, "gdl_openstack: the gdl package (with openstacksdk) is not installed"
    return __virtualname__


def _get_active_provider_name():
    try:
        return __active_provider_name__.value()
    except AttributeError:
        return __active_provider_name__


def get_configured_provider():
    """Return the first configured gdl_openstack provider entry."""
    return config.is_provider_configured(
        __opts__, _get_active_provider_name() or __virtualname__, ()
    )


def _settings():
    settings = Settings.from_opts(__opts__)
    section = dict(settings.openstack)
    entry = get_configured_provider() or {}
    for key in PROVIDER_KEYS:
        if entry.get(key):
            section[key] = entry[key]
    return dataclasses.replace(settings, openstack=section)


def _provider():
    try:
        return OpenStackProvider.from_settings(_settings())
    except GdlError as exc:
        raise SaltCloudSystemExit(str(exc)) from exc


def _node(server):
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


def _node_full(server):
    return {
        **_node(server),
        "app": server.app,
        "env": server.env,
        "role": server.role,
        **({"fault": server.fault} if server.fault else {}),
        **server.extra,
    }


def _listing(call, name, flag):
    if call == "action":
        raise SaltCloudSystemExit(f"{name} is a function: use -f or {flag}")


def avail_images(call=None):
    """The images the project can boot.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-images gdl-openstack
    """
    _listing(call, "avail_images", "--list-images")
    try:
        return _provider().images()
    except GdlError as exc:
        raise SaltCloudSystemExit(str(exc)) from exc


def avail_sizes(call=None):
    """The flavors the project can use.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-sizes gdl-openstack
    """
    _listing(call, "avail_sizes", "--list-sizes")
    try:
        return _provider().flavors()
    except GdlError as exc:
        raise SaltCloudSystemExit(str(exc)) from exc


def avail_locations(call=None):
    """The availability zones of the cloud.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-locations gdl-openstack
    """
    _listing(call, "avail_locations", "--list-locations")
    try:
        return _provider().zones()
    except GdlError as exc:
        raise SaltCloudSystemExit(str(exc)) from exc


def list_nodes(call=None):
    """The servers gdl made, with salt-cloud's standard fields.

    CLI Example:

    .. code-block:: bash

        salt-cloud -Q
    """
    _listing(call, "list_nodes", "-Q")
    try:
        return {server.name: _node(server) for server in _provider().list_servers()}
    except GdlError as exc:
        raise SaltCloudSystemExit(str(exc)) from exc


def list_nodes_full(call=None):
    """The servers gdl made, with every field gdl records.

    CLI Example:

    .. code-block:: bash

        salt-cloud -F
    """
    _listing(call, "list_nodes_full", "-F")
    try:
        return {server.name: _node_full(server) for server in _provider().list_servers()}
    except GdlError as exc:
        raise SaltCloudSystemExit(str(exc)) from exc


def list_nodes_select(call=None):
    """The servers gdl made, with the fields named in ``query.selection``.

    CLI Example:

    .. code-block:: bash

        salt-cloud -S
    """
    return salt.utils.cloud.list_nodes_select(
        list_nodes_full("function"), __opts__["query.selection"], call
    )


def show_instance(name, call=None):
    """One server gdl made.

    CLI Example:

    .. code-block:: bash

        salt-cloud -a show_instance lb-0-blog-dev
    """
    if call != "action":
        raise SaltCloudSystemExit("show_instance is an action: use -a")
    try:
        server = _provider().get_server(name)
    except GdlError as exc:
        raise SaltCloudSystemExit(str(exc)) from exc
    if server is None:
        raise SaltCloudSystemExit(f"no OpenStack server {name} made by gdl")
    return _node_full(server)


def create(vm_):
    """Make one server with its minion key preseeded and wait until it is ACTIVE.

    CLI Example:

    .. code-block:: bash

        salt-cloud -p gdl-openstack-lb lb-0-blog-dev
    """
    name = vm_["name"]
    app, env, role = cloud_driver.server_identity(vm_, __opts__)
    size = config.get_cloud_config_value("size", vm_, __opts__, default="m1.small")
    pki_dir = __opts__["pki_dir"]
    provider = _provider()
    pair = cloud_driver.minion_pair(pki_dir, vm_)
    request = ServerRequest(
        name=name,
        app=app,
        env=env,
        role=role,
        size=size,
        minion_public_key=pair.public_pem,
        minion_private_key=pair.private_pem,
        master_address=provider.cfg.master_address,
    )
    try:
        (server,) = provider.create_servers([request], progress=log.info)
        if config.get_cloud_config_value("floating_ip", vm_, __opts__, default=False):
            provider.attach_floating_ip(name)
    except GdlError as exc:
        # Nothing was made for this name unless it existed already: keep its key then.
        if provider.get_server(name) is None:
            keys.remove(pki_dir, name)
        raise SaltCloudSystemExit(str(exc)) from exc
    log.info("Created OpenStack server %s at %s", name, server.address)
    return _node_full(provider.get_server(name) or server)


def destroy(name, call=None):
    """Delete a server, the ports and floating IPs gdl made for it, and its minion key.

    CLI Example:

    .. code-block:: bash

        salt-cloud -d lb-0-blog-dev
    """
    if call == "function":
        raise SaltCloudSystemExit("destroy is an action: use -d or -a destroy")
    try:
        deleted = _provider().delete_servers([name])
    except GdlError as exc:
        raise SaltCloudSystemExit(str(exc)) from exc
    keys.remove(__opts__["pki_dir"], name)
    return {name: "deleted" if deleted else "not found"}
