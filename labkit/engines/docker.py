"""The Docker engine, reached through the docker SDK (imported lazily)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar

from labkit.engines import capabilities
from labkit.engines.base import CheckRow, HostRow, Log
from labkit.engines.capabilities import Capabilities
from labkit.errors import EngineError
from labkit.servers.base import LOCAL_SOCKET, Server

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
    if not docker_host or docker_host == LOCAL_SOCKET:
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


def reconnect(docker_host: str | None) -> object:
    """A fresh client for the engine at ``docker_host`` (after a failure: has it come back?)."""
    if not docker_host or docker_host == LOCAL_SOCKET:
        reset()
        return client(timeout=15)
    forget(docker_host)
    return client_for(docker_host)


def forget(docker_host: str | None) -> None:
    """Forget a lab server's cached client (its engine restarted or its tunnel closed)."""
    _REMOTE.pop(docker_host or "", None)


# ------------------------------------------------------------------ the engine interface

class DockerEngine:
    """Docker through its SDK: this machine's dockerd, or a lab server's through the SSH tunnel
    ``labkit.servers.tunnel.engines`` opens (the server's ``docker_host``)."""

    name: ClassVar[str] = "docker"
    caps: ClassVar[Capabilities] = capabilities.ENGINES["docker"]

    def hosts(self, lab: str, students: Sequence[str] | None, server: Server,
              users: Sequence[str] = ("",)) -> list[HostRow]:
        out = []
        for c in client_for(server.docker_host).containers.list(all=True, filters={"label": f"labkit.lab={lab}"}):
            lb = c.labels or {}
            if students and lb.get("labkit.student") not in students:
                continue
            out.append(HostRow(
                name=c.name, role=lb.get("labkit.role", "container"), student=lb.get("labkit.student", ""),
                distro=lb.get("labkit.distro", ""), state=c.status,
                image=(c.attrs.get("Config") or {}).get("Image", ""), spec=f"docker://{c.name}",
                server=server.name, local=server.local, engine="docker", user="",
                via={"docker_host": server.docker_host}))
        return out

    def networks(self, lab: str, server: Server, users: Sequence[str] = ("",)) -> list[dict[str, str]]:
        out = []
        for n in client_for(server.docker_host).networks.list(filters={"label": f"labkit.lab={lab}"}):
            out.append({"name": n.name, "student": (n.attrs.get("Labels") or {}).get("labkit.student", ""),
                        "server": server.name})
        return out

    def exec_argv(self, row: HostRow, argv: Sequence[str], *, user: str | None = None,
                  workdir: str | None = None, interactive: bool = False,
                  server: Server | None = None) -> list[str]:
        who = (["-u", user] if user else []) + (["-w", workdir] if workdir else [])
        cmd = ["docker", "exec", "-it" if interactive else "-i", *who, row.name, *argv]
        if row.local or server is None:
            return cmd
        return server.argv(cmd, tty=interactive)  # on its lab server, over SSH

    def probe_argv(self, row: HostRow) -> list[str]:
        host = row.via.get("docker_host", "")
        remote = ["-H", host] if host and not row.local else []
        return ["docker", *remote, "exec", row.name, "/bin/sh", "-c"]

    def measure(self, rows: Sequence[HostRow], previous: Mapping[str, dict[str, Any]],
                log: Log) -> list[dict[str, Any]]:
        from labkit.observe.measure import containers  # FIXME(layering): moves into engines/

        return containers([(r.name, client_for(r.via.get("docker_host"))) for r in rows], dict(previous), log=log)

    def ansible_hostvars(self, row: HostRow) -> dict[str, Any]:
        hv: dict[str, Any] = {"ansible_connection": "community.docker.docker", "ansible_host": row.name}
        if not row.local and row.via.get("docker_host"):
            hv["ansible_docker_extra_args"] = f"-H {row.via['docker_host']}"
        return hv

    def checks(self, users: Sequence[str]) -> list[CheckRow]:
        return []  # dockerd itself is checked for every lab (labkit.doctor.machine.check_engine)

    def preflight(self, lab: str, containers: Sequence[Any], servers: Sequence[Server]) -> None:
        return None  # the engine answering and the images present are checked before the plan

    def playbook_vars(self, lab: str, containers: Sequence[Any], servers: Sequence[Server]) -> dict[str, Any]:
        return {}
