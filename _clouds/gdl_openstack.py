"""salt-cloud driver for OpenStack, on openstacksdk (Salt 3008 ships none).

A thin adapter (:mod:`gdl.cloud_driver`) over
:class:`gdl.providers.openstack.OpenStackProvider`.  The master's ``gdl:``
settings come with salt-cloud's options (salt-cloud reads the master config
first, then its own); keys of the provider entry override
``gdl: openstack:`` (``cloud``, ``clouds_file``, ``image``, ``network``,
``external_network``, ``key_name``, ``subnet``, ``boot_from_volume``,
``volume_size``, ``master_address``, ``master_source_cidr``,
``master_security_group``, ``availability_zone``, ``flavor``).

Provider (``/etc/salt/cloud.providers.d/openstack.conf``)::

    gdl-openstack:
      driver: gdl_openstack
      cloud: mycloud            # a clouds.yaml entry

Profile keys: ``size`` (a flavor name, or a size mapped by ``flavor``), ``role``
(app or lb), ``app``/``env`` (read from the server name
``<role>-<index>-<app>-<env>`` when absent), ``floating_ip`` (default False:
give the server a floating IP of its own, released on destroy),
``wait_for_minion`` (default False) and ``minion_timeout`` (seconds, default
the provider's ``minion_timeout``).

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

import logging

import salt.config as config

try:
    from gdl import cloud_driver
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
    "subnet",
    "boot_from_volume",
    "volume_size",
    "master_address",
    "master_source_cidr",
    "master_security_group",
    "availability_zone",
    "flavor",
)


def __virtual__():
    """Load when gdl (and with it openstacksdk) is importable."""
    if not HAS_GDL:
        return False, "gdl_openstack: the gdl package (with openstacksdk) is not installed"
    return __virtualname__


def _provider():
    return OpenStackProvider.from_settings(
        cloud_driver.settings(__opts__, "openstack", get_configured_provider() or {}, PROVIDER_KEYS)
    )


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


def _driver():
    # A cloud server's first boot may install Salt: salt-cloud returns once it is ACTIVE
    # unless the profile sets wait_for_minion (gdl.build waits for the VRRP pair itself).
    return cloud_driver.Driver(__opts__, _provider, wait_for_minion=False)


def avail_images(call=None):
    """The images the project can boot.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-images gdl-openstack
    """
    return _driver().listing(call, "avail_images", "--list-images", lambda p: p.images())


def avail_sizes(call=None):
    """The flavors the project can use.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-sizes gdl-openstack
    """
    return _driver().listing(call, "avail_sizes", "--list-sizes", lambda p: p.flavors())


def avail_locations(call=None):
    """The availability zones of the cloud.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-locations gdl-openstack
    """
    return _driver().listing(call, "avail_locations", "--list-locations", lambda p: p.zones())


def list_nodes(call=None):
    """The OpenStack servers gdl made, with salt-cloud's standard fields.

    CLI Example:

    .. code-block:: bash

        salt-cloud -Q
    """
    return _driver().list_nodes(call)


def list_nodes_full(call=None):
    """The OpenStack servers gdl made, with every field gdl records.

    CLI Example:

    .. code-block:: bash

        salt-cloud -F
    """
    return _driver().list_nodes_full(call)


def list_nodes_select(call=None):
    """The OpenStack servers gdl made, with the fields named in ``query.selection``.

    CLI Example:

    .. code-block:: bash

        salt-cloud -S
    """
    return _driver().list_nodes_select(call)


def show_instance(name, call=None):
    """One OpenStack server.

    CLI Example:

    .. code-block:: bash

        salt-cloud -a show_instance lb-0-blog-dev
    """
    return _driver().show_instance(name, call)


def create(vm_):
    """Make one OpenStack server, its minion key preseeded, and wait for its minion to answer.

    CLI Example:

    .. code-block:: bash

        salt-cloud -p gdl-openstack-lb lb-0-blog-dev
    """
    return _driver().create(vm_, log.info)


def destroy(name, call=None):
    """Delete an OpenStack server, what gdl made for it, and its minion key.

    CLI Example:

    .. code-block:: bash

        salt-cloud -d lb-0-blog-dev
    """
    return _driver().destroy(name, call)
