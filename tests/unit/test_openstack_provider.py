"""The OpenStack provider's plain parts: settings, tags, router ids, retries, errors.

Everything that needs a cloud runs against the rig (tests/openstack); here only what the
rig cannot produce on demand (5xx answers, lost connections) and the pure helpers.
"""

import logging

import openstack.connection
import pytest
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions

from gdl.errors import CapacityError, ConfigError, CredentialsError, ProviderError
from gdl.providers import openstack as provider

BASE = {"image": "debian-12", "network": "private", "master_address": "10.0.0.2"}


def http_error(status, message="boom"):
    """An SDK HTTP error as the cloud layer raises it, without a real response."""
    error = os_exceptions.HttpException(message=message, details=message)
    error.status_code = status
    return error


def test_settings_need_image_network_and_master_address():
    for missing in BASE:
        section = {k: v for k, v in BASE.items() if k != missing}
        with pytest.raises(ConfigError, match=f"gdl:openstack:{missing} is not set"):
            provider.OpenStackSettings.from_mapping(section)


def test_settings_master_address_must_be_an_address_or_a_name():
    for bad in ("salt example", "-salt", "salt_master.example"):
        with pytest.raises(ConfigError, match="is neither an IP address nor a DNS name"):
            provider.OpenStackSettings.from_mapping({**BASE, "master_address": bad})


def test_settings_read_optional_keys():
    cfg = provider.OpenStackSettings.from_mapping(
        {**BASE, "cloud": "c", "flavor": {"m1.small": "g1.small"}, "key_name": "ops"}
    )
    assert cfg.cloud == "c"
    assert cfg.flavors == {"m1.small": "g1.small"}
    assert cfg.key_name == "ops"
    assert cfg.external_network is None


def test_settings_ports_and_packages_are_checked():
    cfg = provider.OpenStackSettings.from_mapping(
        {**BASE, "master_port": 14506, "publish_port": 14505, "minion_packages": []}
    )
    assert (cfg.master_port, cfg.publish_port, cfg.minion_packages) == (14506, 14505, ())
    # Salt comes from the master's package source: no distribution package by default.
    assert provider.OpenStackSettings.from_mapping(BASE).minion_packages == ()
    for bad in ({"master_port": "4506x"}, {"publish_port": 70000}, {"master_port": True}):
        with pytest.raises(ConfigError, match="is not a TCP port"):
            provider.OpenStackSettings.from_mapping({**BASE, **bad})
    for bad in ("python3-venv", ["ok", "no; rm -rf /"]):
        with pytest.raises(ConfigError, match="minion_packages"):
            provider.OpenStackSettings.from_mapping({**BASE, "minion_packages": bad})


def test_settings_mirror_and_proxy_are_urls():
    cfg = provider.OpenStackSettings.from_mapping(BASE)
    assert (cfg.pip_index_url, cfg.http_proxy) == (None, None)
    cfg = provider.OpenStackSettings.from_mapping(
        {**BASE, "pip_index_url": "https://mirror.example/simple", "http_proxy": "http://p:3128"}
    )
    assert (cfg.pip_index_url, cfg.http_proxy) == ("https://mirror.example/simple", "http://p:3128")
    for bad in ({"pip_index_url": "ftp://x"}, {"http_proxy": "http://p:3128; reboot"}):
        with pytest.raises(ConfigError, match="is not an http or https URL"):
            provider.OpenStackSettings.from_mapping({**BASE, **bad})


def test_settings_timeouts_default_long_enough_for_a_first_boot():
    cfg = provider.OpenStackSettings.from_mapping(BASE)
    assert (cfg.server_timeout, cfg.minion_timeout) == (600, 900)
    made = provider.OpenStackProvider(
        provider.OpenStackSettings.from_mapping({**BASE, "minion_timeout": 1800})
    )
    assert made.minion_timeout == 1800
    for bad in ({"minion_timeout": "soon"}, {"server_timeout": 0}, {"minion_timeout": True}):
        with pytest.raises(ConfigError, match="is not a number of seconds"):
            provider.OpenStackSettings.from_mapping({**BASE, **bad})


def test_no_cloud_configured_is_one_clear_line(monkeypatch):
    for name in ("OS_CLOUD", "OS_AUTH_URL"):
        monkeypatch.delenv(name, raising=False)
    cfg = provider.OpenStackSettings.from_mapping(BASE)
    with pytest.raises(ConfigError) as caught:
        provider.connect(cfg)
    assert "no OpenStack cloud is configured" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_cloud_name_lists_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.delenv("OS_CLOUD", raising=False)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  mine:\n    auth:\n      auth_url: http://127.0.0.1:1/v3\n"
        "      username: u\n      password: p\n      project_name: x\n"
    )
    cfg = provider.OpenStackSettings.from_mapping(
        {**BASE, "cloud": "theirs", "clouds_file": str(clouds)}
    )
    with pytest.raises(ConfigError, match=r"cloud 'theirs' is not in clouds.yaml.*mine"):
        provider.connect(cfg)


def test_a_clouds_file_that_is_not_there_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("OS_CLOUD", raising=False)
    missing = tmp_path / "clouds.yml"
    cfg = provider.OpenStackSettings.from_mapping(
        {**BASE, "cloud": "mine", "clouds_file": str(missing)}
    )
    with pytest.raises(ConfigError) as caught:
        provider.connect(cfg)
    message = str(caught.value)
    assert f"gdl:openstack:clouds_file '{missing}' is not a file the master can read" in message
    assert "not in clouds.yaml" not in message and "\n" not in message


def test_the_connection_bounds_every_request(tmp_path, monkeypatch):
    monkeypatch.delenv("OS_CLOUD", raising=False)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  mine:\n    api_timeout: 3600\n    auth:\n"
        "      auth_url: http://127.0.0.1:1/v3\n"
        "      username: u\n      password: p\n      project_name: x\n"
    )
    made = []
    # Only the SDK's connection is faked: the configuration is the SDK's own.
    monkeypatch.setattr(openstack.connection, "Connection", lambda config: made.append(config))
    for extra, expected in (({}, 60), ({"api_timeout": 15}, 15)):
        cfg = provider.OpenStackSettings.from_mapping(
            {**BASE, "cloud": "mine", "clouds_file": str(clouds), **extra}
        )
        provider.connect(cfg)
        # keystoneauth's session passes it to every request it sends.
        assert made.pop().get_session().timeout == expected
    for bad in ("soon", 0, True):
        with pytest.raises(ConfigError, match=r"api_timeout .* is not a number of seconds"):
            provider.OpenStackSettings.from_mapping({**BASE, "api_timeout": bad})


def test_tags_round_trip_marks():
    marks = {"gdl_app": "blog", "gdl_env": "dev", "gdl_role": "lb"}
    tags = provider.tags_of(marks)
    assert tags == ["gdl_app=blog", "gdl_env=dev", "gdl_role=lb"]
    assert provider.marks_of([*tags, "not-a-mark"]) == marks


def test_router_id_probes_upwards_and_wraps():
    assert provider.next_router_id(10, []) == 10
    assert provider.next_router_id(10, [10, 11]) == 12
    assert provider.next_router_id(255, [255]) == 1
    assert provider.next_router_id(1, range(1, 256)) is None


def test_retry_gets_past_server_errors():
    answers = [http_error(503), http_error(500), "made"]
    pauses = []

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert provider.retry(call, sleep=pauses.append) == "made"
    assert pauses == [1.0, 2.0]


def test_retry_gives_up_after_bounded_attempts():
    calls = []

    def call():
        calls.append(1)
        raise http_error(502)

    with pytest.raises(os_exceptions.HttpException):
        provider.retry(call, attempts=3, sleep=lambda _: None)
    assert len(calls) == 3


def test_retry_does_not_repeat_client_errors():
    calls = []

    def call():
        calls.append(1)
        raise http_error(400)

    with pytest.raises(os_exceptions.HttpException):
        provider.retry(call, sleep=lambda _: None)
    assert len(calls) == 1


def test_conflict_is_retried_only_when_asked():
    assert not provider.is_transient(http_error(409))
    assert provider.is_transient(http_error(409), conflict_is_transient=True)
    assert provider.is_transient(ks_exceptions.ConnectFailure("reset"))


def test_an_unreachable_cloud_is_named_in_a_few_words():
    # keystoneauth's messages, with urllib3's own inside.
    refused = ks_exceptions.ConnectFailure(
        "Unable to establish connection to http://127.0.0.1:9/v3/auth/tokens: "
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
        "/v3/auth/tokens (Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', "
        'port=9): Failed to establish a new connection: [Errno 111] Connection refused"))'
    )
    message = str(provider.translate(refused, "logging in"))
    assert message == (
        "cannot reach OpenStack at http://127.0.0.1:9/v3/auth/tokens (Connection refused) "
        "while logging in: check the auth_url and that the cloud's API endpoints answer "
        "from this master"
    )
    unknown = ks_exceptions.ConnectFailure(
        "Unable to establish connection to https://keystone.example:5000/v3/auth/tokens: "
        "HTTPSConnectionPool(host='keystone.example', port=5000): Max retries exceeded "
        '(Caused by NameResolutionError("<urllib3.connection.HTTPSConnection object>: '
        "Failed to resolve 'keystone.example' ([Errno -2] Name or service not known)\"))"
    )
    assert "at https://keystone.example:5000/v3/auth/tokens (Name or service not known)" in (
        str(provider.translate(unknown, "logging in"))
    )
    slow = ks_exceptions.ConnectTimeout("Request to http://10.0.0.1:5000/v3 timed out")
    assert "at http://10.0.0.1:5000/v3 (no answer in time) while listing" in str(
        provider.translate(slow, "listing")
    )
    assert "(reset) while" in str(provider.translate(ks_exceptions.ConnectFailure("reset"), "x"))


def test_keystoneauths_discovery_fallback_stays_off_the_terminal(tmp_path, caplog):
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  mine:\n    auth:\n      auth_url: http://127.0.0.1:1/v3\n"
        "      username: u\n      password: p\n      project_name: x\n"
    )
    provider.connect(
        provider.OpenStackSettings.from_mapping(
            {**BASE, "cloud": "mine", "clouds_file": str(clouds)}
        )
    )
    name = "keystoneauth.identity.generic.base"
    with caplog.at_level(logging.DEBUG, logger=name):
        logging.getLogger(name).warning(
            "Failed to discover available identity versions when contacting %s. "
            "Attempting to parse version from URL.",
            "http://127.0.0.1:1/v3",
        )
    # A terminal's handler at WARNING skips it; a log file at INFO keeps it.
    (record,) = [r for r in caplog.records if r.name == name]
    assert record.levelname == "INFO" and "http://127.0.0.1:1/v3" in record.getMessage()
    other = logging.LogRecord(name, logging.WARNING, __file__, 1, "something else", (), None)
    assert provider.api.DiscoveryFallbackAsInfo().filter(other)
    assert other.levelname == "WARNING"


def test_translate_names_the_kind_of_failure():
    assert isinstance(provider.translate(ks_exceptions.Unauthorized(), "x"), CredentialsError)
    quota = provider.translate(http_error(403, "Quota exceeded for instances"), "making lb-0")
    assert isinstance(quota, CapacityError)
    other = provider.translate(http_error(500, "oops\nsecond line"), "making lb-0")
    assert isinstance(other, ProviderError)
    assert "\n" not in str(other)
    assert "making lb-0" in str(other)


def test_user_data_never_reaches_the_logs(caplog):
    provider.redact_user_data_in_logs()
    provider.redact_user_data_in_logs()  # once is enough, twice is harmless
    body = '{"server": {"name": "lb-0-blog-dev", "user_data": "c2VjcmV0LWtleQ=="}}'
    with caplog.at_level("DEBUG", logger="keystoneauth.session"):
        logging.getLogger("keystoneauth.session").debug("REQ: curl -d '%s'", body)
    (record,) = caplog.records
    assert "c2VjcmV0LWtleQ" not in record.getMessage()
    assert '"user_data": "<redacted>"' in record.getMessage()
    assert "lb-0-blog-dev" in record.getMessage()


def test_load_balancers_admit_https_from_anywhere_and_app_servers_do_not():
    from types import SimpleNamespace

    from gdl.providers.openstack.security import wanted_rules

    groups = {"lb": SimpleNamespace(id="sg-lb"), "app": SimpleNamespace(id="sg-app")}
    rules = wanted_rules(groups, "10.0.0.2")

    def ports(role):
        return {
            (r["port_range_min"], r.get("remote_ip_prefix"), r.get("remote_group_id"))
            for r in rules[role]
            if r["protocol"] == "tcp"
        }

    assert {(80, "0.0.0.0/0", None), (443, "0.0.0.0/0", None)} <= ports("lb")
    assert not any(port == 443 for port, _, _ in ports("app"))
    assert (80, None, "sg-lb") in ports("app")
