"""The OpenStack rig's fixtures, for the refusals checked against a real cloud.

The same fixtures tests/openstack uses (the rig started when needed, the demo project,
providers pointed at it), imported rather than repeated.
"""

from tests.openstack.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    admin,
    demo,
    make_provider,
    openstack_section,
    rig,
)
