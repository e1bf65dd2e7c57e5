"""The OpenStack rig's fixtures, for the refusals checked against a real cloud.

The same fixtures tests/openstack uses (the rig started when needed, the demo project,
providers pointed at it, a project of its own for quotas), imported rather than
repeated; and ``refused`` (openstack_refusal.py), which runs ``salt-run gdl.build`` and
checks that the build was refused in one line and made nothing.
"""

from tests.openstack.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    admin,
    demo,
    make_provider,
    openstack_section,
    quota_project,
    rig,
)
from tests.reliability.openstack_refusal import env, os_master, refused  # noqa: F401
