"""Salt master engine ``gdl_package_source``: the servers' package source, beside the master.

Thin over :mod:`gdl.package_source`: it serves the master's wheelhouses
(``<state_dir>/package-source``, built by :mod:`gdl.salt_wheelhouse`)
read-only over HTTP, so cloud servers without the internet install Salt from
the master at first boot.  As an engine it runs in a process of the master's
own, started and stopped with it.  Enable it in the master config::

    engines:
      - gdl_package_source: {}

It binds the master's ``interface`` and ``gdl:package_port`` (4507); the
engine's own ``interface`` and ``port`` options override them.
"""

from __future__ import annotations

from gdl import package_source, salt_wheelhouse
from gdl.config import Settings

__virtualname__ = "gdl_package_source"


def __virtual__():
    return __virtualname__


def start(interface: str | None = None, port: int | None = None) -> None:
    """Serve the package source until the master stops this engine's process."""
    settings = Settings.from_opts(__opts__)
    package_source.serve(
        salt_wheelhouse.package_root(settings),
        # The master's own address: where minions already reach it.
        interface or __opts__["interface"],
        int(port or settings.package_port),
    )
