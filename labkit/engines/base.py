"""The engine interface: what labkit asks of Docker, Podman and LXC alike, and the typed row
each of them (and libvirt, for VMs) returns for a lab host.

Everything that differs by engine lives behind ``Engine``; the rest of labkit holds an
engine from ``labkit.engines.registry`` and never compares its name.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from labkit.engines.capabilities import Capabilities

if TYPE_CHECKING:  # types only: the servers layer sits below the engines
    from labkit.servers.base import Server

Log = Callable[[str], None]
# a doctor check as an engine states it: (name, ok|warn|fail, detail, fix)
CheckRow = tuple[str, str, str, str]
# where a remote engine is reached, keyed as the rows of the engine have always carried it
_VIA_KEYS = ("docker_host", "podman_executable", "lxc_attach", "lxc_read")


@dataclass(frozen=True)
class HostRow(Mapping[str, Any]):
    """One host of a lab as found on a lab server, whatever its state: a container of some
    engine, or a VM (``role`` vm, ``engine`` ''). Frozen and typed; it also reads as the
    mapping labkit's JSON output (``status --json``) has always printed, key for key.

    ``via``: how labkit reaches the host's engine on a remote lab server (the tunnelled Docker
    socket, the Podman or LXC wrapper over SSH): read by the host's engine only.
    """

    name: str
    role: str
    student: str
    distro: str
    state: str
    image: str
    spec: str
    server: str
    local: bool
    engine: str = ""
    user: str = ""
    address: str = ""
    id: str = ""
    init: str = ""  # a container's PID 1 as made (labkit.init): none, tini, systemd; '' unknown or its engine's own
    via: Mapping[str, str] = field(default_factory=dict)

    def _view(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "via"}
        if self.role == "vm" or not self.engine:
            for k in ("engine", "user", "address", "id", "init"):
                out.pop(k)
        else:
            for k in ("address", "id", "init"):
                if not getattr(self, k):
                    out.pop(k)
        out.update({k: v for k, v in self.via.items() if k in _VIA_KEYS})
        return out

    def __getitem__(self, key: str) -> Any:
        return self._view()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())

    @classmethod
    def of(cls, m: Mapping[str, Any]) -> HostRow:
        """A row from the mapping ``as_dict`` gives (``status --json``'s hosts); a row as it is."""
        if isinstance(m, HostRow):
            return m
        known = {f.name for f in fields(cls)} - {"via"}
        kw = {k: v for k, v in m.items() if k in known}
        kw.setdefault("engine", "" if m.get("role") == "vm" else "docker")
        for k in ("student", "distro", "state", "image", "spec"):
            kw.setdefault(k, "")
        kw.setdefault("server", "localhost")
        kw.setdefault("local", True)
        return cls(**kw, via={k: str(m[k]) for k in _VIA_KEYS if m.get(k)})

    def as_dict(self) -> dict[str, Any]:
        """The row as JSON output shows it."""
        return self._view()


def each_measured(engine: str, rows: Sequence[HostRow], measure_row: Callable[[HostRow], dict[str, Any] | None],
                  log: Log) -> list[dict[str, Any]]:
    """``measure_row`` for each row in turn, for an engine that measures one container at a
    time; a container it cannot measure is said through ``log``, never fatal."""
    out = []
    for row in rows:
        m = measure_row(row)
        if m is None:
            log(f"{row.name}: not measured ({engine})")
        else:
            out.append(m)
    return out


class Engine(Protocol):
    """A container engine labkit drives. Implementations: ``DockerEngine``, ``PodmanEngine``,
    ``LxcEngine``; one instance each in ``labkit.engines.registry``.

    ``users`` is whose stores to read: '' is root's, a name a rootless user's (Podman).
    """

    name: ClassVar[str]
    caps: ClassVar[Capabilities]

    def hosts(self, lab: str, students: Sequence[str] | None, server: Server,
              users: Sequence[str]) -> list[HostRow]:
        """The lab's containers on ``server`` (by label or marker), whatever their state."""
        ...

    def networks(self, lab: str, server: Server, users: Sequence[str]) -> list[dict[str, str]]:
        """The lab's networks there: name, student, server (and engine, user but for Docker)."""
        ...

    def exec_argv(self, row: HostRow, argv: Sequence[str], *, user: str | None = None,
                  workdir: str | None = None, interactive: bool = False,
                  server: Server | None = None) -> list[str]:
        """The command line that runs ``argv`` in the container of ``row``."""
        ...

    def probe_argv(self, row: HostRow) -> list[str]:
        """The argv prefix the facts' probe script is appended to (``sh -c SCRIPT``)."""
        ...

    def measure(self, rows: Sequence[HostRow], previous: Mapping[str, dict[str, Any]],
                log: Log) -> list[dict[str, Any]]:
        """Create-to-ready seconds, memory and disk of each container (rows as labkit.engines.docker.container gives)."""
        ...

    def ansible_hostvars(self, row: HostRow) -> dict[str, Any]:
        """How Ansible reaches the container: connection plugin and its settings."""
        ...

    def mitogen_connection(self, row: HostRow) -> str | None:
        """The connection name Mitogen's strategy takes over for the container (``docker``), or
        None when Mitogen cannot reach it as ``ansible_hostvars`` says (another engine host, a
        wrapper executable): the lab's content then reaches it with the plugin of
        ``ansible_hostvars`` (labkit.ansible.mitogen)."""
        ...

    def checks(self, users: Sequence[str]) -> list[CheckRow]:
        """What a lab with this engine's containers needs on this machine (``labkit doctor``)."""
        ...

    def preflight(self, lab: str, containers: Sequence[Any], servers: Sequence[Server]) -> None:
        """Before anything is made: raise EngineError naming what the planned ``containers``
        lack on their servers, and the fix."""
        ...

    def playbook_vars(self, lab: str, containers: Sequence[Any], servers: Sequence[Server]) -> dict[str, Any]:
        """Extra variables up.yml needs for this engine's planned containers."""
        ...

    def remove_argv(self, row: HostRow) -> list[str]:
        """The command, run on the row's lab server (``Server.run``), that removes its
        container whatever its state, with its anonymous volumes (``labkit reset``)."""
        ...

    def commit(self, row: HostRow, ref: str, labels: Mapping[str, str]) -> int:
        """Keep the container's file system as the image ``ref`` on its lab server, with
        ``labels``; the bytes it adds to the container's image (``labkit checkpoint save``;
        engines whose ``caps.checkpoints`` is true)."""
        ...

    def remove_images(self, server: Server, labels: Mapping[str, str]) -> list[str]:
        """Remove the images carrying all of ``labels`` on ``server`` (checkpoints; a label
        whose value is '' needs only be there); their refs."""
        ...
