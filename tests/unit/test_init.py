"""init: none, tini, systemd (issue 29): the lab file's rules, the plan and K6's wording per
init (pure logic; the real containers: tests/integration/test_init.py)."""
import pytest

from labkit.errors import SpecError
from labkit.lab.spec import parse_lab
from labkit.observe import checks
from labkit.plan.model import Context, ServerRef, make_plan

from .test_checks import SERVER, container


def lab(**kw):
    return parse_lab({"name": "i", "students": ["s1"], "vm": {"enabled": False}, **kw})


def test_tini_is_the_default_and_an_entry_or_the_lab_chooses_otherwise():
    lb = lab(containers=["debian:12", {"distro": "debian:13", "init": "none"}, {"distro": "debian:11", "engine": "lxc"}])
    assert [c.pid1 for c in lb.containers] == ["tini", "none", ""]  # LXC boots its own
    lb = lab(init="systemd", containers=["debian:12", {"distro": "busybox", "init": "tini"}])
    assert [c.pid1 for c in lb.containers] == ["systemd", "tini"]


@pytest.mark.parametrize("data, words", [
    ({"containers": [{"distro": "debian:12", "engine": "lxc", "init": "tini"}]}, "lxc containers boot their own init"),
    ({"init": "systemd", "containers": ["busybox"]}, "containers[0]: init: systemd needs a Debian-family distro"),
    ({"containers": [{"distro": "debian:12", "init": "runit"}]}, "containers[0].init"),
    ({"init": "upstart", "containers": ["debian:12"]}, "init"),
])
def test_bad_inits_are_refused_naming_the_entry(data, words):
    with pytest.raises(SpecError, match=words.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        lab(**data)


def test_the_plan_gives_systemd_hosts_the_systemd_image_here():
    lb = lab(containers=[{"distro": "debian:12", "init": "systemd"}, "debian:13"])
    ctx = Context((ServerRef("localhost"),), "/x", systemd={"debian:12": "labkit/debian12-systemd:abc"})
    items = {c.name: (c.image, c.init) for c in make_plan(lb, ctx).containers}
    assert items == {"labkit-i-s1-debian12": ("labkit/debian12-systemd:abc", "systemd"),
                     "labkit-i-s1-debian13": ("labkit/debian:13", "tini")}


def test_k6_words_each_init_and_refuses_an_init_system_nobody_chose():
    assert "init: tini" in checks.k6(container(pid1="docker-init", init="tini"), SERVER)
    assert "init: tini" in checks.k6(container(pid1="tini", init="tini"), SERVER)
    sd = checks.k6(container(pid1="systemd", init="systemd"), SERVER)
    assert "init: systemd" in sd and "no kernel booted" in sd
    with pytest.raises(checks.FactFailed, match="container PID 1 is the init system 'systemd'"):
        checks.k6(container(pid1="systemd", init="tini"), SERVER)
    with pytest.raises(checks.FactFailed, match="made with init: systemd, but PID 1 is 'sleep'"):
        checks.k6(container(pid1="sleep", init="systemd"), SERVER)
    with pytest.raises(checks.FactFailed, match="not on the server's running kernel"):
        checks.k6(container(pid1="systemd", init="systemd", boot_id="other"), SERVER)
