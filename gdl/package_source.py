"""The servers' package source: the master's wheelhouses over plain HTTP, read-only.

First boot on a cloud server installs Salt with ``pip --no-index --find-links
http://<master>:<package_port>/<wheelhouse>/`` (:mod:`gdl.userdata`); this is
what answers.  It serves the directory :func:`gdl.salt_wheelhouse.package_root`
and nothing else: GET and HEAD only, a directory as a page of links to its
files (what pip's ``--find-links`` reads), a file as bytes.  A path with ``..``
or ``.`` segments, a hidden name (the builds' scratch directories and locks),
a symbolic link anywhere on the way, or anything not a regular file or
directory is refused; so is a path whose real location is outside the root.
The wheels are public packages: nothing here is secret.

The Salt master engine ``gdl_package_source`` (``_engines/``) runs it beside
the master, so it starts and stops with it.
"""

from __future__ import annotations

import html
import logging
import os
import stat
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

CHUNK = 1 << 16


class Refused(Exception):
    """A path the package source does not serve."""

    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


def resolve(root: Path, request_path: str) -> Path:
    """The file or directory under ``root`` that ``request_path`` names, or Refused.

    Every step is checked with ``lstat``: links are never followed.
    """
    path = unquote(urlsplit(request_path).path)
    if "\0" in path or "\\" in path:
        raise Refused(HTTPStatus.BAD_REQUEST)
    current = root
    for segment in path.split("/"):
        if segment == "":
            continue
        if segment in (".", "..") or segment.startswith("."):
            raise Refused(HTTPStatus.FORBIDDEN)
        current = current / segment
        try:
            mode = os.lstat(current).st_mode
        except OSError:
            raise Refused(HTTPStatus.NOT_FOUND) from None
        if stat.S_ISLNK(mode):
            raise Refused(HTTPStatus.FORBIDDEN)
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise Refused(HTTPStatus.FORBIDDEN)
    real_root = root.resolve()
    real = current.resolve()
    if real != real_root and real_root not in real.parents:
        raise Refused(HTTPStatus.FORBIDDEN)
    return current


def listing(directory: Path, url_path: str) -> bytes:
    """A page of links to the directory's served entries (pip's find-links reads it)."""
    entries = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink():
            continue
        name = entry.name + ("/" if entry.is_dir() else "")
        if entry.is_dir() or entry.is_file():
            quoted = html.escape(name, quote=True)
            entries.append(f'<a href="{quoted}">{quoted}</a><br>')
    title = html.escape(url_path)
    body = "\n".join(entries)
    head = f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n"
    return (head + f"<body>\n{body}\n</body></html>\n").encode()


class PackageHandler(BaseHTTPRequestHandler):
    """GET and HEAD under the server's root; any other method gets 501 from the base class."""

    server: PackageServer
    server_version = "gdl-package-source"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        try:
            path = resolve(self.server.root, self.path)
        except Refused as refused:
            self.send_error(refused.status)
            return
        if path.is_dir():
            if not urlsplit(self.path).path.endswith("/"):
                self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                self.send_header("Location", urlsplit(self.path).path + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            page = listing(path, urlsplit(self.path).path)
            self._headers("text/html; charset=utf-8", len(page))
            if send_body:
                self.wfile.write(page)
            return
        try:
            # O_NOFOLLOW: a file swapped for a link after the check is still refused.
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with os.fdopen(descriptor, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            self._headers("application/octet-stream", size)
            if send_body:
                while chunk := stream.read(CHUNK):
                    self.wfile.write(chunk)

    def _headers(self, content_type: str, length: int) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("package source: %s %s", self.address_string(), format % args)


class PackageServer(ThreadingHTTPServer):
    """An HTTP server over one directory; ``serve_forever`` until ``shutdown``."""

    daemon_threads = True

    def __init__(self, root: Path | str, address: str, port: int) -> None:
        self.root = Path(root)
        super().__init__((address, port), PackageHandler)


def serve(root: Path | str, address: str, port: int) -> None:
    """Serve ``root`` on ``address:port`` until the process ends (the engine's body)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    with PackageServer(root, address, port) as server:
        log.info("package source: serving %s on %s:%s", root, address, port)
        server.serve_forever()
