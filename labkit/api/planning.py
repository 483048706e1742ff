"""The plan of a lab (labkit.plan.model, pure) made from what its servers have: ``up --plan``,
``down --plan``, and the plan's parts for Python callers."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit import names
from labkit.api.discover import engines, hosts, lab_servers, network_rows
from labkit.api.select import check_students
from labkit.engines.capabilities import caps
from labkit.images import build as images
from labkit.lab import catalog
from labkit.lab.spec import Lab
from labkit.paths import lab_dir
from labkit.plan.checkpoints import restored_images
from labkit.plan.model import Change, Context, ServerRef, diff, make_plan, simple_context, teardown
from labkit.servers import base as srv
from labkit.servers.base import Server
from labkit.vm import vmnet


def baked_distros(lab: Lab) -> list[str]:
    """The distros of the lab's containers whose engine bakes the lab's packages into an image."""
    return [c.distro for c in lab.containers if caps(c.engine).baked_images]


def systemd_distros(lab: Lab) -> list[str]:
    """The distros of the lab's containers that boot systemd (init: systemd)."""
    return list(dict.fromkeys(c.distro for c in lab.containers if c.pid1 == "systemd"))


def _one_server_ctx(lab: Lab, assignment: dict[str, str] | None) -> Context:
    return simple_context(lab, str(lab_dir(lab.name)), assignment)


def container_plan(lab: Lab, students: list[str] | None = None,
                   assignment: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The plan's containers as dicts (labkit.plan.model owns them)."""
    return [_item(c) for c in make_plan(lab, _one_server_ctx(lab, assignment), students).containers]


def network_name(lab: str, student: str) -> str:
    return names.network(lab, student)


def network_plan(lab: Lab, students: list[str] | None = None,
                 assignment: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [asdict(n) for n in make_plan(lab, _one_server_ctx(lab, assignment), students).networks]


def _item(x: Any) -> dict[str, Any]:
    d = asdict(x)
    d.pop("role", None)
    return d


def vm_plan(lab: Lab, students: list[str] | None = None, assignment: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The plan's VMs as dicts: name, student, server."""
    return [{"name": v.name, "student": v.student, "server": v.server}
            for v in make_plan(lab, _one_server_ctx(lab, assignment), students).vms]


def context(lab: Lab, servers: list[Server], *, save: bool = False, vm_local: dict[str, Any] | None = None,
            vm_remote: dict[str, Any] | None = None) -> Context:
    """What planning needs, read (not changed: ``save`` keeps a new assignment for later runs)."""
    refs = tuple(ServerRef(sv.name, sv.local, sv.docker_host) for sv in servers)
    assignment = None
    if not (len(servers) == 1 and servers[0].local):
        path = lab_dir(lab.name) / "assignment.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        assignment = srv.assign(lab.students, servers, previous)
        if save:
            path.write_text(json.dumps(assignment, indent=2))
    registry = lab.registry or catalog.default_registry()
    # the images with the lab's packages baked in, for Docker's containers here (when baked)
    baked = images.baked(baked_distros(lab), lab.provision.packages,
                         registry) if any(sv.local for sv in servers) and lab.provision.packages else {}
    systemd = images.baked(systemd_distros(lab), lab.provision.packages, registry,
                           variant="systemd") if any(sv.local for sv in servers) and systemd_distros(lab) else {}
    return Context(refs, str(lab_dir(lab.name)), assignment, registry, vm_local or {}, vm_remote or {},
                   vmnet.pool(), vmnet.PREFIX, baked, systemd, restored_images(lab.name))


@dataclass
class PlanReport:
    lab: str
    verb: str
    servers: list[str]
    changes: list[Change]

    def as_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "verb": self.verb, "servers": self.servers,
                "changes": [c.as_dict() for c in self.changes]}


def plan(lab: Lab, verb: str = "up", *, students: list[str] | None = None,
         inventory: str | Path | None = None) -> PlanReport:
    """What ``labkit up`` (or ``down``) would create, start, recreate or remove, per server and
    student; changes nothing (like ``terraform plan``)."""
    check_students(lab, students)
    servers, _ = lab_servers(lab.name, inventory)
    with engines(lab.name, servers=servers) as svs:
        found = hosts(lab.name, students, servers=svs)
        nets = network_rows(lab.name, svs, students)
        if verb == "down":
            changes = teardown(found, nets)
        else:
            changes = diff(make_plan(lab, context(lab, svs), students), found, nets)
    return PlanReport(lab.name, verb, [sv.name for sv in servers], changes)
