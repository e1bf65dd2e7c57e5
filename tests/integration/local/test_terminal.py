"""What an operator sees in a terminal: a line for every step, the URL, and nothing of Salt's.

``salt-run gdl.build`` and ``gdl`` run in a pseudo-terminal, as in an operator's
shell (Salt colours its output and logs its warnings there); each line read
from the terminal is stamped with the time it arrived.  A behavioural check,
not a benchmark: the only time asserted is the longest silence.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import pytest

from gdl_harness.salt_process import salt_script

pytestmark = pytest.mark.integration

GDL = Path(sys.executable).parent / "gdl"
APP = "hello_world"
LONGEST_SILENCE = 10.0  # seconds a terminal may stay without a new line
# Salt's log lines and leak warnings, Python's warnings and tracebacks (lower case).
SALT_NOISE = ("[warning", "[error", "unclosed", "no minions matched", "traceback", "warning:")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def in_terminal(command: list[str], cwd: Path, timeout: float = 900) -> tuple[int, list]:
    """Run ``command`` on a new pseudo-terminal: (exit status, [(seconds, line), ...]).

    The list starts with (0, "") for the start and ends with the exit's time, so the
    silences before the first line and after the last one count too.
    """
    controller, terminal = pty.openpty()
    # Wide enough that no line wraps.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=str(cwd),
        start_new_session=True,
    )
    os.close(terminal)
    lines: list[tuple[float, str]] = [(0.0, "")]
    pending = b""
    try:
        while True:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{command[0]} still running after {timeout:.0f} s")
            ready, _, _ = select.select([controller], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every end of the terminal is closed, the command is done
                chunk = b""
            if not chunk:
                break
            pending += chunk
            now = time.monotonic() - started
            *whole, pending = pending.split(b"\n")
            lines += [(now, ANSI.sub("", w.decode(errors="replace")).rstrip("\r")) for w in whole]
    finally:
        if process.poll() is None:
            process.kill()
        code = process.wait()
        os.close(controller)
    if pending:
        lines.append((time.monotonic() - started, ANSI.sub("", pending.decode(errors="replace"))))
    lines.append((time.monotonic() - started, ""))
    return code, lines


def longest_silence(lines: list[tuple[float, str]]) -> tuple[float, str]:
    """The longest time between two lines, and the line it came after."""
    return max(
        ((later[0] - earlier[0], earlier[1]) for earlier, later in itertools.pairwise(lines)),
        key=lambda gap: gap[0],
    )


def shown(lines: list[tuple[float, str]]) -> str:
    return "\n".join(f"{at:6.1f}  {text}" for at, text in lines)


def assert_nothing_of_salts(lines: list[tuple[float, str]]) -> None:
    noise = [text for _, text in lines if any(n in text.lower() for n in SALT_NOISE)]
    assert noise == [], shown(lines)


def test_a_build_in_a_terminal_shows_every_step_the_url_and_nothing_else(local_cloud):
    master = local_cloud.master
    env = f"tty{uuid.uuid4().hex[:4]}"
    env_id = f"{APP}-{env}"
    build = [salt_script("salt-run"), "-c", str(master.config_dir), "gdl.build"]
    try:
        code, lines = in_terminal([*build, f"app={APP}", f"env={env}", "servers=2"], master.root)
        print(shown(lines))
        assert code == 0, shown(lines)
        texts = [text for _, text in lines]
        gap, after = longest_silence(lines)
        assert gap < LONGEST_SILENCE, f"{gap:.1f} s without a line after {after!r}\n{shown(lines)}"
        assert_nothing_of_salts(lines)

        # Each step as it starts and as it ends, with its seconds.
        for finished in (
            rf"app servers app-0-{env_id}, app-1-{env_id}: done in \d+\.\d s",
            r"VRRP pair: done in \d+\.\d s \(2 created\)",
            r"pillar and roles due: done in \d+\.\d s \(changed; due: app, lb-first\)",
            rf"module sync on lb-0-{env_id}: done in \d+\.\d s",
            rf"app role on app-[01]-{env_id}: done in \d+\.\d s.*",
            rf"LB role on lb-1-{env_id}: done in \d+\.\d s.*",
            r"VIP check: done in \d+\.\d s .*",
            rf"{env_id}: orchestration orch.build: done in \d+\.\d s",
        ):
            assert any(re.fullmatch(finished, t) for t in texts), f"{finished}\n{shown(lines)}"
        assert f"app role on app-0-{env_id}, app-1-{env_id} ..." in texts
        assert "VRRP pair ..." in texts
        # No surplus, no surplus steps.
        assert not [t for t in texts if "surplus" in t], shown(lines)

        # The summary after the last progress line, the URL first.
        url = f"http://{local_cloud.provider().find_env(APP, env).public_address}/"
        served = texts.index(f"{env_id} is served at {url}")
        summary = [t for t in texts[served + 1 :] if t.strip()]
        assert summary[:2] == [url, "result: true"], shown(lines)
    finally:
        code, lines = in_terminal(
            [str(GDL), "-c", str(master.config_dir), "destroy", APP, env], master.root
        )
    print(shown(lines))
    assert code == 0, shown(lines)
    assert_nothing_of_salts(lines)
    texts = [text for _, text in lines]
    assert any(re.fullmatch(r"servers of .*: done in \d+\.\d s.*", t) for t in texts), shown(lines)
    assert local_cloud.provider().list_servers(APP, env) == []
