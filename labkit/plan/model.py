"""Plan, then apply: what a lab is made of, as a frozen value computed with no I/O.

``gather`` (in ``labkit.api``) reads what is read-only — the lab's servers, the saved
assignment of students to servers, KVM or emulation, each remote server's VM settings —
into a ``Context``; ``make_plan(lab, ctx)`` turns lab + context into a ``Plan`` (every
container, network and VM with its name and server, and the extravars of
``playbooks/up.yml``); ``diff`` compares a plan with what exists and says what ``up`` would
create, start or recreate, and ``teardown`` what ``down`` would remove. The golden test
(tests/unit/test_plan.py) pins the extravars contract with the playbooks.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from labkit import names
from labkit.engines.capabilities import DEFAULT, NAMES, caps, label
from labkit.lab import catalog
from labkit.lab.spec import Lab

VM_DISTRO = "debian:12"  # what the box boots


@dataclass(frozen=True)
class ServerRef:
    """A lab server as the plan needs it: its inventory name, whether it is this machine,
    and how its engine is reached."""

    name: str
    local: bool = True
    docker_host: str = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class ContainerItem:
    name: str
    network: str
    hostname: str
    image: str
    student: str
    distro: str
    python: bool
    family: str
    pkg_mgr: str
    bootstrap: str
    server: str
    role: Literal["container"] = "container"
    engine: str = DEFAULT          # docker, podman, lxc (labkit.engines.capabilities)
    user: str = ""                  # Podman only: the lab server's user it runs rootless as; "": root
    init: str = "none"              # PID 1: none (sleep), tini (the engine's --init), systemd; "": LXC's own


@dataclass(frozen=True)
class NetworkItem:
    name: str
    student: str
    server: str


@dataclass(frozen=True)
class EngineNetworkItem:
    """A student's network on an engine other than Docker (Docker's are ``NetworkItem``s, as
    before engines existed): per student, engine and (rootless Podman) user."""

    name: str
    student: str
    server: str
    engine: str
    user: str = ""


@dataclass(frozen=True)
class VmItem:
    name: str
    student: str
    server: str
    role: Literal["vm"] = "vm"
    distro: str = VM_DISTRO


@dataclass(frozen=True)
class Context:
    """What ``gather`` read (read-only I/O), so that planning itself needs none."""

    servers: tuple[ServerRef, ...]
    lab_dir: str
    assignment: Mapping[str, str] | None = None     # student -> server; None: the one server
    registry: str | None = None
    vm_local: Mapping[str, Any] = field(default_factory=dict)    # box, memory, cpus, accel, ...
    vm_remote: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per remote server
    vm_pool: str = "10.204.0.0/16"      # the VM networks' address pool (labkit.vm.vmnet.pool())
    vm_prefix: int = 27
    # distro -> the image with the lab's packages baked in (labkit.images.build.bake), for Docker's
    # containers on this machine
    baked: Mapping[str, str] = field(default_factory=dict)
    # distro -> its image with systemd as PID 1 (labkit.images.build.systemd_images), for init: systemd
    systemd: Mapping[str, str] = field(default_factory=dict)
    # container name -> the checkpoint image it was restored from (labkit.plan.checkpoints)
    restored: Mapping[str, str] = field(default_factory=dict)
    # container name -> the lab image it starts from (labkit.plan.contentcache: the content cache)
    content: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    lab: str
    lab_dir: str
    containers: tuple[ContainerItem, ...]
    networks: tuple[NetworkItem, ...]
    vms: tuple[VmItem, ...]
    vm_networks: tuple[NetworkItem, ...]
    servers: tuple[ServerRef, ...]
    vm: Mapping[str, Any]
    vm_remote: Mapping[str, Mapping[str, Any]]
    limits: Mapping[str, Any]
    provision: Mapping[str, Any]
    vm_pool: str = "10.204.0.0/16"
    vm_prefix: int = 27
    engine_networks: tuple[EngineNetworkItem, ...] = ()

    @property
    def engines(self) -> list[str]:
        """The engines the lab's containers use (docker first)."""
        used = {c.engine for c in self.containers}
        return [e for e in NAMES if e in used]

    @property
    def hosts(self) -> tuple[ContainerItem | VmItem, ...]:
        return (*self.containers, *self.vms)

    def extravars(self) -> dict[str, Any]:
        """The contract with playbooks/up.yml (pinned by the golden test)."""
        return {
            "labkit_lab": self.lab,
            "labkit_lab_dir": self.lab_dir,
            "labkit_vms": [_plain(v) for v in self.vms],
            # each VM on a libvirt network of its own (role lab_network), from labkit's VM pool
            "labkit_vm_networks": [asdict(n) for n in self.vm_networks],
            "labkit_vm_pool": self.vm_pool,
            "labkit_vm_prefix": self.vm_prefix,
            "labkit_vm": dict(self.vm),
            "labkit_vm_remote": {k: dict(v) for k, v in self.vm_remote.items()},
            # every engine's containers; each item says its engine (and, rootless Podman, its user)
            "labkit_containers": [_plain(c) for c in self.containers],
            "labkit_engines": self.engines,
            # Docker's networks (role lab_network), then the other engines' (their own roles)
            "labkit_networks": [asdict(n) for n in self.networks],
            "labkit_engine_networks": [asdict(n) for n in self.engine_networks],
            "labkit_docker_hosts": {sv.name: sv.docker_host for sv in self.servers},
            "labkit_limits": dict(self.limits),
            "labkit_provision": dict(self.provision),
        }


# The plan's lists, read by up.yml's first play only (on the lab servers), which loads them from
# a file (its vars_files). Given as extra vars, Ansible carries them in the variables of every
# task on every host: 50 KB at 40 students, about 0.06 s more of the controller for each
# container's converge task (10 s of a 40-student `up` on 2 cores).
FIRST_PLAY_ONLY = ("labkit_vms", "labkit_vm_networks", "labkit_vm_pool", "labkit_vm_prefix", "labkit_containers",
                   "labkit_engines", "labkit_networks", "labkit_engine_networks", "labkit_docker_hosts",
                   "labkit_podman_remote", "labkit_lxc_remote")


def split_extravars(extravars: dict[str, Any], plan_file: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``extravars`` as up.yml takes them: (the extra vars of the command line, naming
    ``plan_file`` as ``labkit_plan_file``; what goes into that file for the first play)."""
    first = {k: v for k, v in extravars.items() if k in FIRST_PLAY_ONLY}
    rest = {k: v for k, v in extravars.items() if k not in FIRST_PLAY_ONLY}
    return {**rest, "labkit_plan_file": plan_file}, first


def _plain(item: ContainerItem | VmItem) -> dict[str, Any]:
    d = asdict(item)
    d.pop("role", None)
    if isinstance(item, VmItem):
        d.pop("distro", None)
    return d


def server_of(student: str, ctx: Context) -> str:
    """The lab server a student's hosts go to: the saved assignment, else the only server."""
    if ctx.assignment and student in ctx.assignment:
        return ctx.assignment[student]
    return ctx.servers[0].name


def simple_context(lab: Lab, lab_dir: str, assignment: dict[str, str] | None = None) -> Context:
    """A context without reading anything, for callers that need names and servers only
    (doctor, report, status): the ``assignment`` given, else this machine as the only server."""
    servers = tuple(ServerRef(s) for s in dict.fromkeys((assignment or {}).values())) or (ServerRef("localhost"),)
    return Context(servers, lab_dir, assignment, lab.registry or catalog.default_registry())


def make_plan(lab: Lab, ctx: Context, students: Iterable[str] | None = None) -> Plan:
    """Every container, network and VM of ``lab`` (of ``students`` only, when given): pure."""
    only = set(students or [])
    who = [s for s in lab.students if not only or s in only]
    containers = []
    local = {sv.name for sv in ctx.servers if sv.local}
    for s in who:
        for c in lab.containers:
            d = c.spec
            user = c.user or ""
            image = d.image_ref(ctx.registry)
            if caps(c.engine).baked_images and server_of(s, ctx) in local:
                image = ctx.baked.get(d.ref, image)
            name = names.container(lab.name, s, d.slug, c.engine, user)
            if c.pid1 == "systemd":
                image = ctx.systemd.get(d.ref, image)
            image = ctx.content.get(name, image)
            image = ctx.restored.get(name, image)
            containers.append(ContainerItem(
                name=name, network=names.network(lab.name, s),
                hostname=names.hostname(s, d.slug, c.engine, user), image=image, student=s,
                distro=d.ref, python=d.python, family=d.family, pkg_mgr=d.pkg_mgr, bootstrap=d.bootstrap or "",
                server=server_of(s, ctx), engine=c.engine, user=user, init=c.pid1))
    docker = any(caps(c.engine).primary for c in lab.containers)  # the primary engine's own networks
    networks = [NetworkItem(names.network(lab.name, s), s, server_of(s, ctx)) for s in who] if docker else []
    # one network per student on each other engine (and each rootless user's Podman)
    where = dict.fromkeys((c.engine, c.user or "") for c in lab.containers if not caps(c.engine).primary)
    engine_nets = [EngineNetworkItem(names.network(lab.name, s), s, server_of(s, ctx), e, u)
                   for s in who for (e, u) in where]
    vms = [VmItem(names.vm(lab.name, s), s, server_of(s, ctx)) for s in who] if lab.vm.enabled else []
    vm_nets = [NetworkItem(names.vm_network(lab.name, v.student), v.student, v.server) for v in vms]
    vm = dict(ctx.vm_local) or {"box": lab.vm.box, "memory": lab.vm.memory, "cpus": lab.vm.cpus}
    return Plan(lab.name, ctx.lab_dir, tuple(containers), tuple(networks), tuple(vms), tuple(vm_nets), ctx.servers,
                vm, dict(ctx.vm_remote), lab.limits.model_dump(mode="json"), lab.provision.model_dump(mode="json"),
                ctx.vm_pool, ctx.vm_prefix, tuple(engine_nets))


# ------------------------------------------------------------------------------ diff

Action = Literal["create", "start", "recreate", "remove"]


@dataclass(frozen=True)
class Change:
    """One thing ``up`` (or ``down``) would do."""

    action: Action
    kind: Literal["container", "network", "vm"]
    name: str
    student: str
    server: str
    why: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)



def diff(plan: Plan, hosts: Iterable[Mapping[str, Any]], networks: Iterable[Mapping[str, Any]]) -> list[Change]:
    """What ``up`` would change to reach ``plan``, given the hosts and networks that exist
    (rows of ``api.hosts``: name, role, state, image, server; networks: name, server)."""
    have = {h["name"]: h for h in hosts}
    # a network is one engine's (and, for rootless Podman, one user's): the same name may exist
    # in Docker and in Podman's store
    nets = {(n.get("engine") or DEFAULT, n.get("user") or "", n["name"]) for n in networks}
    out: list[Change] = []
    for n in plan.networks:
        if (DEFAULT, "", n.name) not in nets:
            out.append(Change("create", "network", n.name, n.student, n.server))
    docker_nets = {n.name for n in plan.networks}
    for en in plan.engine_networks:
        # an engine without networks of its own (LXC) joins the student's Docker network (role
        # lab_lxc plugs its veth into that bridge): that network is Docker's, made by role lab_network
        if not caps(en.engine).own_networks:
            if en.name not in docker_nets and (DEFAULT, "", en.name) not in nets:
                out.append(Change("create", "network", en.name, en.student, en.server, f"Docker's, for {en.engine}"))
        elif (en.engine, en.user, en.name) not in nets:
            out.append(Change("create", "network", en.name, en.student, en.server, _engine_label(en.engine, en.user)))
    for item in plan.hosts:
        h = have.get(item.name)
        kind: Literal["container", "vm"] = item.role
        if h is None:
            out.append(Change("create", kind, item.name, item.student, item.server))
        elif h.get("server", item.server) != item.server:
            out.append(Change("recreate", kind, item.name, item.student, item.server,
                              f"on {h.get('server')}, planned on {item.server}"))
        elif isinstance(item, ContainerItem) and h.get("image") and h["image"] != item.image:
            out.append(Change("recreate", kind, item.name, item.student, item.server,
                              f"image {h['image']} -> {item.image}"))
        elif h.get("state") != "running":
            out.append(Change("start", kind, item.name, item.student, item.server, f"is {h.get('state')}"))
    return sorted(out, key=_order)


def teardown(hosts: Iterable[Mapping[str, Any]], networks: Iterable[Mapping[str, Any]]) -> list[Change]:
    """What ``down`` would remove: everything of the lab that exists, by label or name."""
    out = [Change("remove", h["role"], h["name"], h.get("student", ""), h.get("server", ""), h.get("state", ""))
           for h in hosts]
    out += [Change("remove", "network", n["name"], n.get("student", ""), n.get("server", ""),
                   _engine_label(n.get("engine") or DEFAULT, n.get("user") or "")) for n in networks]
    return sorted(out, key=_order)


def _engine_label(engine: str, user: str) -> str:
    """Which engine's network a change is about (blank for Docker's, as before engines)."""
    return "" if caps(engine).primary else label(engine, user)


def _order(c: Change) -> tuple:
    return (c.server, c.student, {"network": 0, "container": 1, "vm": 2}[c.kind], c.name)


def registry_for(lab: Lab) -> str | None:
    return lab.registry or catalog.default_registry()
