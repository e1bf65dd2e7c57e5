"""The ``salt.loader`` entry point: where Salt finds gdl's modules.

The modules live in the source tree's top-level ``_runners/``, ``_modules/``,
``_clouds/``, ``_output/`` and ``_engines/`` (so ``saltutil.sync_all`` from
``file_roots`` works too);
an installed wheel carries copies under ``gdl/_salt/``.
"""

from __future__ import annotations

from pathlib import Path

# Salt's extension type -> the source tree's directory for it.
EXTENSION_DIRS = {
    "runners": "_runners",
    "modules": "_modules",
    "clouds": "_clouds",
    "output": "_output",
    "engines": "_engines",
}


def loader_dirs() -> dict[str, list[str]]:
    """Directories per extension type, as Salt's loader asks for them."""
    package = Path(__file__).resolve().parent
    found: dict[str, list[str]] = {}
    for ext_type, source_name in EXTENSION_DIRS.items():
        for candidate in (package / "_salt" / ext_type, package.parent / source_name):
            if candidate.is_dir():
                found[ext_type] = [str(candidate)]
                break
    return found
