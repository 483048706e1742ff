"""``labkit down``: remove exactly what carries the lab's labels, on every lab server."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.access import creds
from labkit.ansible.runner import EventHandler as OnEvent
from labkit.ansible.runner import RunResult, run_playbook
from labkit.api.checkpoint import forget as forget_checkpoints
from labkit.api.discover import engine_scopes, engines, hosts, lab_servers, network_names, vm_resources
from labkit.api.select import check_students, forget_lab, lab_lock
from labkit.engines import docker
from labkit.images import content as lab_images
from labkit.lab.spec import Lab
from labkit.log import Log, quiet
from labkit.observe import measure
from labkit.vm import vms


@dataclass
class DownResult:
    lab: str
    removed_containers: int
    removed_networks: int
    run: RunResult | None
    removed_vms: list[str] = field(default_factory=list)


def down(lab: Lab, *, students: list[str] | None = None, log: Log = quiet, on_event: OnEvent | None = None,
         verbosity: int = 0, show_output: bool = False, inventory: str | Path | None = None) -> DownResult:
    """Remove exactly what carries the lab's labels (one student's when asked), on every
    lab server of the lab; idempotent."""
    check_students(lab, students)
    servers, inv_path = lab_servers(lab.name, inventory)
    with lab_lock(lab.name, "down"), engines(lab.name, servers=servers) as svs:
        creds.revoke(lab.name, students)  # first: `labkit serve` closes their sessions at once
        if lab.vm.enabled and any(sv.local for sv in svs):
            vms.check_libvirt()  # down.yml removes the VM networks: say so now rather than as a failed task
        before = hosts(lab.name, servers=svs)
        nets_before = network_names(lab.name, svs)
        each: list[str | None] = list(students) if students else [None]
        proxied = [a for s in each for a in vms.proxied_addresses(lab.name, s)]
        owned = vm_resources(lab.name, svs, students)
        if students:
            run = None
            for s in students:
                run = run_playbook("down.yml", lab=lab.name, inventory=inv_path, on_event=on_event,
                                   extravars={**_down_vars(lab), "labkit_student": s,
                                              "labkit_down_vms": vm_resources(lab.name, svs, [s], owned)},
                                   verbosity=verbosity, show_output=show_output)
        else:
            run = run_playbook("down.yml", lab=lab.name, extravars={**_down_vars(lab), "labkit_down_vms": owned},
                               on_event=on_event, verbosity=verbosity, show_output=show_output, inventory=inv_path)
        for who in each:  # this machine's own records of the VMs (key copies, ssh configs)
            vms.remove_vm_folders(lab.name, who)
        vms.stop_proxies(proxied)
        after = hosts(lab.name, servers=svs)
        nets_after = network_names(lab.name, svs)
        still = {a.name for a in after}
        gone = [h.name for h in before if h.name not in still]
        removed_vms = [f"domain {h.name}" + ("" if h.local else f" (on {h.server})")
                       for h in before if h.role == "vm" and h.name not in still]
        measure.forget(lab.name, gone if students else None)
        forget_checkpoints(lab.name, students, svs)  # their images; the VMs' snapshots went with their disks
        if not students and any(sv.local for sv in svs) and docker.usable_here():
            lab_images.remove(lab.name)  # the content cache's lab images (labkit.images.content)
    if not students and not after:
        forget_lab(lab.name)
    containers_removed = len([h for h in before if h.role == "container"]) - len(
        [h for h in after if h.role == "container"])
    return DownResult(lab.name, containers_removed, len(nets_before) - len(nets_after), run, removed_vms)


def _down_vars(lab: Lab) -> dict[str, Any]:
    return {"labkit_lab": lab.name, "labkit_vm_required": lab.vm.enabled,
            "labkit_down_engines": engine_scopes(lab.name, lab), "labkit_down_docker": docker.usable_here()}
