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


def test_salt_loads_the_package_source_engine() -> None:
    import salt.config
    import salt.loader

    opts = salt.config.master_config("/nonexistent")
    engines = salt.loader.engines(opts, {}, {}, {})
    assert "gdl_package_source.start" in engines


def test_bootstrap_and_test_masters_enable_the_engine(tmp_path: Path) -> None:
    from gdl_harness.salt_daemons import SaltMaster

    assert "engines:\n  - gdl_package_source: {}" in (REPO_ROOT / "bootstrap.sh").read_text()
    config = SaltMaster(tmp_path / "master").config()
    assert config["engines"] == [{"gdl_package_source": {}}]
    # Each test master serves on a port of its own.
    assert config["gdl"]["package_port"] not in (config["ret_port"], config["publish_port"])
