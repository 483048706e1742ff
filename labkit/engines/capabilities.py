"""What each container engine can do, as data: the lab model, the plan and the rest of labkit
ask these questions instead of comparing an engine's name. A leaf (imports nothing of labkit),
so the lab model and the plan, which sit below the engines, can read it too.

Adding an engine: a module in ``labkit/engines/`` with a class that satisfies
``labkit.engines.base.Engine``, its row here, and one line in ``labkit.engines.registry``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capabilities:
    name: str
    own_networks: bool      # makes its own per-student networks (LXC joins the student's Docker network)
    rootless_users: bool    # a container may live in a user's own store (the lab file's `user:`)
    baked_images: bool      # the lab's packages are baked into an image per distro once
    fast_path: bool         # a second `up` with nothing to change skips the playbook (labkit.plan.uptodate)
    read_remote: bool       # labkit reads it on a remote lab server over SSH (Docker: through a tunnel)
    system_container: bool  # boots an init of its own (PID 1 is not the lab's `sleep`)
    checkpoints: bool = False  # keeps a container's file system as an image (labkit checkpoint)
    primary: bool = False   # on every lab server: read everywhere, its networks the ones others may join,
                            # its containers' names plain (debian12); the others' carry the engine


ENGINES: dict[str, Capabilities] = {
    "docker": Capabilities("docker", own_networks=True, rootless_users=False, baked_images=True, fast_path=True,
                           read_remote=True, system_container=False, checkpoints=True, primary=True),
    "podman": Capabilities("podman", own_networks=True, rootless_users=True, baked_images=False, fast_path=False,
                           read_remote=True, system_container=False),
    "lxc": Capabilities("lxc", own_networks=False, rootless_users=False, baked_images=False, fast_path=False,
                        read_remote=True, system_container=True),
}
DEFAULT = "docker"  # the engine of a container the lab file gives none (the primary one)
NAMES = tuple(ENGINES)


def caps(name: str | None) -> Capabilities:
    """The capabilities of engine ``name`` (None or '': the default engine, Docker)."""
    return ENGINES[name or DEFAULT]


def label(engine: str | None, user: str = "") -> str:
    """How a host's engine is shown: ``docker``, ``podman``, ``podman (rootless, alice)``, ``lxc``."""
    return (engine or DEFAULT) + (f" (rootless, {user})" if user else "")
