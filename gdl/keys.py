"""Minion keys, generated and accepted on the master before a server exists.

This is what salt-cloud calls preseeding: the master makes the minion's key
pair, files the public half as accepted, and the server receives the pair at
boot.  No key is ever auto-accepted, and a server's key goes with it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gdl import naming

# Salt's key directories on the master, one per key state.
KEY_DIRS = ("minions", "minions_pre", "minions_rejected", "minions_denied", "minions_autosign")


@dataclass(frozen=True)
class KeyPair:
    public_pem: str
    private_pem: str


def generate(bits: int = 2048) -> KeyPair:
    """A new RSA key pair in the PEM forms salt-minion reads."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.TraditionalOpenSSL,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        .decode()
    )
    return KeyPair(public_pem=public_pem, private_pem=private_pem)


def _check_minion_id(minion_id: str) -> None:
    # Key files are named by minion id: never let a name walk out of the directory.
    if not minion_id or "/" in minion_id or minion_id.startswith(".") or "\0" in minion_id:
        raise ValueError(f"not a minion id: {minion_id!r}")


def accept(pki_dir: str | os.PathLike[str], minion_id: str, public_pem: str) -> Path:
    """File ``public_pem`` as the accepted key of ``minion_id``; replaces an older one."""
    _check_minion_id(minion_id)
    root = Path(pki_dir)
    for other in KEY_DIRS[1:]:
        (root / other / minion_id).unlink(missing_ok=True)
    accepted = root / "minions"
    accepted.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = accepted / minion_id
    tmp = path.with_name(f".{minion_id}.tmp")
    tmp.write_text(public_pem)
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def preseed(pki_dir: str | os.PathLike[str], minion_id: str) -> KeyPair:
    """Generate a pair for ``minion_id`` and accept its public half."""
    pair = generate()
    accept(pki_dir, minion_id, pair.public_pem)
    return pair


def remove(pki_dir: str | os.PathLike[str], minion_id: str) -> bool:
    """Forget every key of ``minion_id``; True when one was there."""
    _check_minion_id(minion_id)
    found = False
    for state in KEY_DIRS:
        path = Path(pki_dir) / state / minion_id
        if path.exists():
            path.unlink()
            found = True
    return found


def remove_cached_data(cache_dir: str | os.PathLike[str], minion_id: str) -> bool:
    """Forget what the master cached of ``minion_id`` (its grains and pillar); True if any.

    ``salt-key -d`` does this too: a destroyed server's pillar (with the
    environment's secrets) must not outlive it in the master's cache.
    """
    _check_minion_id(minion_id)
    found = False
    for bank in ("grains", "pillar", "mine"):
        directory = Path(cache_dir) / bank
        if not directory.is_dir():
            continue
        # Salt's file cache names a key <key>.p; pillar keys may carry ":<pillarenv>".
        for path in directory.glob(f"{minion_id}*.p"):
            if path.name[: -len(".p")].split(":")[0] == minion_id:
                path.unlink(missing_ok=True)
                found = True
    legacy = Path(cache_dir) / "minions" / minion_id
    if legacy.is_dir():
        shutil.rmtree(legacy, ignore_errors=True)
        found = True
    return found


def cached_minions(cache_dir: str | os.PathLike[str]) -> set[str]:
    """Every minion id the master's cache holds grains, pillar or mine data of."""
    ids: set[str] = set()
    for bank in ("grains", "pillar", "mine"):
        directory = Path(cache_dir) / bank
        if directory.is_dir():
            ids.update(p.name[: -len(".p")].split(":")[0] for p in directory.glob("*.p"))
    return ids


def known_minions(pki_dir: str | os.PathLike[str]) -> set[str]:
    """Every minion id with a key in any state."""
    ids: set[str] = set()
    for state in KEY_DIRS:
        directory = Path(pki_dir) / state
        if directory.is_dir():
            ids.update(p.name for p in directory.iterdir() if not p.name.startswith("."))
    return ids


def env_minions(pki_dir: str | os.PathLike[str], app: str, env: str) -> set[str]:
    """Minion ids with keys on the master that belong to (app, env) by name."""
    owned = set()
    for minion_id in known_minions(pki_dir):
        parsed = naming.parse_server_name(minion_id)
        if parsed is not None and parsed.app == app and parsed.env == env:
            owned.add(minion_id)
    return owned
