"""The helpers gdl's salt-cloud drivers share (gdl/cloud_driver.py)."""

import pytest
from salt.exceptions import SaltCloudSystemExit

from gdl import cloud_driver

# What salt-cloud hands a driver: the VM's settings name their provider entry.
OPTS = {"providers": {"gdl-openstack": {"gdl_openstack": {"driver": "gdl_openstack"}}}}


def vm(**settings):
    return {"driver": "gdl-openstack:gdl_openstack", **settings}


def test_identity_comes_from_the_server_name():
    assert cloud_driver.server_identity(vm(name="lb-1-blog-dev"), OPTS) == ("blog", "dev", "lb")


def test_identity_from_the_profile_wins():
    vm_ = vm(name="lb-1-blog-dev", role="app")
    assert cloud_driver.server_identity(vm_, OPTS) == ("blog", "dev", "app")


def test_identity_missing_is_one_line():
    with pytest.raises(SaltCloudSystemExit, match="no app, env, role"):
        cloud_driver.server_identity(vm(name="web1"), OPTS)
