"""bootstrap.sh's refusals: each is one line, a non-zero exit, and nothing changed.

A full bootstrap installs packages and a system-wide master, too much for the
suite; it is run by hand (docs/bootstrap.md).  These are the checks it makes
before it touches anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gdl_harness.salt_daemons import REPO_ROOT, file_roots, pillar_roots

BOOTSTRAP = REPO_ROOT / "bootstrap.sh"
# What a run that got past its checks would make first.
FOOTPRINT = (
    Path("/opt/gdl"),
    Path("/etc/salt/master.d/gdl.conf"),
    Path("/usr/local/bin/salt-master"),
    Path("/var/lib/gdl"),
)


def _bootstrap(*args: str, env: dict[str, str] | None = None, user: int | None = None):
    environment = {k: v for k, v in os.environ.items() if k != "OS_CLOUD"}
    environment.update(env or {})
    command = ["bash", str(BOOTSTRAP), *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    before = {path: path.exists() for path in FOOTPRINT}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)
    assert {path: path.exists() for path in FOOTPRINT} == before
    return result


def _one_line_refusal(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bootstrap.sh: ")
    assert fragment in lines[0]


def test_help_lists_the_options() -> None:
    result = _bootstrap("--help")
    assert result.returncode == 0
    for option in ("--provider", "--cloud", "--master-address", "--uninstall", "--help"):
        assert option in result.stdout


def test_unknown_option() -> None:
    result = _bootstrap("--provder", "local")
    _one_line_refusal(result, "unknown option --provder")
    assert result.returncode == 2


def test_unknown_provider() -> None:
    _one_line_refusal(
        _bootstrap("--provider", "aws"), "use --provider local or --provider openstack"
    )


def test_openstack_needs_a_cloud() -> None:
    _one_line_refusal(_bootstrap("--provider", "openstack"), "pass --cloud NAME")


def test_option_without_value() -> None:
    _one_line_refusal(_bootstrap("--provider", "openstack", "--cloud"), "--cloud needs a value")


def test_options_of_the_other_provider() -> None:
    _one_line_refusal(
        _bootstrap("--provider", "local", "--master-address", "10.0.0.1"),
        "--master-address is for openstack",
    )
    _one_line_refusal(
        _bootstrap("--provider", "openstack", "--cloud", "x", "--bridge", "br0"),
        "--bridge and --cidr are for the local provider",
    )


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_refuses_without_root() -> None:
    _one_line_refusal(_bootstrap("--provider", "local", user=65534), "must run as root")


@pytest.mark.skipif(os.geteuid() != 0, reason="the OS check comes after the root check")
@pytest.mark.parametrize(
    ("os_release", "fragment"),
    [
        ('ID=fedora\nVERSION_ID="40"\n', "unsupported system 'fedora'"),
        ('ID=ubuntu\nVERSION_ID="20.04"\n', "unsupported ubuntu 20.04"),
        ("ID=debian\nVERSION_ID=11\n", "unsupported debian 11"),
        ("ID=debian\n", "unsupported debian (no version)"),
    ],
)
def test_refuses_unsupported_systems(tmp_path: Path, os_release: str, fragment: str) -> None:
    fake = tmp_path / "os-release"
    fake.write_text(os_release)
    result = _bootstrap("--provider", "local", env={"GDL_OS_RELEASE": str(fake)})
    _one_line_refusal(result, fragment)


def _written_master_config(state_dir: Path) -> dict:
    """The master.d/gdl.conf bootstrap.sh writes, for this checkout and ``state_dir``."""
    text = BOOTSTRAP.read_text()
    body = text.split('write_file "$GDL_CONF" 0644 <<EOF\n', 1)[1].split("\nEOF\n", 1)[0]
    values = {
        "$SOURCE_DIR": str(REPO_ROOT),
        "$STATE_DIR": str(state_dir),
        "$interface": "127.0.0.1",
        "$provider_settings": "",
        "$provider": "local",
    }
    for name, value in values.items():
        body = body.replace(name, value)
    return yaml.safe_load(body)


def test_master_serves_the_states_and_releases_not_the_checkout(tmp_path: Path) -> None:
    """The file roots bootstrap.sh writes (and the tests' master uses) hold no tests/ or bench/."""
    import salt.config
    import salt.fileserver

    state_dir = tmp_path / "gdl"
    written = _written_master_config(state_dir)
    assert written["file_roots"] == file_roots(state_dir)
    assert written["pillar_roots"] == pillar_roots(state_dir)

    release = state_dir / "files" / "gdl-releases" / "blog" / "blog-1.0.0.tar.gz"
    release.parent.mkdir(parents=True)
    release.write_bytes(b"release")
    opts = salt.config.master_config(None)
    opts.update(
        {
            "file_roots": written["file_roots"],
            "file_ignore_regex": written["file_ignore_regex"],
            "fileserver_backend": ["roots"],
            "cachedir": str(tmp_path / "cache"),
            "__role": "master",
        }
    )
    served = salt.fileserver.Fileserver(opts).file_list({"saltenv": "base"})
    assert "gdl/app/init.sls" in served and "top.sls" in served
    assert "orch/build.sls" in served and "_modules/gdl_lb.py" in served
    assert "gdl-releases/blog/blog-1.0.0.tar.gz" in served
    outside = ("tests/", "bench/", "apps/", "docs/", ".git", "README.md", "bootstrap.sh")
    assert not [path for path in served if path.startswith(outside)], served
    assert not [path for path in served if "__pycache__" in path], served
