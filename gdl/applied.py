"""What the last successful build applied to an environment's servers, so a re-run can skip it.

A directory per environment beside its record (``<state_dir>/envs/<app>-<env>.applied/``):

- ``modules.json``: per server (by the provider's id, so a server made again under
  the same name starts empty), the digest of the execution modules synced to it;
- ``role-<role>.json``: the digest of the role's inputs (the states, the modules,
  the environment's pillar) and the servers (name and provider id) of its last
  successful run;
- ``due-<run>.json``: a role run found due, with the inputs it runs with. The
  orchestration runs a role only while its file exists, and renames it to
  ``role-<role>.json`` once the run succeeded (``orch/build.sls``).

Losing the directory costs time, never correctness: everything is applied again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gdl import naming

# The role runs a build may find due, and the role each applies. While nothing
# is served through the pair, the app role runs on every app server at once
# ("app") and the LB role beside it ("lb-first"); in an environment that serves,
# the app role runs one server at a time out of haproxy's rotation
# ("app-rolling") and the LB role after it ("lb").
RUNS = {"app": "app", "app-rolling": "app", "lb-first": "lb", "lb": "lb"}


def applied_dir(state_dir: str | os.PathLike[str], app: str, env: str) -> Path:
    return Path(state_dir) / "envs" / f"{naming.env_id(app, env)}.applied"


def due_path(state_dir: str | os.PathLike[str], app: str, env: str, run: str) -> Path:
    return applied_dir(state_dir, app, env) / f"due-{run}.json"


def role_path(state_dir: str | os.PathLike[str], app: str, env: str, role: str) -> Path:
    return applied_dir(state_dir, app, env) / f"role-{role}.json"


def read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: steps of one build may write from two processes."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    tmp.replace(path)


def synced_modules(state_dir: str | os.PathLike[str], app: str, env: str) -> dict[str, str]:
    return read(applied_dir(state_dir, app, env) / "modules.json") or {}


def record_synced(
    state_dir: str | os.PathLike[str], app: str, env: str, provider_ids: Iterable[str], digest: str
) -> None:
    path = applied_dir(state_dir, app, env) / "modules.json"
    synced = read(path) or {}
    synced.update(dict.fromkeys(provider_ids, digest))
    write(path, synced)


def remove(state_dir: str | os.PathLike[str], app: str, env: str) -> None:
    shutil.rmtree(applied_dir(state_dir, app, env), ignore_errors=True)


def tree_digest(roots: Iterable[Path], relative: str) -> str:
    """Digest of every file under ``relative`` in the first of ``roots`` that has it.

    That is the file the master's ``roots`` fileserver serves for each path.
    """
    digest = hashlib.sha256()
    seen: set[str] = set()
    for root in roots:
        base = Path(root) / relative
        if not base.exists():
            continue
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            name = str(path.relative_to(root))
            if name in seen or "__pycache__" in path.parts:
                continue
            seen.add(name)
            digest.update(name.encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def files_digest(paths: Iterable[Path]) -> str:
    """Digest of the named files' contents (a missing file counts as empty)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
        except FileNotFoundError:
            digest.update(b"missing")
    return digest.hexdigest()
