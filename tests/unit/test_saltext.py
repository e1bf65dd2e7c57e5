"""The salt.loader entry point finds gdl's Salt modules."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from gdl import saltext

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_loader_dirs_finds_each_extension_type() -> None:
    found = saltext.loader_dirs()
    assert set(found) == set(saltext.EXTENSION_DIRS)
    assert {"runners", "modules", "clouds"} <= set(found)
    for ext_type, source_name in saltext.EXTENSION_DIRS.items():
        (directory,) = found[ext_type]
        path = Path(directory)
        assert path.is_dir()
        # Source tree (editable install) or the wheel's copy under gdl/_salt/.
        assert path == REPO_ROOT / source_name or path.parts[-2:] == ("_salt", ext_type)


def test_runner_module_is_where_the_loader_looks() -> None:
    (runners,) = saltext.loader_dirs()["runners"]
    assert (Path(runners) / "gdl.py").is_file()


def test_entry_point_is_registered() -> None:
    points = [ep for ep in entry_points(group="salt.loader") if ep.name == "gdl"]
    assert [ep.value for ep in points] == ["gdl.saltext:loader_dirs"]
    assert points[0].load() is saltext.loader_dirs
