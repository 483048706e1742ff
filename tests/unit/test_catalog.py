import pytest

from labkit.errors import SpecError
from labkit.lab import catalog


def test_offline_catalogue_has_the_four_local_distros():
    assert set(catalog.names("local")) >= {"debian:11", "debian:12", "debian:13", "busybox"}


def test_every_entry_is_complete():
    for ref in catalog.names():
        d = catalog.get(ref)
        assert d.pkg_mgr, ref
        assert d.source in ("local", "registry")
        if d.source == "registry":
            assert d.bootstrap, f"{ref}: registry distros need a way to get Python"
        if d.source == "local" and d.family == "debian":
            assert d.suite
    assert catalog.get("busybox").python is False


def test_registry_rewrite():
    d = catalog.get("ubuntu:24.04")
    assert d.image_ref() == "docker.io/library/ubuntu:24.04"
    assert d.image_ref("localhost:5000") == "localhost:5000/library/ubuntu:24.04"
    assert catalog.get("debian:12").image_ref("localhost:5000") == "labkit/debian:12"


def test_unknown_suggests():
    with pytest.raises(SpecError) as ei:
        catalog.get("fedroa:41")
    assert "fedora:41" in ei.value.hint
