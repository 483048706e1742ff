"""The distro catalogue: what labkit knows about each distro a lab may ask for.

Each entry says where the image comes from (built offline here, or pulled from a
registry in a connected classroom), which package manager the distro uses, and
how Ansible gets Python onto it.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

from labkit.errors import SpecError


@dataclass(frozen=True)
class Distro:
    ref: str                      # what a lab file says: "debian:12"
    source_image: str             # local tag (without prefix) or registry reference
    source: str                   # "local" (built offline by labkit) or "registry"
    family: str                   # debian, redhat, alpine, suse, busybox
    pkg_mgr: str                  # apt, dnf, yum, microdnf, apk, zypper, none
    os_id: str | None             # os-release ID expected inside, None when the image has none
    version_id: str | None        # os-release VERSION_ID expected inside
    python: bool = True           # Ansible modules can run (after bootstrap)
    bootstrap: str | None = None  # raw shell command that installs python3 when missing
    suite: str | None = None      # Debian suite for the offline build
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def image(self) -> str:
        """The image reference: local tags get ``$LABKIT_IMAGE_PREFIX`` (default ``labkit/``)."""
        if self.source == "local":
            return os.environ.get("LABKIT_IMAGE_PREFIX", "labkit/") + self.source_image
        return self.source_image

    @property
    def slug(self) -> str:
        return "".join(c for c in self.ref.lower() if c.isalnum())

    def image_ref(self, registry: str | None = None) -> str:
        """The image to run; a registry entry is rewritten to go through ``registry``."""
        if self.source != "registry" or not registry:
            return self.image
        path = self.image.split("/", 1)[1] if self.image.startswith("docker.io/") else self.image
        return f"{registry.rstrip('/')}/{path}"


# How Ansible gets Python onto a distro whose image lacks it (run with `raw` when python3 is missing).
_APT_PY = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-apt"
_DNF_PY = "dnf install -y -q python3"
_MICRODNF_PY = "microdnf install -y python3"
_YUM_PY = "yum install -y -q python3"
_APK_PY = "apk add --no-cache python3"
_ZYPPER_PY = "zypper -n install python3"

_ENTRIES = [
    # Built offline from Debian's mirror (mmdebstrap + docker import).
    Distro("debian:11", "debian:11", "local", "debian", "apt", "debian", "11",
           suite="bullseye", aliases=("debian:bullseye",)),
    Distro("debian:12", "debian:12", "local", "debian", "apt", "debian", "12",
           suite="bookworm", aliases=("debian:bookworm",)),
    Distro("debian:13", "debian:13", "local", "debian", "apt", "debian", "13",
           suite="trixie", aliases=("debian:trixie",)),
    # BusyBox from Debian's busybox-static: no Python, no package manager, no os-release.
    Distro("busybox", "busybox:1.35", "local", "busybox", "none", None, None,
           python=False, aliases=("busybox:1.35",)),
    # Registry-backed: for connected classrooms (or a registry mirror on the LAN).
    Distro("ubuntu:22.04", "docker.io/library/ubuntu:22.04", "registry", "debian", "apt", "ubuntu", "22.04",
           bootstrap=_APT_PY, aliases=("ubuntu:jammy",)),
    Distro("ubuntu:24.04", "docker.io/library/ubuntu:24.04", "registry", "debian", "apt", "ubuntu", "24.04",
           bootstrap=_APT_PY, aliases=("ubuntu:noble",)),
    Distro("fedora:41", "docker.io/library/fedora:41", "registry", "redhat", "dnf", "fedora", "41",
           bootstrap=_DNF_PY),
    Distro("fedora:42", "docker.io/library/fedora:42", "registry", "redhat", "dnf", "fedora", "42",
           bootstrap=_DNF_PY),
    Distro("rockylinux:9", "docker.io/rockylinux/rockylinux:9", "registry", "redhat", "dnf", "rocky", "9",
           bootstrap=_DNF_PY),
    Distro("almalinux:9", "docker.io/library/almalinux:9", "registry", "redhat", "dnf", "almalinux", "9",
           bootstrap=_DNF_PY),
    Distro("amazonlinux:2023", "docker.io/library/amazonlinux:2023", "registry", "redhat", "dnf", "amzn",
           "2023", bootstrap=_DNF_PY),
    Distro("amazonlinux:2", "docker.io/library/amazonlinux:2", "registry", "redhat", "yum", "amzn", "2",
           bootstrap=_YUM_PY),
    Distro("ubi:9", "registry.access.redhat.com/ubi9/ubi-minimal:latest", "registry", "redhat", "microdnf",
           "rhel", None, bootstrap=_MICRODNF_PY, aliases=("ubi9-minimal",)),
    Distro("alpine:3.20", "docker.io/library/alpine:3.20", "registry", "alpine", "apk", "alpine", None,
           bootstrap=_APK_PY),
    Distro("alpine:3.21", "docker.io/library/alpine:3.21", "registry", "alpine", "apk", "alpine", None,
           bootstrap=_APK_PY),
    Distro("opensuse-leap:15.6", "docker.io/opensuse/leap:15.6", "registry", "suse", "zypper", "opensuse-leap",
           "15.6", bootstrap=_ZYPPER_PY),
]

CATALOG: dict[str, Distro] = {}
for _d in _ENTRIES:
    CATALOG[_d.ref] = _d
    for _a in _d.aliases:
        CATALOG[_a] = _d


def names(source: str | None = None) -> list[str]:
    """Canonical distro references, optionally only those of one source."""
    return [d.ref for d in _ENTRIES if source is None or d.source == source]


def get(ref: str) -> Distro:
    """Look a distro up by reference or alias; unknown ones raise SpecError with suggestions."""
    try:
        return CATALOG[ref]
    except KeyError:
        # suggest canonical names only (an alias such as ubuntu:noble is accepted, not offered)
        family = [d.ref for d in _ENTRIES if d.ref.split(":")[0] == ref.split(":")[0]]
        close = family or list(dict.fromkeys(CATALOG[c].ref for c in difflib.get_close_matches(ref, list(CATALOG), n=2)))
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise SpecError(
            f"unknown distro '{ref}'",
            hint + "known distros: " + ", ".join(names()),
        ) from None


def default_registry() -> str | None:
    """A registry mirror from ``$LABKIT_REGISTRY`` (e.g. ``localhost:5000``), if set."""
    return os.environ.get("LABKIT_REGISTRY") or None
