"""gdl: highly available web apps on OpenStack, provisioned the Salt way.

This package holds the master-side logic in plain Python; the Salt modules
under ``_runners/``, ``_modules/`` and ``_clouds/`` are thin over it.
"""

__version__ = "0.1.0"
