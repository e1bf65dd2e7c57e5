"""gdl: highly available web apps, provisioned the Salt way.

An environment is an app (a directory under ``apps/``) and an environment
name: ``app=blog env=dev``.  It is made of N app servers (the app under
gunicorn behind nginx) and a VRRP pair of load balancers (haproxy behind a
keepalived virtual IP).

.. code-block:: bash

    salt-run gdl.build app=blog env=dev servers=2 size=m1.small
    salt-run gdl.status app=blog env=dev
    salt-run gdl.destroy app=blog env=dev

This module is thin: the logic lives in the ``gdl`` Python package.
Inside orchestrate steps, pass ``environment=`` rather than ``env=`` (Salt
takes a step's ``env`` argument for ``saltenv``).
"""

from __future__ import annotations

import functools
import logging

try:
    from gdl import runner_support as _support
    from gdl import spec as _spec
    from gdl import tls as _tls
    from gdl import tuning as _tuning
    from gdl.flows import app_role as _app_role
    from gdl.flows import build as _build
    from gdl.flows import converge as _converge
    from gdl.flows import deploy as _deploy
    from gdl.flows import destroy as _destroy
    from gdl.flows import status as _status
    from gdl.runner_support import check_kwargs as _check_kwargs
    from gdl.runner_support import guarded as _guarded

    HAS_GDL = True
except ImportError as _import_error:  # pragma: no cover - reported by __virtual__
    HAS_GDL = False
    _IMPORT_ERROR = str(_import_error)

log = logging.getLogger(__name__)

__virtualname__ = "gdl"
__func_alias__ = {"list_": "list"}


def __virtual__():
    if not HAS_GDL:
        return False, f"the gdl Python package is not importable: {_IMPORT_ERROR}"
    return __virtualname__


def _whole_call(func):
    """Refuse in one line a call whose values do not bind to ``func``'s arguments.

    Defined here, not in gdl: Salt gives the runner's functions ``__jid_event__``
    (what salt-run prints) through their module's globals, which a wrapper keeps.
    """

    @functools.wraps(func)
    def checked(*args, **kwargs):
        _support.bind_or_refuse(func, args, kwargs)
        return func(*args, **kwargs)

    return checked


def _session(step_of=None):
    """The Context of this call (see gdl.runner_support.session)."""
    try:
        jid_event = __jid_event__
    except NameError:  # called outside salt-run's runner client
        jid_event = None
    return _support.session(__opts__, __salt__["state.orchestrate"], jid_event, step_of=step_of)


def _env_name(env, environment):
    return _guarded(_spec.pick_env, env, environment)


@_whole_call
def build(
    app=None,
    env=None,
    servers=2,
    size=None,
    provider=None,
    test=False,
    environment=None,
    vrrp=None,
    tls=None,
    tls_cert=None,
    tls_key=None,
    http=None,
    *args,
    **kwargs,
):
    """
    Build or converge an environment: ``servers`` app servers and a VRRP pair of
    load balancers, serving ``app`` at a virtual IP.  Prints the URL.

    Re-running converges: more servers are added and put in rotation, fewer are
    drained from haproxy and then deleted, the same request changes nothing.

    app
        An app under ``apps/`` (``blog``, ``hello_world``).
    env
        The environment's name, a DNS label (``dev``, ``qa``).
    servers
        Number of app servers, 1 to 50 (default 2).
    size
        The provider's size (flavor) name (default ``m1.small``).
    provider
        ``local`` or ``openstack`` (default: the master's ``gdl:provider``).
    test
        ``True`` prints the plan and changes nothing.
    vrrp
        The VRRP pair's timing profile: ``default`` (1 s adverts, for any
        network) or ``fast`` (VRRPv3, 0.25 s adverts); see docs/vrrp.md.
        Default: the environment keeps its profile (a new one: ``default``).
    tls, tls_cert, tls_key, http
        HTTPS at the VIP: ``tls=auto`` (the master's own CA) or ``off``, or the
        operator's PEM files; ``http=redirect|allow`` (docs/https.md).
    health_interval, health_fall, health_rise, sticky, timeout_server
        The load balancers' tuning (docs/roles.md).

    The environment keeps its VRRP profile, HTTPS choice and tuning: a later
    build without those arguments keeps them.

    CLI Example:

    .. code-block:: bash

        salt-run gdl.build app=blog env=dev servers=2 size=m1.small
        salt-run gdl.build app=blog env=dev servers=3 test=True
        salt-run gdl.build app=blog env=dev vrrp=fast
        salt-run gdl.build app=blog env=dev tls=auto
        salt-run gdl.build app=blog env=dev tls_cert=/etc/ssl/blog.pem tls_key=/etc/ssl/blog.key
        salt-run gdl.build app=blog env=dev sticky=true health_interval=0.5
    """
    _check_kwargs(
        kwargs,
        (
            *("app", "env", "servers", "size", "provider", "test", "vrrp"),
            *("tls", "tls_cert", "tls_key", "http", *_tuning.ARGUMENTS),
        ),
        args,
    )
    with _session() as ctx:
        request = _guarded(
            _spec.build_spec,
            app,
            _env_name(env, environment),
            servers=servers,
            size=size,
            provider=provider,
            default_provider=ctx.settings.provider,
            vrrp=vrrp,
        )
        https = _guarded(_tls.parse_request, tls, tls_cert, tls_key, http)
        lb_tuning = _guarded(
            _tuning.parse_lb_tuning, **{name: kwargs.get(name) for name in _tuning.ARGUMENTS}
        )
        dry_run = _guarded(_spec.parse_bool, "test", test)
        result = _guarded(
            _build.build, ctx, request, test=dry_run, tls_request=https, lb_tuning=lb_tuning
        )
        if not dry_run:
            ctx.progress(f"{request.env_id} is served at {result['url']}")
        return result


@_whole_call
def destroy(app=None, env=None, provider=None, test=False, environment=None, *args, **kwargs):
    """
    Remove everything an environment owns: servers, VRRP pair, VIP, network
    parts, minion keys, pillar and records.  A half-made environment is
    destroyed too; one of which nothing exists is refused (a mistyped name).

    CLI Example:

    .. code-block:: bash

        salt-run gdl.destroy app=blog env=dev
        salt-run gdl.destroy app=blog env=dev test=True
    """
    _check_kwargs(kwargs, ("app", "env", "provider", "test"), args)
    app, env = _support.target(app, env, environment)
    chosen = _guarded(_spec.parse_provider, provider, None) if provider else None
    dry_run = _guarded(_spec.parse_bool, "test", test)
    with _session() as ctx:
        return _guarded(_destroy.destroy, ctx, app, env, provider=chosen, test=dry_run)


@_whole_call
def status(app=None, env=None, environment=None, *args, **kwargs):
    """
    Show an environment: its servers with address and state, which load
    balancer holds the VIP, each backend's health in haproxy, and the URL.

    CLI Example:

    .. code-block:: bash

        salt-run gdl.status app=blog env=dev
    """
    _check_kwargs(kwargs, ("app", "env"), args)
    app, env = _support.target(app, env, environment)
    with _session() as ctx:
        return _guarded(_status.status, ctx, app, env)


@_whole_call
def list_(*args, **kwargs):
    """
    List the environments that exist, as found at the providers.

    CLI Example:

    .. code-block:: bash

        salt-run gdl.list
    """
    _check_kwargs(kwargs, (), args)
    with _session() as ctx:
        return _guarded(_status.list_environments, ctx)


@_whole_call
def deploy(
    app=None, env=None, version=None, source=None, batch=1, environment=None, *args, **kwargs
):
    """
    Roll a new release of the app out to the environment, ``batch`` servers
    at a time (default 1): drain them in haproxy on both load balancers, wait
    for requests in flight, switch their release, check their health check
    directly, put them back in rotation.  A server that fails its health check
    goes back to its previous release and rotation, the deploy stops there
    (the servers after it are not touched) and exits non-zero saying why.

    version
        The release to deploy (default: the version in the app's manifest).
        Without ``source``, either ``apps/<app>``'s version or one already built.
    source
        A directory holding the release (the app with its ``app.yaml``);
        default ``apps/<app>``.
    batch
        How many servers leave rotation at once (default 1).

    CLI Example:

    .. code-block:: bash

        salt-run gdl.deploy app=blog env=dev
        salt-run gdl.deploy app=blog env=dev source=/srv/releases/blog-1.1.0 batch=2
    """
    _check_kwargs(kwargs, ("app", "env", "version", "source", "batch"), args)
    request = _guarded(
        _spec.deploy_request,
        app,
        _env_name(env, environment),
        version=version,
        source=source,
        batch=batch,
    )
    with _session() as ctx:
        return _guarded(_deploy.deploy, ctx, request)


@_whole_call
def rollback(app=None, env=None, batch=1, environment=None, *args, **kwargs):
    """
    Return the environment's servers to the release it ran before the last
    deploy, the same rolling way (``batch`` servers at a time, default 1).
    Rolling back twice returns to the newer release.

    CLI Example:

    .. code-block:: bash

        salt-run gdl.rollback app=blog env=dev
    """
    _check_kwargs(kwargs, ("app", "env", "batch"), args)
    app, env = _support.target(app, env, environment)
    size = _guarded(_spec.parse_batch, batch)
    with _session() as ctx:
        return _guarded(_deploy.rollback, ctx, app, env, batch=size)


# -- orchestration steps: orch/build.sls and orch/destroy.sls call these ------------------


def _step(name, action, app, env, environment, lock_token, **kwargs):
    """Run orchestration step ``name`` under the environment's lock (see gdl.runner_support).

    Its lines go to the command that runs the orchestration.
    """
    app, env = _support.target(app, env, environment)
    with _session(step_of=(app, env)) as ctx:
        return _support.locked_step(ctx, name, action, app, env, lock_token, **kwargs)


def vrrp_pair(app=None, environment=None, env=None, lock_token=None, **kwargs):
    """Orchestration step: make the environment's missing load balancers through salt-cloud
    (profile ``gdl-<provider>-lb``); ``minions_ready`` waits for them.

    CLI Example: ``salt-run gdl.vrrp_pair app=blog environment=dev``
    """
    return _step("vrrp_pair", _build.ensure_vrrp_pair, app, env, environment, lock_token)


def minions_ready(app=None, environment=None, env=None, role=None, lock_token=None, **kwargs):
    """Orchestration step: wait for the minions of the environment's ``role`` servers
    (``app`` or ``lb``).

    CLI Example: ``salt-run gdl.minions_ready app=blog environment=dev role=lb``
    """
    return _step(
        "minions_ready", _converge.minions_ready, app, env, environment, lock_token, role=role
    )


def lb_modules(app=None, environment=None, env=None, lock_token=None, **kwargs):
    """Orchestration step: sync gdl's execution modules to the load balancers not synced
    since the modules last changed.

    CLI Example: ``salt-run gdl.lb_modules app=blog environment=dev``
    """
    return _step("lb_modules", _converge.lb_modules, app, env, environment, lock_token)


def write_pillar(app=None, environment=None, env=None, lock_token=None, **kwargs):
    """Orchestration step: write the environment's pillar from what the provider reports
    now, and find which role runs are due (docs/failure.md). Returns whether the pillar
    changed and the runs due.

    CLI Example: ``salt-run gdl.write_pillar app=blog environment=dev``
    """
    return _step("write_pillar", _build.pillar_and_due_roles, app, env, environment, lock_token)


def roll_app_role(app=None, environment=None, env=None, lock_token=None, **kwargs):
    """Orchestration step: apply the app role to each app server in turn, each drained on
    the load balancers meanwhile (an environment that serves). Returns the names, in order.

    CLI Example: ``salt-run gdl.roll_app_role app=blog environment=dev``
    """
    return _step("roll_app_role", _app_role.roll_app_role, app, env, environment, lock_token)


def drain_surplus(app=None, environment=None, env=None, lock_token=None, **kwargs):
    """Orchestration step: drain the app servers beyond the requested count on every load
    balancer, before the lb role leaves them out of haproxy. Returns the names drained.

    CLI Example: ``salt-run gdl.drain_surplus app=blog environment=dev``
    """
    return _step("drain_surplus", _build.drain_surplus, app, env, environment, lock_token)


def remove_surplus(app=None, environment=None, env=None, lock_token=None, **kwargs):
    """Orchestration step: delete the app servers beyond the requested count and forget
    their keys (after they were drained).

    CLI Example: ``salt-run gdl.remove_surplus app=blog environment=dev``
    """
    return _step("remove_surplus", _build.remove_surplus, app, env, environment, lock_token)


def remove_all(app=None, environment=None, env=None, provider=None, lock_token=None, **kwargs):
    """Orchestration step: delete every server of the environment and its keys.

    CLI Example: ``salt-run gdl.remove_all app=blog environment=dev``
    """
    return _step(
        "remove_all", _destroy.remove_all, app, env, environment, lock_token, provider=provider
    )


def teardown(app=None, environment=None, env=None, provider=None, lock_token=None, **kwargs):
    """Orchestration step: remove the environment's network parts, keys, pillar and record
    (after its servers).

    CLI Example: ``salt-run gdl.teardown app=blog environment=dev``
    """
    _step("teardown", _destroy.teardown, app, env, environment, lock_token, provider=provider)
    return True


def check_vip(app=None, environment=None, env=None, timeout=60, lock_token=None, **kwargs):
    """Orchestration step: wait until the environment's VIP serves the app's health check.

    CLI Example: ``salt-run gdl.check_vip app=blog environment=dev``
    """
    return _step(
        "check_vip", _build.check_vip, app, env, environment, lock_token, timeout=float(timeout)
    )
