import stat

import yaml

from gdl import envstore, pillar, release_build, spec
from gdl.config import Settings
from gdl.providers.base import RUNNING, EnvNetwork, Server


def make_server(name, address):
    return Server(
        name=name,
        app="blog",
        env="dev",
        role=name.split("-")[0],
        state=RUNNING,
        address=address,
        size="m1.small",
        provider_id=name,
    )


def test_record_round_trip_is_private(tmp_path):
    record = envstore.new_record("blog", "dev", "local", 2, "m1.small")
    path = envstore.save(tmp_path, record)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert envstore.load(tmp_path, "blog", "dev") == record
    assert len(record.vrrp_secret) == 8
    assert [r.env for r in envstore.list_records(tmp_path)] == ["dev"]
    assert envstore.remove(tmp_path, "blog", "dev")
    assert envstore.load(tmp_path, "blog", "dev") is None
    assert not envstore.remove(tmp_path, "blog", "dev")


def test_pillar_keeps_the_secret_for_the_load_balancers(tmp_path):
    record = envstore.new_record("blog", "dev", "local", 2, "m1.small")
    network = EnvNetwork(
        vip="10.9.0.250",
        public_address="10.9.0.250",
        cidr="10.9.0.0/24",
        router_id=42,
        master_address="10.9.0.1",
    )
    servers = [
        make_server("app-1-blog-dev", "10.9.0.4"),
        make_server("app-0-blog-dev", "10.9.0.3"),
        make_server("app-2-blog-dev", "10.9.0.5"),
        make_server("lb-0-blog-dev", "10.9.0.6"),
        make_server("lb-1-blog-dev", "10.9.0.7"),
    ]
    changed = pillar.write(tmp_path, record, network, servers, ["app-0-blog-dev", "app-1-blog-dev"])
    assert changed
    common_path, lb_path = pillar.pillar_files(tmp_path, "blog", "dev")
    common = yaml.safe_load(common_path.read_text().split("\n", 1)[1])["gdl"]
    assert [s["name"] for s in common["servers"]] == ["app-0-blog-dev", "app-1-blog-dev"]
    # The profile's values, resolved and checked by the runner.
    assert common["vrrp"] == {"router_id": 42, **spec.vrrp_settings("default")}
    assert common["vrrp"]["profile"] == "default" and common["vrrp"]["version"] == 2
    # Nothing reads the provider, the public address or the network's CIDR.
    assert not {"provider", "public_address", "cidr"} & set(common)
    assert record.vrrp_secret not in common_path.read_text()
    assert record.vrrp_secret in lb_path.read_text()
    assert common_path.read_text().startswith("#!yaml\n")
    assert stat.S_IMODE(lb_path.stat().st_mode) == 0o600
    assert not pillar.write(
        tmp_path, record, network, servers, ["app-0-blog-dev", "app-1-blog-dev"]
    )
    assert pillar.remove(tmp_path, "blog", "dev")
    assert not common_path.exists() and not lb_path.exists()


def test_vrrp_profile_is_kept_in_the_record_and_written_to_the_pillar(tmp_path):
    record = envstore.new_record("blog", "dev", "local", 2, "m1.small")
    assert record.vrrp_profile == "default"
    # A record written before profiles existed reads as `default`.
    path = envstore.save(tmp_path, record)
    path.write_text(path.read_text().replace('"vrrp_profile": "default",', ""))
    assert "vrrp_profile" not in path.read_text()
    assert envstore.load(tmp_path, "blog", "dev").vrrp_profile == "default"

    fast = record.with_vrrp_profile("fast")
    assert fast.vrrp_profile == "fast"
    assert fast.with_request(3, "m1.small").vrrp_profile == "fast"  # a later build keeps it
    network = EnvNetwork(
        vip="10.9.0.250",
        public_address="10.9.0.250",
        cidr="10.9.0.0/24",
        router_id=42,
        master_address="10.9.0.1",
    )
    common, _ = pillar.env_pillar(fast, network, [], [])
    assert common["gdl"]["vrrp"] == {"router_id": 42, **spec.vrrp_settings("fast")}
    assert (common["gdl"]["vrrp"]["version"], common["gdl"]["vrrp"]["advert_int"]) == (3, 0.25)


def test_pillar_lists_every_release_built_with_its_manifest(tmp_path):
    """The roles read a release's manifest from pillar, never from the fileserver."""
    apps_dir = tmp_path / "apps"
    (apps_dir / "blog").mkdir(parents=True)
    (apps_dir / "blog" / "requirements.txt").write_text("gunicorn\n")
    (apps_dir / "blog" / "app.yaml").write_text(
        "name: blog\nversion: 1.0.0\nwsgi: blog:app\nrequirements: requirements.txt\n"
        "health: /healthz\n"
    )
    settings = Settings(state_dir=tmp_path, source_dir=tmp_path)
    files_dir = release_build.files_dir(settings)
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        archive = release_build.release_path(files_dir, "blog", version)
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(b"release")
        if version != "2.0.0":  # a release without its hash file cannot be checked
            hash_file = archive.with_name(archive.name + ".sha256")
            hash_file.write_text(f"abc{version}  {archive.name}\n")
    # 1.1.0 was built from another directory: its own manifest, beside its archive.
    release_build.release_manifest_path(files_dir, "blog", "1.1.0").write_text(
        "name: blog\nversion: 1.1.0\nwsgi: blog.wsgi:application\n"
        "requirements: requirements.txt\nhealth: /health\nstatic: assets\n"
    )
    found = pillar.built_releases(settings, "blog")
    assert sorted(found) == ["1.0.0", "1.1.0"]
    assert found["1.1.0"] == {
        "source": "salt://gdl-releases/blog/blog-1.1.0.tar.gz",
        "sha256": "abc1.1.0",
        "wsgi": "blog.wsgi:application",
        "requirements": "requirements.txt",
        "static": "assets",
        "health": "/health",
        "room": 0,  # not a tar archive: the servers' own check refuses it
        "layout": "site-packages",
    }
    assert found["1.0.0"]["wsgi"] == "blog:app" and found["1.0.0"]["static"] is None


def test_a_release_whose_manifest_values_are_unsafe_is_not_handed_to_the_states(tmp_path):
    """A release built before the checks (or placed by hand) with a value a shell would read."""
    settings = Settings(state_dir=tmp_path, source_dir=tmp_path)
    files_dir = release_build.files_dir(settings)
    for version, static in (("1.0.0", "static"), ("1.0.1", "static;} server {"), ("1.0.2", "s\n")):
        archive = release_build.release_path(files_dir, "blog", version)
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(b"release")
        archive.with_name(archive.name + ".sha256").write_text(f"abc  {archive.name}\n")
        release_build.release_manifest_path(files_dir, "blog", version).write_text(
            yaml.safe_dump(
                {
                    "name": "blog",
                    "version": version,
                    "wsgi": "blog:app",
                    "requirements": "requirements.txt",
                    "health": "/healthz",
                    "static": static,
                }
            )
        )
    assert sorted(pillar.built_releases(settings, "blog")) == ["1.0.0"]
