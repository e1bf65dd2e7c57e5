"""Boot failures for the fault tests, loaded by the salt-run processes those tests start.

A test puts this directory first on PYTHONPATH (:func:`tests.support.faults.failing_hosts`),
so Python imports this module at start-up.  When ``GDL_TEST_FAIL_HOSTS`` names
servers, the local provider's hosts of those names are booted and then reported
as failed to boot, so the provider's own clean-up of a failed host and the
workflows' handling of a partial create run on real hosts.

When ``GDL_TEST_SILENT_HOSTS`` names servers, those hosts boot with a console that
prints :data:`SILENT_CONSOLE_LINES` numbered lines instead of their salt-minion, and
hang: their minions never answer (``GDL_TEST_MINION_TIMEOUT`` shortens the wait).
"""

import os

_NAMES = {n.strip() for n in os.environ.get("GDL_TEST_FAIL_HOSTS", "").split(",") if n.strip()}

if _NAMES:
    from gdl.providers.local import lifecycle as _lifecycle

    _make_hosts = _lifecycle.make_hosts

    def _failing_make_hosts(records, settings, requests, *args, **kwargs):
        failures = _make_hosts(records, settings, requests, *args, **kwargs)
        for request in requests:
            if request.name in _NAMES and request.name not in failures:
                failures[request.name] = "did not boot: fault injected by the test"
        return failures

    _lifecycle.make_hosts = _failing_make_hosts


SILENT_CONSOLE_LINES = 30
_SILENT = {n.strip() for n in os.environ.get("GDL_TEST_SILENT_HOSTS", "").split(",") if n.strip()}

if _SILENT:
    from gdl.providers.local import lifecycle as _silent_lifecycle

    _describe = _silent_lifecycle.boot_description

    def _silent_description(settings, request, *args, **kwargs):
        description = _describe(settings, request, *args, **kwargs)
        if request.name in _SILENT:
            script = (
                f"for i in $(seq 1 {SILENT_CONSOLE_LINES}); do "
                f'echo "console line $i of {request.name}"; done; '
                "echo 'first boot broken by the test: salt-minion not started'; "
                "exec sleep 86400"
            )
            for service in description["services"]:
                service["argv"] = ["/bin/sh", "-c", script]
        return description

    _silent_lifecycle.boot_description = _silent_description

if os.environ.get("GDL_TEST_MINION_TIMEOUT"):
    from gdl.providers.local.provider import LocalProvider as _LocalProvider

    _LocalProvider.minion_timeout = float(os.environ["GDL_TEST_MINION_TIMEOUT"])
