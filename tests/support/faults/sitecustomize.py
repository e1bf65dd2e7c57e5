"""Boot failures for the fault tests, loaded by the salt-run processes those tests start.

A test puts this directory first on PYTHONPATH (:func:`tests.support.faults.failing_hosts`),
so Python imports this module at start-up.  When ``GDL_TEST_FAIL_HOSTS`` names
servers, the local provider's hosts of those names are booted and then reported
as failed to boot, so the provider's own clean-up of a failed host and the
workflows' handling of a partial create run on real hosts.
"""

import os

_NAMES = {n.strip() for n in os.environ.get("GDL_TEST_FAIL_HOSTS", "").split(",") if n.strip()}

if _NAMES:
    from gdl.providers.local import provider as _local

    _make_hosts = _local.LocalProvider._make_hosts

    def _failing_make_hosts(self, requests, *args, **kwargs):
        failures = _make_hosts(self, requests, *args, **kwargs)
        for request in requests:
            if request.name in _NAMES and request.name not in failures:
                failures[request.name] = "did not boot: fault injected by the test"
        return failures

    _local.LocalProvider._make_hosts = _failing_make_hosts
