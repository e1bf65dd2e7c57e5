"""Rolling deploy and rollback: a new release of the app, one server (or batch) at a time.

For each batch of app servers, in index order:

1. drain them in haproxy on both load balancers (no new requests) and wait
   until their requests in flight have finished;
2. apply ``gdl.app`` on them with the release's version in pillar: the
   release is unpacked beside the others and ``current`` switched to it;
3. ask each server's health check straight from a load balancer (not
   through haproxy) until it answers 200 and names the new version;
4. put them back in rotation on both load balancers and wait until haproxy
   counts them UP, so the next batch never leaves the backend empty.

A server that fails step 2 or 3 is switched back to the release it ran,
checked and put back in rotation; the deploy stops there and says why, and
the servers after it are never touched.  The environment's record keeps the
release it runs and the one before (:mod:`gdl.envstore`); it changes only
when every server runs the new one, and the pillar follows it, so a later
``gdl.build`` keeps what the last deploy or rollback chose.

The runner drives these steps through :class:`gdl.workflow.SaltOps` rather
than an orchestrate file: the loop over batches stops at the first failure
and rolls one server back, which is plain code here and would be a web of
``onfail`` requisites in an SLS.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gdl import apps, envstore, naming, spec
from gdl.config import Settings
from gdl.errors import GdlError, InvalidRequest, NotFound
from gdl.lock import env_lock
from gdl.providers.base import RUNNING, Server

DRAIN_TIMEOUT = 60.0  # seconds for a drained server's requests in flight to finish
HEALTH_TIMEOUT = 30.0  # seconds for a switched server to answer its health check
UP_TIMEOUT = 30.0  # seconds for haproxy to count a readied server UP
STATE_TIMEOUT = 900.0  # seconds for gdl.app to switch a release (virtualenv included)
APP_STATE = "gdl.app"


class DeployFailed(GdlError):
    """A server failed the new release: it was put back on its old one and the deploy stopped."""


@dataclass(frozen=True)
class Member:
    """An app server taking part in a rollout."""

    name: str
    address: str


@dataclass(frozen=True)
class Rollout:
    """What one deploy or rollback does: who, to which release, from which."""

    app: str
    env: str
    version: str  # the release the servers go to
    previous: str  # the release they run now, where a failed server returns
    health: str  # the app's health check path (of the new release)
    previous_health: str  # and of the release a failed server returns to
    lbs: tuple[str, ...]
    members: tuple[Member, ...]
    batch: int = 1

    @property
    def env_id(self) -> str:
        return naming.env_id(self.app, self.env)


def batches(items: Iterable[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive groups of ``size`` (the last may be shorter)."""
    items = list(items)
    return [items[start : start + size] for start in range(0, len(items), size)]


def state_failure(answer: Any) -> str | None:
    """Why one minion's ``state.apply`` return failed, in one line; None when it succeeded."""
    if answer is None or answer is False:
        return "its minion did not answer"
    if isinstance(answer, (list, str)):
        # A render error: Salt returns the messages instead of states.
        text = answer if isinstance(answer, str) else " ".join(str(a) for a in answer)
        return " ".join(text.split())[:300] or "the states did not render"
    if not isinstance(answer, dict) or not answer:
        return f"unexpected answer {answer!r}"[:300]
    failed = [
        state
        for state in answer.values()
        if not isinstance(state, dict) or state.get("result") is False
    ]
    if not failed:
        return None
    first = min(failed, key=lambda s: s.get("__run_num__", 0) if isinstance(s, dict) else 0)
    if not isinstance(first, dict):
        return f"unexpected answer {first!r}"[:300]
    comment = " ".join(str(first.get("comment", "")).split())
    return f"{first.get('__id__', 'a state')} failed: {comment}"[:300]


def release_manifest(settings: Settings, app: str, version: str) -> dict[str, Any]:
    """The manifest a built release carries (beside its archive), else the app's own."""
    path = apps.release_manifest_path(apps.files_dir(settings), app, version)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        data = None
    if isinstance(data, dict) and data.get("health"):
        return data
    return apps.load_manifest(settings.apps_dir, app).as_dict()


def release_exists(settings: Settings, app: str, version: str) -> bool:
    return apps.release_path(apps.files_dir(settings), app, version).is_file()


def prepare_release(
    settings: Settings,
    app: str,
    version: str | None,
    source: str | Path | None,
    builder: Callable[..., apps.Release] | None = None,
) -> tuple[str, bool]:
    """Build or find the release a deploy asks for: (its version, whether its archive changed).

    ``source`` is a directory holding a release of the app (its own
    app.yaml); without it the release is ``apps/<app>``'s.  ``version``,
    when given, must be the source's version, or, without a source, the
    version of ``apps/<app>`` or of a release already built on the master.
    """
    if source is not None:
        path = Path(str(source)).expanduser()
        if not path.is_dir():
            raise InvalidRequest(
                f"source={source} is not a directory", f"give the directory of a release of {app}"
            )
        manifest = apps.load_manifest_from(path, app)
        if version is not None and version != manifest.version:
            raise InvalidRequest(
                f"version={version} disagrees with {path / apps.MANIFEST_NAME} "
                f"(version {manifest.version})",
                "drop version= or fix the manifest",
            )
        build = builder or apps.build_release_of
        release = build(manifest, apps.files_dir(settings), apps.wheel_cache_dir(settings))
        return release.version, release.changed
    manifest = apps.load_manifest(settings.apps_dir, app)
    if version is None or version == manifest.version:
        build = builder or apps.build_release_of
        release = build(manifest, apps.files_dir(settings), apps.wheel_cache_dir(settings))
        return release.version, release.changed
    if release_exists(settings, app, version):
        return version, False
    built = apps.list_releases(apps.files_dir(settings), app)
    others = f", or use one of {', '.join(built)}" if built else ""
    raise InvalidRequest(
        f"release {version} of {app} is not on the master",
        f"give source= the directory holding it{others}",
    )


def ensure_build_release(
    settings: Settings, record: envstore.EnvRecord, manifest: apps.AppManifest
) -> tuple[envstore.EnvRecord, str]:
    """The release a build installs, made ready: (the record naming it, its version).

    A new environment takes ``apps/<app>``'s version; one a deploy or rollback
    moved keeps the release it runs, so a re-run of the build never undoes them.
    """
    if record.release is None:
        record = record.with_release(manifest.version)
    release = record.release or manifest.version
    if release == manifest.version:
        apps.build_release_for(settings, manifest.name)
    elif not release_exists(settings, manifest.name, release):
        raise NotFound(
            f"{naming.env_id(record.app, record.env)} runs release {release} of "
            f"{manifest.name}, which is not on the master any more",
            f"deploy a release: salt-run gdl.deploy app={record.app} env={record.env}",
        )
    return record, release


# -- the rollout ---------------------------------------------------------------------------


class Roller:
    """Carries out a :class:`Rollout` through SaltOps (``call`` and ``apply_state``)."""

    def __init__(
        self,
        ops: Any,
        rollout: Rollout,
        progress: Callable[[str], None],
        drain_timeout: float = DRAIN_TIMEOUT,
        health_timeout: float = HEALTH_TIMEOUT,
        up_timeout: float = UP_TIMEOUT,
    ) -> None:
        self.ops = ops
        self.rollout = rollout
        self.progress = progress
        self.drain_timeout = drain_timeout
        self.health_timeout = health_timeout
        self.up_timeout = up_timeout

    # one call on both LBs; every LB must say True
    def _on_lbs(self, function: str, args: list[Any], timeout: float) -> list[str]:
        """Run ``function`` on every LB; the LBs whose answer was not True."""
        answers = self.ops.call(list(self.rollout.lbs), function, args, timeout=timeout)
        return [
            f"{lb}: {str(answers.get(lb, 'no answer'))[:200]}"
            for lb in self.rollout.lbs
            if answers.get(lb) is not True
        ]

    def drain(self, member: Member) -> None:
        refused = self._on_lbs("gdl_lb.drain", [member.name], timeout=30)
        if refused:
            raise GdlError(
                f"could not drain {member.name} ({'; '.join(refused)})",
                "check salt-run gdl.status, then deploy again",
            )
        slow = self._on_lbs(
            "gdl_lb.wait_drained",
            [member.name, self.drain_timeout],
            timeout=self.drain_timeout + 15,
        )
        if slow:
            # Requests still running after the wait are cut by the restart;
            # say so, but carry on: a stuck client must not stop a deploy.
            self.progress(
                f"{member.name}: requests still in flight after {self.drain_timeout:.0f} s"
            )

    def ready(self, member: Member) -> str | None:
        """Back in rotation on both LBs; why not, or None once haproxy counts it UP."""
        refused = self._on_lbs("gdl_lb.ready", [member.name], timeout=30)
        if refused:
            return f"haproxy did not take it back ({'; '.join(refused)})"
        down = self._on_lbs(
            "gdl_lb.wait_up", [member.name, self.up_timeout], timeout=self.up_timeout + 15
        )
        if down:
            return f"haproxy does not count it UP after {self.up_timeout:.0f} s"
        return None

    def check(
        self, member: Member, version: str | None, health: str, timeout: float
    ) -> dict[str, Any]:
        """The member's health check, asked straight from the first LB.

        With ``version``, healthy means answering 200 and naming that version
        (when the answer names one at all).
        """
        url = f"http://{member.address}{health}"
        checker = self.rollout.lbs[0]
        answers = self.ops.call(
            [checker],
            "gdl_lb.check_http",
            [url, self.rollout.app, version, timeout],
            timeout=timeout + 15,
        )
        answer = answers.get(checker)
        if not isinstance(answer, dict):
            return {"healthy": False, "detail": f"{checker} could not check it: {answer!r}"[:300]}
        answer["url"] = url
        return answer

    def running_version(self, member: Member) -> str | None:
        """The version the member's health check names now (None when it does not say)."""
        answer = self.check(member, None, self.rollout.health, timeout=0)
        return answer.get("version") if answer.get("status") == 200 else None

    def switch(self, members: list[Member], version: str) -> dict[str, str | None]:
        """Apply the app role at ``version`` on ``members``: {name: why it failed, or None}."""
        pillar = {"gdl": {"version": version}}
        answers = self.ops.apply_state(
            [m.name for m in members], APP_STATE, pillar, timeout=STATE_TIMEOUT
        )
        return {m.name: state_failure(answers.get(m.name)) for m in members}

    def run(self, skip: Iterable[str] = ()) -> list[str]:
        """Roll every member not in ``skip`` to the new release; the names switched.

        Raises :class:`DeployFailed` at the first member that fails, after
        putting it back on the previous release.
        """
        rollout = self.rollout
        skipped = set(skip)
        for member in rollout.members:
            # A deploy killed between drain and ready leaves its server drained.
            if member.name in skipped and self.ready(member) is not None:
                skipped.discard(member.name)
        todo = [m for m in rollout.members if m.name not in skipped]
        switched: list[str] = []
        for group in batches(todo, rollout.batch):
            names = ", ".join(m.name for m in group)
            self.progress(f"{names}: draining")
            for member in group:
                self.drain(member)
            self.progress(f"{names}: switching to release {rollout.version}")
            failures = self.switch(group, rollout.version)
            for member in group:
                if failures[member.name] is None:
                    answer = self.check(
                        member, rollout.version, rollout.health, self.health_timeout
                    )
                    if not answer.get("healthy"):
                        failures[member.name] = (
                            f"its health check {answer.get('url', rollout.health)} "
                            f"{answer.get('detail', 'failed')}"
                        )
            failed = [m for m in group if failures[m.name]]
            healthy = [m for m in group if not failures[m.name]]
            for member in healthy:
                why = self.ready(member)
                if why:
                    failures[member.name] = why
                    failed.append(member)
                else:
                    switched.append(member.name)
                    self.progress(f"{member.name}: release {rollout.version} in rotation")
            if failed:
                raise self._give_back(failed, failures, switched)
        return switched

    def _give_back(
        self, failed: list[Member], failures: dict[str, str | None], switched: list[str]
    ) -> DeployFailed:
        """Return failed members to the previous release; the error that stops the deploy."""
        rollout = self.rollout
        first = failed[0]
        self.progress(f"{first.name}: {failures[first.name]}; returning it to {rollout.previous}")
        back = self.switch(failed, rollout.previous)
        stuck = []
        for member in failed:
            why = back[member.name]
            if why is None:
                answer = self.check(
                    member, rollout.previous, rollout.previous_health, self.health_timeout
                )
                why = None if answer.get("healthy") else answer.get("detail", "unhealthy")
            if why is None:
                why = self.ready(member)
            if why is not None:
                stuck.append(f"{member.name} ({why})")
        if stuck:
            where = (
                f"returning to {rollout.previous} failed too, left out of rotation: "
                f"{', '.join(stuck)}"
            )
        else:
            where = (
                f"{', '.join(m.name for m in failed)} back on {rollout.previous} and in rotation"
            )
        if switched:
            where += f"; {', '.join(switched)} already run {rollout.version}"
        others = "the servers after it were not changed"
        return DeployFailed(
            f"deploy of {rollout.app} {rollout.version} to {rollout.env_id} stopped: "
            f"{first.name} failed, {failures[first.name]} ({where}; {others})",
            "fix the release and deploy again",
        )


# -- the verbs -----------------------------------------------------------------------------


def _require_record(settings: Settings, app: str, env: str) -> envstore.EnvRecord:
    record = envstore.load(settings.state_dir, app, env)
    if record is None:
        raise NotFound(
            f"environment {naming.env_id(app, env)} does not exist",
            f"build it first: salt-run gdl.build app={app} env={env}",
        )
    return record


def _index(server: Server) -> int:
    parsed = naming.parse_server_name(server.name)
    return parsed.index if parsed else 0


def _members(ctx: Any, record: envstore.EnvRecord) -> tuple[tuple[str, ...], tuple[Member, ...]]:
    """(the LBs, the app servers) of the environment, checked to answer."""
    servers = ctx.provider(record.provider).list_servers(record.app, record.env)
    env_id = naming.env_id(record.app, record.env)
    lbs = tuple(sorted(s.name for s in servers if s.role == "lb" and s.state == RUNNING))
    members = tuple(
        Member(s.name, s.address)
        for s in sorted(servers, key=_index)
        if s.role == "app" and s.state == RUNNING
    )
    fix = f"run salt-run gdl.build app={record.app} env={record.env} first"
    if len(lbs) < 2:
        raise GdlError(f"{env_id} has {len(lbs)} running load balancers, not 2", fix)
    if not members:
        raise GdlError(f"{env_id} has no running app server", fix)
    silent = sorted(
        {*lbs, *(m.name for m in members)}
        - ctx.salt.ping([*lbs, *(m.name for m in members)], timeout=5)
    )
    if silent:
        raise GdlError(f"the minions of {', '.join(silent)} do not answer", fix)
    return lbs, members


def _roll(
    ctx: Any,
    record: envstore.EnvRecord,
    version: str,
    batch: int,
    rebuilt: bool,
    verb: str,
) -> dict[str, Any]:
    """Roll the environment to ``version`` and record it; the verbs' common part."""
    from gdl import workflow

    settings: Settings = ctx.settings
    started = time.monotonic()
    previous = record.release or apps.load_manifest(settings.apps_dir, record.app).version
    lbs, members = _members(ctx, record)
    ctx.salt.call(list(lbs), "saltutil.sync_modules", [], timeout=120)
    # The release's archive and manifest values reach the pillar (gdl:releases)
    # before a server switches to it: the switch's pillar names the version alone.
    workflow.write_env_pillar(ctx, record.app, record.env)
    rollout = Rollout(
        app=record.app,
        env=record.env,
        version=version,
        previous=previous,
        health=str(release_manifest(settings, record.app, version)["health"]),
        previous_health=str(release_manifest(settings, record.app, previous)["health"]),
        lbs=lbs,
        members=members,
        batch=batch,
    )
    roller = Roller(ctx.salt, rollout, ctx.progress)
    # A server already on the release (an earlier deploy that stopped, or a
    # re-run) is left alone, unless the release's archive was just rebuilt.
    skip = [] if rebuilt else [m.name for m in members if roller.running_version(m) == version]
    if skip:
        ctx.progress(f"{', '.join(skip)}: already on release {version}")
    ctx.progress(f"{rollout.env_id}: {verb} {previous} -> {version}, {batch} server(s) at a time")
    switched = roller.run(skip=skip)
    # A record from before releases were recorded learns what ran until now.
    known = record if record.release else dataclasses.replace(record, release=previous)
    updated = known.with_release(version)
    if updated != record:
        envstore.save(settings.state_dir, updated)
    workflow.write_env_pillar(ctx, record.app, record.env)
    return {
        "result": True,
        "environment": rollout.env_id,
        "release": version,
        "previous_release": updated.previous_release,
        "switched": switched,
        "unchanged": skip,
        "changes": bool(switched) or updated != record,
        "seconds": round(time.monotonic() - started, 1),
    }


def deploy(
    ctx: Any,
    app: str,
    env: str,
    version: Any = None,
    source: Any = None,
    batch: Any = 1,
) -> dict[str, Any]:
    """Roll environment (app, env) to a new release of its app; see the module's docstring."""
    chosen = spec.parse_version(version)
    size = spec.parse_batch(batch)
    if source is not None and not str(source).strip():
        raise InvalidRequest("source is empty", f"give the directory of a release of {app}")
    settings: Settings = ctx.settings
    record = _require_record(settings, app, env)
    with env_lock(settings.lock_dir, app, env, "deploy"):
        record = _require_record(settings, app, env)
        ctx.progress(f"{naming.env_id(app, env)}: building the release")
        target, rebuilt = prepare_release(settings, app, chosen, source)
        return _roll(ctx, record, target, size, rebuilt, "deploying")


def rollback(ctx: Any, app: str, env: str, batch: Any = 1) -> dict[str, Any]:
    """Roll environment (app, env) back to the release it ran before the last deploy."""
    size = spec.parse_batch(batch)
    settings: Settings = ctx.settings
    _require_record(settings, app, env)
    with env_lock(settings.lock_dir, app, env, "rollback"):
        record = _require_record(settings, app, env)
        env_id = naming.env_id(app, env)
        target = record.previous_release
        if target is None:
            raise NotFound(
                f"{env_id} has no previous release to return to",
                f"it has run {record.release or 'one release'} only; deploy one with "
                f"salt-run gdl.deploy app={app} env={env}",
            )
        if not release_exists(settings, app, target):
            raise NotFound(
                f"release {target} of {app} is not on the master any more",
                f"deploy a release by its directory: salt-run gdl.deploy app={app} env={env} "
                "source=...",
            )
        return _roll(ctx, record, target, size, False, "rolling back")
