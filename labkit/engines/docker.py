"""The Docker engine, reached through the docker SDK (imported lazily)."""
from __future__ import annotations

import os
from functools import lru_cache

from labkit.errors import EngineError

START_HINT = (
    "start the engine: `bash scripts/setup.sh` (starts dockerd when none answers), "
    "or run `dockerd &` as root; then check `docker info`"
)


@lru_cache(maxsize=1)
def client(timeout: int = 120):
    """A docker SDK client that has answered a ping; EngineError otherwise."""
    try:
        import docker
    except ImportError as e:  # pragma: no cover - dependency of labkit
        raise EngineError("the docker Python SDK is missing", "pip install 'docker>=7'") from e
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        c = docker.from_env(timeout=timeout, max_pool_size=POOL)
        c.ping()
    except Exception as e:  # docker.errors.DockerException, requests errors, socket errors
        raise EngineError(f"the Docker engine is not answering at {host} ({type(e).__name__})", START_HINT) from None
    return c


def reset() -> None:
    """Forget the cached client (after the engine restarted)."""
    client.cache_clear()


_REMOTE: dict[str, object] = {}
# connections each client keeps: labkit's threads share one client (measure.containers asks for
# 160 containers' stats at once); docker-py's default of 10 opens and drops the rest each time
POOL = 64


def client_for(docker_host: str | None):
    """A client for the engine at ``docker_host`` (a lab server's tunnelled socket); the
    local engine's client for None or the local socket."""
    if not docker_host or docker_host == "unix:///var/run/docker.sock":
        return client()
    if docker_host not in _REMOTE:
        import docker

        try:
            c = docker.DockerClient(base_url=docker_host, timeout=120, max_pool_size=POOL)
            c.ping()
        except Exception as e:  # noqa: BLE001 - any failure is "not answering"
            raise EngineError(f"the Docker engine at {docker_host} is not answering ({type(e).__name__})",
                              "prepare the lab server with `labkit prepare -i INVENTORY`") from None
        _REMOTE[docker_host] = c
    return _REMOTE[docker_host]


def forget(docker_host: str | None) -> None:
    """Forget a lab server's cached client (its engine restarted or its tunnel closed)."""
    _REMOTE.pop(docker_host or "", None)


# ------------------------------------------------------------------ the other engines
# Docker is reached through the SDK above. Every other engine is a module with the same few
# functions (labkit.engines.podman is the model; the contract is in its docstring):
#   hosts(lab, students, server, users) -> rows as api.hosts gives them (with engine, user)
#   networks(lab, server, users) -> the lab's network names there
#   exec_argv(row, argv, *, user=None, workdir=None, interactive=False) -> a command line
#   measure(row) -> a measure.container()-like row, or None
# ``users``: whose stores to look in ('' is root; a name, a rootless Podman user).
OTHER_ENGINES = {"podman": "labkit.engine_podman", "lxc": "labkit.engine_lxc"}


def backend(name: str):
    """The module of engine ``name`` (not Docker's: that is this module)."""
    import importlib

    return importlib.import_module(OTHER_ENGINES[name])
