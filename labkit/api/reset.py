"""``labkit reset``: one student's hosts (all, or those named) made again from their image or
box and provisioned again, the lab's content included; every other host is left as it is
(same container, same VM).

A container is removed by its engine on its lab server; a VM goes the way ``down`` removes
it (``playbooks/down.yml``, its VMs only), checkpoints with it. Then ``up`` for that student
makes what is missing and runs the lab's content on the student's hosts.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from labkit import names
from labkit.ansible.runner import EventHandler as OnEvent
from labkit.ansible.runner import run_playbook
from labkit.api.discover import engine_scopes, engines, hosts, lab_servers, vm_resources
from labkit.api.planning import context
from labkit.api.select import check_students, lab_lock
from labkit.api.up import UpResult, up
from labkit.engines import registry
from labkit.engines.base import HostRow
from labkit.errors import EngineError, SpecError
from labkit.lab.spec import Lab
from labkit.log import Log, quiet
from labkit.observe import measure
from labkit.plan.checkpoints import drop_restored
from labkit.plan.model import make_plan
from labkit.servers.base import Server
from labkit.vm import vms


@dataclass
class Target:
    """One host a reset makes again: its short name, full name, kind, and what exists of it now."""

    short: str
    name: str
    kind: str  # container, vm
    row: HostRow | None  # None: not there (a reset makes it)

    def loses(self) -> str:
        """What the student loses, said before the reset acts."""
        if self.row is None:
            return f"{self.short}: not there now; made from scratch"
        if self.kind == "vm":
            return (f"{self.short}: VM {self.name} ({self.row.state}) is destroyed with its disk: every file, "
                    "package, user and running program on it, and its checkpoints")
        return (f"{self.short}: {self.row.engine or 'docker'} container {self.name} ({self.row.state}) is removed: "
                "every file, package, user and running program on it (its checkpoints stay)")


@dataclass
class ResetResult:
    student: str
    targets: list[Target]
    up: UpResult
    before: dict[str, str] = field(default_factory=dict)  # full name -> what it was (id or state)


def targets(lab: Lab, student: str, short_names: Sequence[str] | None = None,
            servers: list[Server] | None = None) -> list[Target]:
    """The student's hosts a reset would make again (all, or ``short_names``: debian12, vm)."""
    check_students(lab, [student])
    planned = [h for h in make_plan(lab, context(lab, servers or lab_servers(lab.name)[0]), [student]).hosts]
    by_short = {names.short(lab.name, student, h.name): h for h in planned}
    wanted = list(dict.fromkeys(short_names or by_short))
    unknown = [s for s in wanted if s not in by_short]
    if unknown:
        raise SpecError(f"reset --student {student}: no host {', '.join(unknown)} in lab '{lab.name}'",
                        f"{student}'s hosts: {', '.join(by_short)}")
    rows = {r.name: r for r in hosts(lab.name, [student], servers)} if servers is not None else {}
    return [Target(s, by_short[s].name, by_short[s].role, rows.get(by_short[s].name)) for s in wanted]


def preview(lab: Lab, student: str, short_names: Sequence[str] | None = None) -> list[str]:
    """What a reset would lose, one line per host (said before it acts)."""
    servers, _ = lab_servers(lab.name)
    with engines(lab.name, servers=servers) as svs:
        return [t.loses() for t in targets(lab, student, short_names, svs)]


def reset(lab: Lab, student: str, short_names: Sequence[str] | None = None, *, log: Log = quiet,
          on_event: OnEvent | None = None, verbosity: int = 0, show_output: bool = False) -> ResetResult:
    """Remove the student's hosts named (default: all of theirs) and bring them up again from
    their image or box, the lab's content included; nobody else's host is touched."""
    servers, inv_path = lab_servers(lab.name)
    with lab_lock(lab.name, "reset"), engines(lab.name, servers=servers) as svs:
        picked = targets(lab, student, short_names, svs)
        before = {t.name: (t.row.id or t.row.state) if t.row else "" for t in picked}
        by_server = {sv.name: sv for sv in svs}
        gone = [t for t in picked if t.row is not None and t.kind == "container"]

        def remove(t: Target) -> None:
            assert t.row is not None
            sv = by_server[t.row.server]
            eng = registry.of(t.row)
            p = sv.run(eng.remove_argv(t.row), timeout=300)
            if p.returncode != 0 and t.name in {r.name for r in eng.hosts(lab.name, [student], sv, [t.row.user])}:
                raise EngineError(f"cannot remove {t.name} on {sv.name}: {(p.stderr or p.stdout).strip()[-300:]}")

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(gone)))) as pool:
            list(pool.map(remove, gone))
        if any(t.kind == "vm" and t.row is not None for t in picked):
            log(f"{student}: destroying the VM")
            proxied = vms.proxied_addresses(lab.name, student)
            run_playbook("down.yml", lab=lab.name, inventory=inv_path, on_event=on_event, verbosity=verbosity,
                         show_output=show_output,
                         extravars={"labkit_lab": lab.name, "labkit_student": student, "labkit_vm_required": True,
                                    "labkit_down_engines": engine_scopes(lab.name, lab),
                                    "labkit_down_vms": vm_resources(lab.name, svs, [student]),
                                    "labkit_down_vms_only": True})
            vms.remove_vm_folders(lab.name, student)
            vms.stop_proxies(proxied)
        drop_restored(lab.name, [t.name for t in picked])  # a clean start: the distro's image again
        measure.forget(lab.name, [t.name for t in picked])
    log(f"{student}: making {', '.join(t.short for t in picked)} again")
    res = up(lab, students=[student], log=log, on_event=on_event, verbosity=verbosity, show_output=show_output,
             with_facts=False, only=[t.name for t in picked])
    return ResetResult(student, picked, res, before)

