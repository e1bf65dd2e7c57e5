"""The blog app, through Flask's test client."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

BLOG_DIR = Path(__file__).resolve().parents[2] / "apps" / "blog"


@pytest.fixture(scope="module")
def blog():
    sys.path.insert(0, str(BLOG_DIR))
    try:
        import blog as blog_module
    finally:
        sys.path.remove(str(BLOG_DIR))
    return blog_module


@pytest.fixture
def client(blog, monkeypatch):
    monkeypatch.setenv("GDL_APP_VERSION", "9.9.9")
    return blog.create_app().test_client()


def test_index_lists_every_post(client, blog):
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    posts = blog.load_posts()
    assert len(posts) >= 3
    for post in posts:
        assert post.title in page
        assert f'href="/posts/{post.slug}"' in page
    # Newest first.
    assert [post.date for post in posts] == sorted((post.date for post in posts), reverse=True)


def test_post_page_renders_markdown(client, blog):
    post = next(post for post in blog.load_posts() if post.slug == "how-a-rollout-works")
    response = client.get(f"/posts/{post.slug}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f"<h1>{post.title}</h1>" in page
    assert "<h2>1. The release is built once</h2>" in page  # the Markdown body, rendered
    assert "<table>" in page
    assert "Title:" not in page  # the metadata lines are not shown


def test_unknown_post_is_a_404_page(client):
    response = client.get("/posts/no-such-post")
    assert response.status_code == 404
    assert "Nothing here" in response.get_data(as_text=True)
    assert client.get("/posts/..%2fapp.yaml").status_code == 404


def test_healthz_says_who_and_which_version(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {
        "status": "ok",
        "host": socket.gethostname(),
        "app": "blog",
        "version": "9.9.9",
    }


@pytest.mark.parametrize("path", ["/", "/healthz", "/posts/how-a-rollout-works", "/nope"])
def test_every_response_says_which_server_answered(client, path):
    response = client.get(path)
    assert response.headers["X-Served-By"] == socket.gethostname()
    assert response.headers["X-App-Version"] == "9.9.9"


def test_footer_shows_server_and_version(client):
    page = client.get("/").get_data(as_text=True)
    assert f'<strong class="served-by">{socket.gethostname()}</strong>' in page
    assert '<span class="version">9.9.9</span>' in page


def test_version_defaults_to_the_manifest(blog, monkeypatch):
    monkeypatch.delenv("GDL_APP_VERSION", raising=False)
    response = blog.create_app().test_client().get("/healthz")
    assert response.json["version"] == blog.manifest_version() == "1.0.0"


def test_stylesheet_is_linked_and_shipped(client):
    page = client.get("/").get_data(as_text=True)
    assert 'href="/static/style.css"' in page
    assert (BLOG_DIR / "static" / "style.css").is_file()


def test_hello_world_follows_the_same_contract(monkeypatch):
    monkeypatch.syspath_prepend(str(BLOG_DIR.parent / "hello_world"))
    import hello_world

    seen = {}

    def start_response(status, headers):
        seen["status"] = status
        seen["headers"] = dict(headers)

    body = b"".join(hello_world.app({"PATH_INFO": "/healthz"}, start_response))
    assert seen["status"] == "200 OK"
    assert seen["headers"]["X-Served-By"] == socket.gethostname()
    assert b'"status": "ok"' in body
    hello_world.app({"PATH_INFO": "/missing"}, start_response)
    assert seen["status"].startswith("404")
