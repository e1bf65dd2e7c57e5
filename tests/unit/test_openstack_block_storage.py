"""boot_from_volume on a cloud without block storage is refused before anything is made.

The rig has Cinder, so it cannot show a cloud without one (tests/openstack/test_volumes.py
shows a boot from volume there). Here a real openstacksdk connection reads the service
catalog of a token Keystone would issue, handed to it already issued: the catalog is the
cloud's answer that matters, and nothing else is asked of the cloud.
"""

import datetime

import openstack.connection
import pytest
from keystoneauth1 import access, session
from keystoneauth1.identity import v3

from gdl.errors import ProviderError
from gdl.providers import openstack as provider
from gdl.providers.openstack.check import check_block_storage
from gdl.providers.openstack.cloud import Cloud

BASE = {"image": "debian-12", "network": "private", "master_address": "10.0.0.2"}
REGION = "RegionOne"
CATALOG = {  # service type -> public URL, as a cloud without block storage lists them
    "identity": "http://cloud.invalid:5000/v3",
    "compute": "http://cloud.invalid:8774/v2.1",
    "image": "http://cloud.invalid:9292",
    "network": "http://cloud.invalid:9696",
}


def token(catalog: dict[str, str]) -> dict:
    """A Keystone v3 token's body, as ``POST /v3/auth/tokens`` answers, with ``catalog``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    domain = {"id": "default", "name": "Default"}
    return {
        "token": {
            "methods": ["password"],
            "issued_at": now.isoformat(),
            "expires_at": (now + datetime.timedelta(hours=1)).isoformat(),
            "user": {"id": "user-demo", "name": "demo", "domain": domain},
            "project": {"id": "proj-mine", "name": "demo", "domain": domain},
            "roles": [{"id": "role-member", "name": "member"}],
            "catalog": [
                {
                    "id": f"service-{index}",
                    "type": service_type,
                    "name": service_type,
                    "endpoints": [
                        {
                            "id": f"endpoint-{index}",
                            "interface": "public",
                            "region": REGION,
                            "region_id": REGION,
                            "url": url,
                        }
                    ],
                }
                for index, (service_type, url) in enumerate(catalog.items())
            ],
        }
    }


def connection(catalog: dict[str, str]) -> openstack.connection.Connection:
    """A connection whose token (already issued, never fetched) carries ``catalog``."""
    auth = v3.Password(
        auth_url=CATALOG["identity"],
        username="demo",
        password="unused",
        project_id="proj-mine",
        user_domain_id="default",
    )
    auth.auth_ref = access.create(body=token(catalog), auth_token="issued")
    return openstack.connection.Connection(session=session.Session(auth=auth), region_name=REGION)


def cloud(catalog: dict[str, str], **settings) -> Cloud:
    cfg = provider.OpenStackSettings.from_mapping({**BASE, **settings})
    return Cloud(cfg, connection(catalog))


def test_boot_from_volume_without_block_storage_is_refused_in_one_line():
    with pytest.raises(ProviderError) as caught:
        check_block_storage(cloud(CATALOG, boot_from_volume=True))
    line = str(caught.value)
    assert "\n" not in line and len(line) < 300, line
    assert "boot_from_volume is set and this cloud has no block storage (Cinder)" in line
    assert "map the size to a flavor with a disk and drop boot_from_volume" in line


def test_block_storage_is_found_under_any_of_its_service_types():
    for service_type in ("volumev3", "block-storage"):
        catalog = {**CATALOG, service_type: "http://cloud.invalid:8776/v3/proj-mine"}
        check_block_storage(cloud(catalog, boot_from_volume=True))


def test_an_image_boot_needs_no_block_storage():
    check_block_storage(cloud(CATALOG))
