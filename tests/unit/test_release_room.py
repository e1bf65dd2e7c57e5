"""The free space an app server needs to take a release, read once from its archive."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

from gdl import releases

MIB = 1 << 20


def archive_of(path, files: dict[str, bytes]):
    with tarfile.open(path, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_room_counts_the_archive_the_tree_the_virtualenv_and_the_jobs_headroom(tmp_path):
    archive = tmp_path / "shop-1.0.0.tar.gz"
    payload = os.urandom(3 * MIB)  # does not compress: the archive is as big
    digest = archive_of(
        archive,
        {
            "shop.py": b"app = None\n",
            "payload.bin": payload,
            "site-packages/flask/__init__.py": b"x" * MIB,
            "site-packages/flask/data.bin": b"y" * MIB,
        },
    )
    packed = -(-archive.stat().st_size // 4096) * 4096
    tree = 4096 + 3 * MIB + 2 * MIB
    venv = 2 * MIB + MIB  # sources count twice (their byte code), other files once
    expected = packed + tree + venv + releases.JOB_HEADROOM
    assert releases.room_needed(archive, digest) == expected
    # Kept beside the archive, under its hash: read again, not computed again.
    assert (tmp_path / "shop-1.0.0.tar.gz.room").read_text() == f"{digest} {expected}\n"
    archive.write_bytes(b"")  # unreadable now, yet the kept figure answers
    assert releases.room_needed(archive, digest) == expected


def test_an_unreadable_archive_is_not_measured(tmp_path):
    archive = tmp_path / "shop-1.0.0.tar.gz"
    archive.write_bytes(b"not a tar")
    assert releases.room_needed(archive, "abc") == 0
