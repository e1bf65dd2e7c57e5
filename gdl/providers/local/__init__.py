"""The local provider: servers as Linux-namespace hosts on this machine.

See ``docs/local-provider.md`` for how a host is made and what is private.
"""

from gdl.providers.local.boot import SIZES
from gdl.providers.local.provider import LocalProvider

__all__ = ["SIZES", "LocalProvider"]
