"""The Docker engine, reached through the docker SDK (imported lazily)."""
from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar, cast

from labkit.engines import capabilities
from labkit.engines.base import CheckRow, HostRow, Log
from labkit.engines.capabilities import Capabilities
from labkit.engines.cgroup import cgroup_memory, docker_ts, less_cache
from labkit.errors import EngineError
from labkit.servers.base import LOCAL_SOCKET, Server

if TYPE_CHECKING:  # annotations only (the docker SDK is imported when a client is made)
    from docker import DockerClient

START_HINT = (
    "start the engine: `bash scripts/setup.sh` (starts dockerd when none answers), "
    "or run `dockerd &` as root; then check `docker info`"
)


@lru_cache(maxsize=1)
def client(timeout: int = 120) -> DockerClient:
    """A docker SDK client that has answered a ping; EngineError otherwise."""
    try:
        import docker
    except ImportError as e:  # pragma: no cover - dependency of labkit
        raise EngineError("the docker Python SDK is missing", "pip install 'docker>=7'") from e
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    denied = permission_denied(host)
    if denied:
        raise EngineError(*denied)
    try:
        c = docker.from_env(timeout=timeout, max_pool_size=POOL)
        c.ping()
    except Exception as e:  # docker.errors.DockerException, requests errors, socket errors
        raise EngineError(f"the Docker engine is not answering at {host} ({type(e).__name__})", START_HINT) from None
    return c


def _account() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def permission_denied(host: str = LOCAL_SOCKET) -> tuple[str, str] | None:
    """When this account may not use the Docker socket ``host`` (a local ``unix://`` socket that
    exists): the error and its hint, naming the account, the socket, the access it lacks and
    who grants it; None otherwise (root, access granted, no such socket, a remote engine).

    The engine answers; the account lacks the right to ask it. Nothing here tells anyone to start
    a daemon: the instructor (root) grants the group, or the lab does without Docker."""
    if not host.startswith("unix://") or os.geteuid() == 0:
        return None
    path = host.removeprefix("unix://")
    try:
        st = os.stat(path)
    except OSError:
        return None
    if os.access(path, os.R_OK | os.W_OK):
        return None
    who = _account()
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return (f"this account ({who}) may not use the Docker engine: {path} is {stat.filemode(st.st_mode)} "
            f"{_owner(st.st_uid)}:{group} and {who} is not in "
            f"group {group}",
            f"a lab of rootless Podman containers needs no Docker: `engine: podman` in the lab file (see "
            f"docs/instructors/shared-machine.md); or the instructor, as root, grants Docker to this account: "
            f"`usermod -aG {group} {who}` (then log in again), knowing that group {group} is root in all but name")


def usable_here() -> bool:
    """May this account use this machine's Docker engine (root, or granted the socket, or none
    there to refuse)? ``down`` sweeps Docker's containers only where it may: an account that
    may not cannot have made any."""
    return not _no_access(None)


def _no_access(docker_host: str | None) -> bool:
    """This machine's engine, which this account may not use: it cannot have made any container
    there, so it has none to list."""
    return (not docker_host or docker_host == LOCAL_SOCKET) and permission_denied(
        os.environ.get("DOCKER_HOST", LOCAL_SOCKET)) is not None


def needed(containers: Sequence[Any]) -> bool:
    """Does ``up`` need Docker on this machine for these containers (a lab's)? For root always
    (Docker's store holds the images every engine loads); for an ordinary account only when a
    container is Docker's: a lab of rootless Podman containers never asks Docker (the account's
    images come from the classroom's shared copy, ``labkit prepare --classroom``)."""
    return os.geteuid() == 0 or any(getattr(c, "engine", "docker") == DockerEngine.name for c in containers)


def reset() -> None:
    """Forget the cached client (after the engine restarted)."""
    client.cache_clear()


_REMOTE: dict[str, DockerClient] = {}
# connections each client keeps: labkit's threads share one client (containers() asks for
# 160 containers' stats at once); docker-py's default of 10 opens and drops the rest each time
POOL = 64


def client_for(docker_host: str | None) -> DockerClient:
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


def reconnect(docker_host: str | None) -> DockerClient:
    """A fresh client for the engine at ``docker_host`` (after a failure: has it come back?)."""
    if not docker_host or docker_host == LOCAL_SOCKET:
        reset()
        return client(timeout=15)
    forget(docker_host)
    return client_for(docker_host)


def forget(docker_host: str | None) -> None:
    """Forget a lab server's cached client (its engine restarted or its tunnel closed)."""
    _REMOTE.pop(docker_host or "", None)


# ------------------------------------------------------------------ measurements

def container(name: str, client: DockerClient | None = None, previous: dict | None = None,
              _images: dict[str, int] | None = None) -> dict:
    """Create-to-ready seconds, memory (cgroup usage) and disk (image size) of one container.

    ``previous``: this container's earlier row; when it measured the same container (id) started
    at the same time, that row is returned as it is, without the stats call (1-2 s each on a
    busy engine): a re-run of ``labkit up`` that changed nothing re-measures nothing."""
    client = client or client_for(None)  # this machine's engine
    c = client.containers.get(name)
    st = c.attrs["State"]
    if (previous and previous.get("container_id") == c.id and previous.get("started_at") == st.get("StartedAt")
            and st.get("Running") and previous.get("memory_bytes") is not None):
        return previous
    ready = max(0.0, docker_ts(st["StartedAt"]) - docker_ts(c.attrs["Created"]))
    # like `docker stats`: usage minus the reclaimable page cache. A container whose image pages
    # were first read by another (the page cache is charged to the first reader) can take well
    # under 1 MiB: BusyBox's sleep, a few hundred KiB. A container of this machine's engine is
    # read from its cgroup directly: the engine's stats call waits for its next collection,
    # about 1 s, however idle the machine
    local = cgroup_memory(int(st.get("Pid") or 0), cast(str, c.id)) if st.get("Running") else None  # got: has an id
    if local is not None:
        mem, how = local
    else:
        stats = cast(dict, c.stats(stream=False, one_shot=True)) if st.get("Running") else {}  # not streamed: one dict
        ms = stats.get("memory_stats") or {}
        inner = ms.get("stats") or {}
        cache = inner.get("total_inactive_file", inner.get("inactive_file", 0))
        usage = ms.get("usage")
        if usage is None:  # stopped, or an engine that gave no figure: not measured, never a made-up 0
            mem, how = None, "not measured: the engine gave no memory usage"
        else:
            mem, how = less_cache(usage, cache)
    if _images is not None and c.attrs["Image"] in _images:
        size = _images[c.attrs["Image"]]
    else:
        size = int(client.images.get(c.attrs["Image"]).attrs.get("Size", 0))
        if _images is not None:
            _images[c.attrs["Image"]] = size
    return {"host": name, "role": "container", "ready_seconds": round(ready, 3),
            "ready_how": "engine: created -> started", "memory_bytes": int(mem) if mem is not None else None,
            "memory_how": how, "disk_bytes": size, "disk_how": "image size",
            "container_id": c.id, "started_at": st.get("StartedAt")}


def containers(targets: list[tuple[str, DockerClient]], previous: dict[str, dict] | None = None, workers: int = POOL,
               log: Callable[[str], object] | None = None) -> list[dict]:
    """``container`` for many: ``targets`` is (name, engine client) pairs, measured ``workers`` at
    a time. A stats call waits for the engine's next collection (dockerd gathers every second
    and answers every waiting call at once): about 1 s each, however idle the machine, so the
    wait is what to spread, not CPU. At 40 students (160 containers) that is 24 s with 8 at a
    time, 4.4 s with 64 (POOL connections per client). ``previous`` (``load(lab)``) holds earlier rows, kept for
    containers that did not change. A container that cannot be measured is left out and said
    through ``log``: a measurement never fails the run."""
    previous = previous or {}
    sizes: dict[str, int] = {}

    def one(t: tuple[str, DockerClient]) -> dict | None:
        name, client = t
        try:
            return container(name, client, previous.get(name), sizes)
        except Exception as e:  # noqa: BLE001 - a measurement never fails the run; K8/K9 say what is missing
            if log:
                log(f"{name}: not measured ({type(e).__name__})")
            return None

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        return [r for r in pool.map(one, targets) if r is not None]


# ------------------------------------------------------------------ the engine interface

class DockerEngine:
    """Docker through its SDK: this machine's dockerd, or a lab server's through the SSH tunnel
    ``labkit.servers.base.engines`` opens (the server's ``docker_host``)."""

    name: ClassVar[str] = "docker"
    caps: ClassVar[Capabilities] = capabilities.ENGINES["docker"]

    def hosts(self, lab: str, students: Sequence[str] | None, server: Server,
              users: Sequence[str] = ("",)) -> list[HostRow]:
        if _no_access(server.docker_host):
            return []
        out = []
        # one list call (docker-py's containers.list inspects each container after it)
        for c in client_for(server.docker_host).api.containers(all=True, filters={"label": f"labkit.lab={lab}"}):
            lb = c.get("Labels") or {}
            if students and lb.get("labkit.student") not in students:
                continue
            name = ((c.get("Names") or ["/"])[0]).lstrip("/")
            out.append(HostRow(
                name=name, role=lb.get("labkit.role", "container"), student=lb.get("labkit.student", ""),
                distro=lb.get("labkit.distro", ""), state=str(c.get("State", "")), image=str(c.get("Image", "")),
                spec=f"docker://{name}", server=server.name, local=server.local, engine="docker", user="",
                id=str(c.get("Id", "")), init=lb.get("labkit.init", "none"), via={"docker_host": server.docker_host}))
        return out

    def networks(self, lab: str, server: Server, users: Sequence[str] = ("",)) -> list[dict[str, str]]:
        if _no_access(server.docker_host):
            return []
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
        return containers([(r.name, client_for(r.via.get("docker_host"))) for r in rows], dict(previous), log=log)

    def ansible_hostvars(self, row: HostRow) -> dict[str, Any]:
        hv: dict[str, Any] = {"ansible_connection": "community.docker.docker", "ansible_host": row.name}
        if not row.local and row.via.get("docker_host"):
            hv["ansible_docker_extra_args"] = f"-H {row.via['docker_host']}"
        return hv

    def mitogen_connection(self, row: HostRow) -> str | None:
        # Mitogen's docker connection runs this machine's `docker exec` (no -H: not a remote server's)
        return "docker" if row.local or not row.via.get("docker_host") else None

    def checks(self, users: Sequence[str]) -> list[CheckRow]:
        return []  # dockerd itself is checked for every lab (labkit.doctor.machine.check_engine)

    def preflight(self, lab: str, containers: Sequence[Any], servers: Sequence[Server]) -> None:
        return None  # the engine answering and the images present are checked before the plan

    def playbook_vars(self, lab: str, containers: Sequence[Any], servers: Sequence[Server]) -> dict[str, Any]:
        return {}

    def remove_argv(self, row: HostRow) -> list[str]:
        return ["docker", "rm", "--force", "--volumes", row.name]

    def commit(self, row: HostRow, ref: str, labels: Mapping[str, str]) -> int:
        repo, _, tag = ref.rpartition(":")
        c = client_for(row.via.get("docker_host"))
        try:
            # paused while its file system is read: a consistent copy, as `docker commit` does by default
            img = c.containers.get(row.name).commit(repository=repo, tag=tag, pause=True,
                                                    conf={"Labels": dict(labels)})
        except Exception as e:  # noqa: BLE001 - docker.errors.* and the socket's own
            raise EngineError(f"docker commit {row.name} failed: {e}") from None
        try:  # the checkpoint's own layer: what it adds to the image it was made from
            return int(img.history()[0].get("Size") or 0)
        except Exception:  # noqa: BLE001 - a size is a nicety
            return 0

    def remove_images(self, server: Server, labels: Mapping[str, str]) -> list[str]:
        if _no_access(server.docker_host):  # an account that may not use Docker made no checkpoint there
            return []
        c = client_for(server.docker_host)
        gone = []
        for img in c.images.list(filters={"label": [f"{k}={v}" if v else str(k) for k, v in labels.items()]}):
            for ref in img.tags or [str(img.id)]:
                try:
                    c.images.remove(ref, force=True)
                    gone.append(ref)
                except Exception:  # noqa: BLE001 - removed meanwhile: as good as gone
                    continue
        return gone
