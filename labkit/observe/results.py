"""One check's outcome on one host: what `labkit verify` gives and the report shows.
Below both (labkit.observe.verify runs the checks, labkit.observe.report renders them)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CheckResult:
    fact: str
    host: str
    outcome: str        # passed, failed, skipped
    detail: str
    engine: str = ""    # the host's engine: docker, podman (rootless: "podman (rootless, alice)"), lxc; vm: libvirt
