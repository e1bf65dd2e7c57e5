"""salt-cloud driver for gdl's local cloud: servers as namespace hosts on the master.

A thin adapter (:mod:`gdl.cloud_driver`) over
:class:`gdl.providers.local.LocalProvider`.  The master's ``gdl:`` settings come
with salt-cloud's options (salt-cloud reads the master config first, then its
own); keys of the provider entry (``bridge``, ``cidr``, ``state_dir``, ``venv``)
override ``gdl: local:``.

Provider (``/etc/salt/cloud.providers.d/local.conf``)::

    gdl-local:
      driver: gdl_local

Profile keys: ``size`` (m1.tiny..m1.xlarge), ``role`` (app or lb), and
``app``/``env`` (read from the server name ``<role>-<index>-<app>-<env>``
when absent); ``wait_for_minion`` (default True) and ``minion_timeout``
(seconds, default the provider's).

The minion key is preseeded on the master before the host boots and removed
when it is destroyed; nothing is ever auto-accepted.

CLI Example:

.. code-block:: bash

    salt-cloud -p gdl-local-app app-0-blog-dev
    salt-cloud -d app-0-blog-dev
"""

from __future__ import annotations

import logging

import salt.config as config

try:
    from gdl import cloud_driver
    from gdl.providers.local import LocalProvider

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


def _provider():
    settings = cloud_driver.settings(
        __opts__, "local", get_configured_provider() or {}, PROVIDER_KEYS
    )
    # salt-cloud's options carry the master's ports; its conf_file is the
    # cloud config, not the master's, so nothing would be read from there.
    settings.local.setdefault("master_port", __opts__.get("ret_port"))
    settings.local.setdefault("publish_port", __opts__.get("publish_port"))
    return LocalProvider.from_settings(settings)


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


def _driver():
    return cloud_driver.Driver(__opts__, _provider)


def avail_images(call=None):
    """The one image: the master's own installed system, seen through an overlay.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-images gdl-local
    """
    return _driver().listing(call, "avail_images", "--list-images", lambda p: p.images())


def avail_sizes(call=None):
    """The sizes (OpenStack's classic flavors) a local host can have.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-sizes gdl-local
    """
    return _driver().listing(call, "avail_sizes", "--list-sizes", lambda p: p.flavors())


def avail_locations(call=None):
    """One location: this machine.

    CLI Example:

    .. code-block:: bash

        salt-cloud --list-locations gdl-local
    """
    return _driver().listing(call, "avail_locations", "--list-locations", lambda p: p.zones())


def list_nodes(call=None):
    """The local hosts gdl made, with salt-cloud's standard fields.

    CLI Example:

    .. code-block:: bash

        salt-cloud -Q
    """
    return _driver().list_nodes(call)


def list_nodes_full(call=None):
    """The local hosts gdl made, with every field gdl records.

    CLI Example:

    .. code-block:: bash

        salt-cloud -F
    """
    return _driver().list_nodes_full(call)


def list_nodes_select(call=None):
    """The local hosts gdl made, with the fields named in ``query.selection``.

    CLI Example:

    .. code-block:: bash

        salt-cloud -S
    """
    return _driver().list_nodes_select(call)


def show_instance(name, call=None):
    """One local host.

    CLI Example:

    .. code-block:: bash

        salt-cloud -a show_instance app-0-blog-dev
    """
    return _driver().show_instance(name, call)


def create(vm_):
    """Make one local host, its minion key preseeded, and wait for its minion to answer.

    CLI Example:

    .. code-block:: bash

        salt-cloud -p gdl-local-lb app-0-blog-dev
    """
    return _driver().create(vm_, log.info)


def destroy(name, call=None):
    """Delete a local host, what gdl made for it, and its minion key.

    CLI Example:

    .. code-block:: bash

        salt-cloud -d app-0-blog-dev
    """
    return _driver().destroy(name, call)
