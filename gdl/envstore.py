"""What the master remembers of each environment: the request and its secrets.

The servers themselves are always read from the provider; the record keeps
only what the provider cannot tell: the requested size and count, which
provider holds the environment, the VRRP secret, the HTTPS choice, and the
app release the environment runs (``release``) with the one it ran before
(``previous_release``), so a re-run of the build keeps what the last deploy
or rollback chose.  It is written before anything is made, so a build that
dies half-way still leaves a destroy everything it needs.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from gdl import naming


@dataclass(frozen=True)
class EnvRecord:
    app: str
    env: str
    provider: str
    servers: int
    size: str
    vrrp_secret: str
    created: str
    updated: str
    # Records written before releases were tracked have neither: None.
    release: str | None = None
    previous_release: str | None = None
    # The lb role's VRRP timing profile (docs/vrrp.md); older records: default.
    vrrp_profile: str = "default"
    # HTTPS at the VIP (gdl.tls, docs/https.md): "off", "auto" (the master's CA) or
    # "files" (the operator's tls_cert and tls_key on the master); what port 80 does.
    tls: str = "off"
    tls_cert: str | None = None
    tls_key: str | None = None
    http: str = "redirect"
    # The load balancers' tuning given to builds (gdl.tuning), by argument; older records: none.
    lb_tuning: dict[str, Any] = field(default_factory=dict)

    def with_vrrp_profile(self, profile: str) -> EnvRecord:
        if profile == self.vrrp_profile:
            return self
        return replace(self, vrrp_profile=profile, updated=_now())

    def with_tls(self, tls: str, cert: str | None, key: str | None, http: str) -> EnvRecord:
        if (tls, cert, key, http) == (self.tls, self.tls_cert, self.tls_key, self.http):
            return self
        return replace(self, tls=tls, tls_cert=cert, tls_key=key, http=http, updated=_now())

    def with_lb_tuning(self, given: dict[str, Any]) -> EnvRecord:
        """The record with the tuning arguments ``given`` replacing the ones it keeps."""
        tuning = {**self.lb_tuning, **given}
        if tuning == self.lb_tuning:
            return self
        return replace(self, lb_tuning=tuning, updated=_now())

    def with_request(self, servers: int, size: str) -> EnvRecord:
        return replace(self, servers=servers, size=size, updated=_now())

    def with_release(self, release: str) -> EnvRecord:
        """The record once ``release`` runs everywhere; the one it replaces becomes previous."""
        if release == self.release:
            return self
        previous = self.release if self.release is not None else self.previous_release
        return replace(self, release=release, previous_release=previous, updated=_now())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_vrrp_secret() -> str:
    # keepalived's PASS authentication uses at most 8 characters.
    return secrets.token_hex(4)


def record_path(state_dir: str | os.PathLike[str], app: str, env: str) -> Path:
    return Path(state_dir) / "envs" / f"{naming.env_id(app, env)}.json"


def load(state_dir: str | os.PathLike[str], app: str, env: str) -> EnvRecord | None:
    path = record_path(state_dir, app, env)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return _from_dict(data)


def _from_dict(data: dict) -> EnvRecord:
    known = set(EnvRecord.__dataclass_fields__)
    return EnvRecord(**{key: value for key, value in data.items() if key in known})


def new_record(app: str, env: str, provider: str, servers: int, size: str) -> EnvRecord:
    now = _now()
    return EnvRecord(
        app=app,
        env=env,
        provider=provider,
        servers=servers,
        size=size,
        vrrp_secret=new_vrrp_secret(),
        created=now,
        updated=now,
    )


def save(state_dir: str | os.PathLike[str], record: EnvRecord) -> Path:
    """Write the record atomically, readable by root only (it holds the VRRP secret)."""
    path = record_path(state_dir, record.app, record.env)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(record), handle, indent=2, sort_keys=True)
    tmp.replace(path)
    return path


def remove(state_dir: str | os.PathLike[str], app: str, env: str) -> bool:
    path = record_path(state_dir, app, env)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def list_records(state_dir: str | os.PathLike[str]) -> list[EnvRecord]:
    directory = Path(state_dir) / "envs"
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            records.append(_from_dict(json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # a torn or foreign file is not an environment
    return records
