"""Running gdl through salt-run against a test master.

Shared by the integration, fault and OpenStack tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from gdl_harness.salt_daemons import SaltMaster
from gdl_harness.salt_process import salt_script

# Lines Salt 3008 itself writes to stderr at the end of a salt-run, whatever the
# runner did: they are not gdl's output.
SALT_NOISE = ("unclosed Runner", "unclosed MasterMinion")


def documents(text: str) -> list[object]:
    """salt-run --out=json prints each progress event, then the return: one document each."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return found
        try:
            document, position = decoder.raw_decode(text, position)
        except ValueError:
            # A log line between the documents: skip it.
            end = text.find("\n", position)
            if end < 0:
                return found
            position = end + 1
            continue
        found.append(document)


def run(master: SaltMaster, *args: str, env: dict[str, str] | None = None, timeout: float = 900):
    """Exit status, the runner's return (the last JSON document) and all output."""
    result = master.run("--out=json", *args, timeout=timeout, env=env)
    found = documents(result.stdout)
    return result.returncode, (found[-1] if found else None), result.stdout + result.stderr


def refusal(output: str) -> str:
    """The runner's error: salt-run --out=json prints it as a JSON string, last."""
    found = [d for d in documents(output) if isinstance(d, str)]
    return found[-1] if found else ""


def one_line_refusal(result: subprocess.CompletedProcess[str], fragment: str = "") -> str:
    """A refused command's line, after checking it is the whole of what the operator sees.

    problem: fix, in few enough characters to read, with nothing a terminal would act on;
    a non-zero exit, no traceback, nothing else on stdout or stderr.
    """
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode != 0, output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, output
    line = lines[0]
    assert fragment in line, output
    assert ": " in line, line
    assert len(line) < 300, line
    assert line.isprintable(), repr(line)
    stray = [
        text
        for text in result.stderr.splitlines()
        if text.strip() and not any(noise in text for noise in SALT_NOISE)
    ]
    assert stray == [], output
    return line


def footprint(*roots: Path) -> dict[str, str]:
    """Every file and directory under ``roots``: its path and a digest of its content."""
    seen: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            seen[str(path)] = (
                hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            )
    return seen


class Background:
    """A salt-run command started now and collected later."""

    def __init__(self, master: SaltMaster, *args: str, log: Path) -> None:
        self.log = log
        self._output = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [salt_script("salt-run"), "-c", str(master.config_dir), "--out=json", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(master.root),
        )

    def wait(self, timeout: float = 900) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._output.close()
        return code, self.log.read_text()

    def running(self) -> bool:
        return self.process.poll() is None


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def served_by(url: str, count: int, context: ssl.SSLContext | None = None) -> list[str]:
    hosts = []
    for _ in range(count):
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            hosts.append(response.headers["X-Served-By"])
    return hosts


def restart_master_daemon(master: SaltMaster, grace: float = 20) -> None:
    """Stop and start the salt-master daemon only, as a service manager's restart does.

    SaltMaster.stop() also kills every command run with the master's config
    (a salt-run in progress); a restart of the daemon leaves those running.
    """
    import os
    import signal

    from gdl_harness import salt_process

    process = master.process
    assert process is not None and process.poll() is None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    salt_process._running.pop(process.pid, None)
    # Same ports again: the minions know no others.
    wait_until(
        lambda: (
            not salt_process.port_open(master.interface, master.ret_port)
            and not salt_process.port_open(master.interface, master.publish_port)
        ),
        30,
        "the master's ports to close",
    )
    master.start()
