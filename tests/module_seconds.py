"""The seconds each test module took, for the order tests/run.sh hands modules out in.

pytest-xdist gives each worker whole modules (``--dist loadfile``), in the order
they are collected (``--no-loadscope-reorder``); tests/conftest.py collects the
slowest modules first, from ``tests/module_seconds.json``, so a long module never
starts last and leaves the other workers idle. Refresh that file from the JUnit
reports of a full run of tests/run.sh (it writes them beside its logs)::

    .venv/bin/python tests/module_seconds.py .pytest-short.xml .pytest-long.xml
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

SECONDS_FILE = Path(__file__).with_name("module_seconds.json")


def module_path(classname: str) -> str:
    """``tests.unit.test_keys`` or ``tests.unit.test_keys.TestClass`` -> its file."""
    parts = classname.split(".")
    while parts and not parts[-1].startswith("test_"):
        parts.pop()
    return "/".join(parts) + ".py"


def seconds_by_module(reports: list[Path]) -> dict[str, float]:
    seconds: Counter[str] = Counter()
    for report in reports:
        for case in ET.parse(report).getroot().iter("testcase"):
            seconds[module_path(case.get("classname", ""))] += float(case.get("time", 0))
    return {module: round(total, 1) for module, total in sorted(seconds.items())}


def load() -> dict[str, float]:
    """Module path (from the repository's root) -> seconds; empty without the file."""
    try:
        return json.loads(SECONDS_FILE.read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.rsplit("::", 1)[1].strip(), file=sys.stderr)
        return 2
    seconds = seconds_by_module([Path(a) for a in argv])
    SECONDS_FILE.write_text(json.dumps(seconds, indent=1) + "\n")
    print(f"{len(seconds)} modules, {sum(seconds.values()):.0f} s, written to {SECONDS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
