"""Headless Chromium as the tests run it: one place for its path and its flags."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


def chromium_flags(profile: Path, *extra: str) -> list[str]:
    """Flags for a headless run that talks only to the page asked for.

    No sandbox (the tests run as root), no QUIC, and none of Chromium's own
    background traffic (updates, sync, first-run pages): the only requests it
    makes are to the environment under test.
    """
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *extra,
    ]
