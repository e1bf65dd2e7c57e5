"""Providers: the places that make servers (``local`` and ``openstack``)."""

from __future__ import annotations

from gdl.config import Settings
from gdl.errors import InvalidRequest
from gdl.providers.base import Provider
from gdl.spec import PROVIDERS


def get_provider(name: str, settings: Settings) -> Provider:
    """The provider called ``name``, configured from the master's settings."""
    if name == "local":
        from gdl.providers.local import LocalProvider

        return LocalProvider.from_settings(settings)
    if name == "openstack":
        from gdl.providers.openstack import OpenStackProvider

        return OpenStackProvider.from_settings(settings)
    raise InvalidRequest(f"provider={name!r} is not known", f"use one of: {', '.join(PROVIDERS)}")
