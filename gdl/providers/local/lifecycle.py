"""Making and removing a local cloud's hosts, and keeping every host's /etc/hosts current.

:class:`~gdl.providers.local.provider.LocalProvider` reserves hosts (writes
their records) and then calls :func:`make_hosts`, which plumbs, caps and boots
them all at once from their boot descriptions (:mod:`gdl.providers.local.boot`)
through the mechanism of :mod:`gdl.providers.local.host`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

from gdl.providers.base import RUNNING, ServerRequest
from gdl.providers.local import host, isolation
from gdl.providers.local.boot import HostSettings, Size, boot_description, hosts_file
from gdl.providers.local.records import Records

BOOT_TIMEOUT = 120  # the most a batch of hosts is given to boot


def make_hosts(
    records: Records,
    settings: HostSettings,
    requests: Sequence[ServerRequest],
    sizes: dict[str, Size],
    timeout: float,
) -> dict[str, str]:
    """Plumb and boot reserved hosts, all at once; returns the errors by name."""
    reserved = {r.name: records.host(r.name) for r in requests}
    names = {r.name: host.HostNames.of(settings.tag, r.name) for r in requests}
    plumbing = host.plumb([names[r.name] for r in requests], settings.bridge)
    failures = {
        r.name: plumbing[names[r.name].netns] for r in requests if names[r.name].netns in plumbing
    }
    ready = [r for r in requests if r.name not in failures]
    # The new hosts' ports are filtered before anything in them runs.
    isolation.sync(records)
    descriptions = []
    for request in ready:
        stage_dir = records.host_dir(request.name) / "root"
        stage_dir.mkdir(exist_ok=True)
        size = sizes[request.name]
        cgroups = host.make_cgroups(names[request.name], size.memory_mb * 1024**2, size.vcpus)
        description = boot_description(
            settings, request, size, stage_dir, records.hosts().values(), cgroups
        )
        description["interfaces"] = {
            "eth0": f"{reserved[request.name]['address']}/{settings.cidr.prefixlen}"
        }
        descriptions.append(description)
    answers = host.boot(descriptions, timeout=min(timeout, BOOT_TIMEOUT))
    for request, description, answer in zip(ready, descriptions, answers, strict=True):
        if isinstance(answer, str):
            failures[request.name] = answer
            continue
        record = reserved[request.name]
        record.update(pid=answer[0], starttime=answer[1], cgroups=description["cgroups"])
        records.save_host(record)
    return failures


def refresh_hosts_files(records: Records, gateway: str) -> None:
    """Give every running host an /etc/hosts listing all hosts of the cloud."""
    every = list(records.hosts().values())
    text = hosts_file(gateway, (r for r in every if r.get("address")))
    for record in every:
        if records.state(record) != RUNNING:
            continue
        try:
            write_into_host(int(record["pid"]), "etc", "hosts", text)
        except OSError:
            continue  # the host went away meanwhile, or its /etc is not a directory


def write_into_host(pid: int, directory: str, name: str, text: str) -> None:
    """Replace ``/<directory>/<name>`` inside the host whose PID 1 is ``pid``.

    The host owns everything under its root and may have made any of it a
    link; a link followed from here would lead into the machine's own files.
    So the directory is opened without following a link, and the file is
    made new in it (never opened if it exists) and renamed over the old one,
    all relative to that directory.
    """
    root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY)
    try:
        parent = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root)
    finally:
        os.close(root)
    try:
        temporary = f".{name}.gdl-{secrets.token_hex(6)}"
        handle = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=parent
        )
        with os.fdopen(handle, "w") as written:
            written.write(text)
            os.fchmod(written.fileno(), 0o644)  # whatever the umask
        os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
    finally:
        os.close(parent)


def remove_host(records: Records, name: str) -> bool:
    """Remove everything of one host; False when nothing was there."""
    names = host.HostNames.of(records.tag, name)
    host_dir = records.host_dir(name)
    record = records.host(name)
    found = record is not None or names.netns_path.exists() or host_dir.exists()
    if record is not None:
        host.kill(record.get("pid"), record.get("starttime"))
    host.unplumb(names)
    host.remove_cgroups(names)
    # The record goes last: until then its address stays reserved.
    records.forget_host(name)
    host.remove_tree(host_dir)
    return found
