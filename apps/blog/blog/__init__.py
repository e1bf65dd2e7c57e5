"""The gdl blog: an index of posts and a page per post.

Posts are Markdown files shipped in ``posts/`` beside this package, each
starting with a few ``Key: value`` lines (Title, Date, Summary) followed by a
blank line and the body.  They are read once, when the app starts: a release
is immutable, so a new post means a new release.

Every response says which server answered (``X-Served-By`` and the footer),
so a person watching the load balancer at work can see it.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import markdown
from flask import Flask, abort, jsonify, render_template
from markupsafe import Markup

APP_DIR = Path(__file__).resolve().parent.parent
POSTS_DIR = APP_DIR / "posts"
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Post:
    slug: str
    title: str
    date: str
    summary: str
    html: Markup


def manifest_version(app_dir: Path = APP_DIR) -> str:
    """The version line of the app's manifest (no YAML parser needed for one key)."""
    try:
        text = (app_dir / "app.yaml").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    match = re.search(r"^version:\s*['\"]?([^'\"\s#]+)", text, re.MULTILINE)
    return match.group(1) if match else "unknown"


def load_posts(posts_dir: Path = POSTS_DIR) -> list[Post]:
    """Every post, newest first."""
    posts = []
    for path in sorted(posts_dir.glob("*.md")):
        converter = markdown.Markdown(extensions=["meta", "fenced_code", "tables"])
        html = converter.convert(path.read_text(encoding="utf-8"))
        meta = {key: " ".join(values) for key, values in converter.Meta.items()}
        slug = path.stem
        if not SLUG_PATTERN.match(slug):
            continue
        posts.append(
            Post(
                slug=slug,
                title=meta.get("title", slug.replace("-", " ").capitalize()),
                date=meta.get("date", ""),
                summary=meta.get("summary", ""),
                # The posts ship with the release and are written by its authors.
                html=Markup(html),  # noqa: S704
            )
        )
    return sorted(posts, key=lambda post: (post.date, post.slug), reverse=True)


def create_app(posts_dir: Path = POSTS_DIR) -> Flask:
    app = Flask(__name__, static_folder=str(APP_DIR / "static"), static_url_path="/static")
    # gethostname, not getfqdn: a host whose resolver is unreachable would block on a lookup.
    host = socket.gethostname()
    version = os.environ.get("GDL_APP_VERSION") or manifest_version()
    posts = load_posts(posts_dir)
    by_slug = {post.slug: post for post in posts}

    @app.context_processor
    def page_globals() -> dict[str, str]:
        return {"served_by": host, "version": version}

    @app.after_request
    def say_who_answered(response):
        response.headers["X-Served-By"] = host
        response.headers["X-App-Version"] = version
        return response

    @app.get("/")
    def index():
        return render_template("index.html", posts=posts)

    @app.get("/posts/<slug>")
    def post(slug: str):
        found = by_slug.get(slug)
        if found is None:
            abort(404)
        return render_template("post.html", post=found)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", host=host, app="blog", version=version)

    @app.errorhandler(404)
    def not_found(_error):
        return render_template("404.html"), 404

    return app


app = create_app()
