"""The one owner of resource names: every name labkit gives a container, network, VM, volume
or Vagrant prefix is built here, and here alone it is decided what belongs to a lab.

The playbooks and templates receive these names from the plan (``labkit.plan.model``); they never
rebuild them.
"""
from __future__ import annotations

import re

from labkit.engines.capabilities import DEFAULT, caps

PREFIX = "labkit"
_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """``debian:12`` -> ``debian12``: a name part legal for Docker and libvirt."""
    return _SLUG.sub("", text.lower())


def lab_prefix(lab: str, student: str | None = None) -> str:
    """What every resource name of the lab (or of one student) starts with."""
    return f"{PREFIX}-{lab}-{student}-" if student else f"{PREFIX}-{lab}-"


def host_slug(distro: str, engine: str = DEFAULT, user: str = "") -> str:
    """A container's short name (what ``labkit shell`` takes, the last part of its names):
    ``debian12`` on Docker exactly as before other engines existed; ``debian12-podman``,
    ``debian12-podman-alice`` (rootless, as user alice), ``debian12-lxc`` on the others, so
    that no two engines' containers of one distro share a name."""
    base = slug(distro)
    if caps(engine).primary:
        return base
    return f"{base}-{engine}" + (f"-{_SLUG.sub('-', user.lower()).strip('-')}" if user else "")


def container(lab: str, student: str, distro: str, engine: str = "docker", user: str = "") -> str:
    """A student's container of ``distro`` (a catalogue reference or its slug) on ``engine``."""
    return f"{lab_prefix(lab, student)}{host_slug(distro, engine, user)}"


def hostname(student: str, distro: str, engine: str = "docker", user: str = "") -> str:
    return f"{student}-{host_slug(distro, engine, user)}"


def network(lab: str, student: str) -> str:
    """The student's own network (one per student: students cannot reach each other)."""
    return f"{PREFIX}-{lab}-{student}"


def vm_network(lab: str, student: str) -> str:
    """The libvirt network of a student's VM (named like the student's container network)."""
    return network(lab, student)


def vm(lab: str, student: str) -> str:
    """The libvirt domain (and inventory host) name of a student's VM."""
    return f"{lab_prefix(lab, student)}vm"


def vm_prefix(lab: str, student: str) -> str:
    """vagrant-libvirt's ``default_prefix``: the domain is this prefix + the machine ``vm``."""
    return lab_prefix(lab, student)


def short(lab: str, student: str, name: str) -> str:
    """``labkit-demo-s01-debian12`` -> ``debian12`` (the name ``labkit shell`` takes)."""
    return name.removeprefix(lab_prefix(lab, student))


def owned_by(name: str, lab: str, student: str | None = None, other_labs: list[str] | tuple[str, ...] = ()) -> bool:
    """Does a container, domain or volume name belong to this lab (and student)?

    ``labkit-a-`` is also the start of lab ``a-b``'s names, so a name that matches a longer
    known lab's prefix is left alone.
    """
    if not name.startswith(lab_prefix(lab, student)):
        return False
    return not any(len(o) > len(lab) and name.startswith(lab_prefix(o)) for o in other_labs)


def vm_student(lab: str, domain: str) -> str | None:
    """The student of a lab VM's domain name, or None when it is not one."""
    if not domain.startswith(lab_prefix(lab)) or not domain.endswith("-vm"):
        return None
    return domain[len(lab_prefix(lab)):-len("-vm")] or None
