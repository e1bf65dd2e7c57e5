"""bandit runs over every directory of Python the master loads, and the docs say which."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bandit_scope() -> set[str]:
    """The directories tests/run.sh gives bandit."""
    (line,) = [
        line for line in (ROOT / "tests/run.sh").read_text().splitlines() if 'bin/bandit" ' in line
    ]
    return {word for word in line.split() if not word.startswith(("-", '"'))}


def test_bandit_covers_every_salt_loader_directory_and_the_package():
    # Salt loads modules from the _<kind> directories (runners, engines, ...).
    loaded = {p.name for p in ROOT.glob("_*") if p.is_dir() and any(p.rglob("*.py"))}
    assert loaded | {"gdl", "gdl_harness"} <= bandit_scope()


def test_security_doc_names_what_bandit_covers():
    text = (ROOT / "docs/security.md").read_text()
    (row,) = [line for line in text.splitlines() if "`bandit -ll` over" in line]
    named = set(re.findall(r"`([A-Za-z_]+)`", row.split(" runs in ")[0]))
    assert named == bandit_scope()
