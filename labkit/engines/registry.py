"""The engines labkit knows, one instance each. Adding an engine: its module in
``labkit/engines/``, its capabilities in ``labkit.engines.capabilities``, one line here."""
from __future__ import annotations

from labkit.engines.base import Engine, HostRow
from labkit.engines.capabilities import DEFAULT, NAMES
from labkit.engines.docker import DockerEngine
from labkit.engines.lxc import LxcEngine
from labkit.engines.podman import PodmanEngine

ENGINES: dict[str, Engine] = {e.name: e for e in (DockerEngine(), PodmanEngine(), LxcEngine())}
assert tuple(ENGINES) == NAMES, "labkit.engines.capabilities and the registry name the same engines"


def get(name: str | None) -> Engine:
    """The engine ``name`` ('' or None: the default, Docker)."""
    return ENGINES[name or DEFAULT]


def of(row: HostRow) -> Engine:
    """The engine of a host's row (a VM's, engine '': the default's)."""
    return get(row.engine)


def all_engines() -> list[Engine]:
    return list(ENGINES.values())
