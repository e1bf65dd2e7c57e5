"""The app's init script (hosts without systemd) against stand-in gunicorns.

``start`` must wait for a gunicorn that is slow to listen (a server short of CPU)
and give up at once on one that ends first. The script is rendered as the app
role renders it, with its paths moved under a temporary directory, and run as
root (``start-stop-daemon --chuid root``), so nothing outside that directory changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.local_salt import salt_jinja

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = REPO_ROOT / "states" / "gdl" / "app" / "files" / "gunicorn.init.jinja"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("start-stop-daemon"),
    reason="runs start-stop-daemon as root",
)

# A stand-in for the venv's gunicorn: after DELAY seconds it writes the pidfile
# (--pid) and runs on, or ends at once when DELAY is "never". It notes where its
# control socket would go.
STAND_IN = """#!/bin/sh
while [ $# -gt 0 ]; do
    [ "$1" = --pid ] && pidfile=$2
    shift
done
echo "$XDG_RUNTIME_DIR" > "{notes}"
[ "{delay}" = never ] && exit 1
sleep {delay}
echo $$ > "$pidfile"
exec sleep 120
"""


def init_script(root: Path, delay: str) -> Path:
    current = root / "current"
    (current / "venv" / "bin").mkdir(parents=True)
    gunicorn = current / "venv" / "bin" / "gunicorn"
    gunicorn.write_text(STAND_IN.format(notes=root / "notes", delay=delay))
    gunicorn.chmod(0o755)
    app = {"service": "gdl-test", "name": "test", "current": str(current)}
    app["run_dir"] = str(root / "run")
    text = (
        salt_jinja()
        .from_string(TEMPLATE.read_text())
        .render(app=app, user="root", group="root", args=["--bind", "127.0.0.1:8000", "app:app"])
    )
    script = root / "init"
    script.write_text(text)
    script.chmod(0o755)
    return script


def service(script: Path, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), action], capture_output=True, text=True, timeout=90, check=False
    )


def test_start_waits_for_a_gunicorn_slow_to_listen(tmp_path):
    script = init_script(tmp_path, "3")
    try:
        started = time.monotonic()
        assert service(script, "start").returncode == 0
        assert time.monotonic() - started >= 3
        assert service(script, "status").returncode == 0
        # gunicorn's control socket goes to the app's run directory.
        assert (tmp_path / "notes").read_text().strip() == str(tmp_path / "run")
        assert not (tmp_path / "run" / "launched.pid").exists()
    finally:
        service(script, "stop")
    assert service(script, "status").returncode != 0


def test_start_gives_up_at_once_on_a_gunicorn_that_ends(tmp_path):
    script = init_script(tmp_path, "never")
    started = time.monotonic()
    assert service(script, "start").returncode != 0
    assert time.monotonic() - started < 10
    assert service(script, "status").returncode != 0
