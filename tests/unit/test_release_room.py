"""What an app server needs to know of a release before it fetches it, read once from its archive:
the free space it takes, and how its virtualenv is made."""

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
    facts = releases.ArchiveFacts(expected, releases.SITE_PACKAGES)
    assert releases.archive_facts(archive, digest) == facts
    # Kept beside the archive, under its hash: read again, not computed again.
    kept = tmp_path / "shop-1.0.0.tar.gz.room"
    assert kept.read_text() == f"{digest} {expected} site-packages\n"
    archive.write_bytes(b"")  # unreadable now, yet the kept figures answer
    assert releases.archive_facts(archive, digest) == facts


def test_an_unreadable_archive_is_not_measured(tmp_path):
    archive = tmp_path / "shop-1.0.0.tar.gz"
    archive.write_bytes(b"not a tar")
    assert releases.archive_facts(archive, "abc") == releases.ArchiveFacts(0, "site-packages")


def test_an_archive_of_an_older_gdl_is_known_by_its_wheels(tmp_path):
    """Its wheels are pip's to install: the app role renders that way for it alone."""
    archive = tmp_path / "shop-0.9.0.tar.gz"
    wheel = "wheelhouse/gunicorn-23.0.0-py3-none-any.whl"
    digest = archive_of(archive, {"shop.py": b"app = None\n", wheel: b"w" * MIB})
    # A figure kept by a gdl that kept the room alone is measured again, with the layout.
    kept = tmp_path / "shop-0.9.0.tar.gz.room"
    kept.write_text(f"{digest} 123\n")
    facts = releases.archive_facts(archive, digest)
    assert facts.layout == releases.WHEELHOUSE and facts.room > MIB
    assert kept.read_text().split() == [digest, str(facts.room), "wheelhouse"]
    # Another archive under the same name (another hash) is read again.
    digest = archive_of(archive, {"shop.py": b"", "site-packages/gunicorn/__init__.py": b""})
    assert releases.archive_facts(archive, digest).layout == releases.SITE_PACKAGES
