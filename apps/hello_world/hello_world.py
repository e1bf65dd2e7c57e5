"""Hello, world: a plain WSGI app on gdl's contract.

``/healthz`` answers JSON; every response carries ``X-Served-By``.
"""

import json
import os
import socket

HOST = socket.gethostname()
VERSION = os.environ.get("GDL_APP_VERSION", "1.0.0")


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":
        status = "200 OK"
        body = json.dumps({"status": "ok", "host": HOST, "app": "hello_world", "version": VERSION})
        content_type = "application/json"
    elif path == "/":
        status = "200 OK"
        body = f"Hello, world! Served by {HOST}, hello_world {VERSION}.\n"
        content_type = "text/plain; charset=utf-8"
    else:
        status = "404 Not Found"
        body = "Not found.\n"
        content_type = "text/plain; charset=utf-8"
    data = body.encode()
    start_response(
        status,
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(data))),
            ("X-Served-By", HOST),
            ("X-App-Version", VERSION),
        ],
    )
    return [data]
