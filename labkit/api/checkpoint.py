"""``labkit checkpoint save|restore|list|delete``: a student's hosts kept as they are now and
brought back later.

- A container is kept as an image of its engine on its lab server (``Engine.commit``: files,
  packages, users), labelled with the lab, student and checkpoint; a restore makes the
  container again from that image (``labkit.plan.checkpoints``: later ``up`` runs keep it), then
  runs the lab's content on the student's hosts, which starts the daemons again.
- A VM is kept as a libvirt internal snapshot of its disk and memory (``labkit.vm.snapshots``);
  a restore reverts it, running.

What a checkpoint holds is recorded in the lab's folder, ``checkpoints/<student>/<name>.json``.
``down`` removes the checkpoints with the hosts; ``reset`` leaves a container's checkpoints (a
VM's go with its disk).
"""
from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from labkit import names
from labkit.ansible.runner import EventHandler as OnEvent
from labkit.api.discover import engines, hosts, lab_servers
from labkit.api.select import check_students, lab_lock
from labkit.api.up import UpResult, up
from labkit.engines import registry
from labkit.engines.base import HostRow
from labkit.errors import EngineError, LabkitError, SpecError
from labkit.lab.spec import Lab
from labkit.log import Log, quiet
from labkit.plan import checkpoints as store
from labkit.plan.checkpoints import Checkpoint, Kept
from labkit.servers.base import Server
from labkit.vm import snapshots

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
REPO = "labkit-checkpoint"  # a container's checkpoint image: labkit-checkpoint/<container>:<name>
LABEL = "labkit.checkpoint"


def checkpoints(lab: Lab, students: Sequence[str] | None = None) -> list[Checkpoint]:
    """The lab's checkpoints (of ``students``), by student then time."""
    return store.records(lab.name, students or lab.students)


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise SpecError(f"checkpoint name {name!r}: use lowercase letters, digits, '.', '_' and '-' "
                        "(40 at most, starting with a letter or digit)", "for example: stage2")


def _students(lab: Lab, students: Sequence[str] | None, every: bool) -> list[str]:
    if every:
        return list(lab.students)
    if not students:
        raise SpecError("which students? give --student ID (repeat for more) or --all-students")
    check_students(lab, list(students))
    return list(dict.fromkeys(students))


def _labels(lab: str, student: str, name: str, host: str) -> dict[str, str]:
    return {"labkit.lab": lab, "labkit.student": student, LABEL: name, "labkit.host": host}


def save(lab: Lab, students: Sequence[str] | None, name: str, *, every: bool = False,
         log: Log = quiet) -> list[Checkpoint]:
    """Keep each student's running hosts as checkpoint ``name``. Everything is checked first
    (hosts running, engines able, the name free); a student whose save fails keeps nothing of it."""
    _check_name(name)
    who = _students(lab, students, every)
    servers, _ = lab_servers(lab.name)
    with lab_lock(lab.name, "checkpoint save"), engines(lab.name, servers=servers) as svs:
        rows = hosts(lab.name, who, svs)
        for s in who:
            if store.record_file(lab.name, s, name).is_file():
                raise SpecError(f"{s} has a checkpoint {name} already",
                                f"`labkit checkpoint delete --student {s} {name}` first, or choose another name")
            mine = [r for r in rows if r.student == s]
            if not mine:
                raise SpecError(f"{s} has no host in lab '{lab.name}': nothing to keep", "`labkit up` first")
            for r in mine:
                short = names.short(lab.name, s, r.name)
                if r.state != "running":
                    raise SpecError(f"{s}'s {short} is {r.state}: a checkpoint keeps running hosts",
                                    f"start it again with `labkit up --student {s}`")
                if r.role != "vm" and not registry.of(r).caps.checkpoints:
                    raise EngineError(f"{s}'s {short} is an {registry.of(r).name} container: checkpoints of "
                                      f"{registry.of(r).name} containers are not supported (Docker's and VMs' are)",
                                      "`labkit reset` gives such a host a clean start instead")
        by_server = {sv.name: sv for sv in svs}

        def one(s: str) -> Checkpoint:
            cp = Checkpoint(s, name, time.time())
            try:
                for r in (r for r in rows if r.student == s):
                    cp.kept.append(_keep(lab.name, s, name, r, by_server[r.server]))
                    log(f"{s}: {cp.kept[-1].short} kept")
            except LabkitError:
                _drop(cp, by_server, lab.name)
                raise
            store.write_record(lab.name, cp)
            return cp

        with ThreadPoolExecutor(max_workers=max(1, min(4, len(who)))) as pool:
            return list(pool.map(one, who))


def _keep(lab: str, student: str, name: str, r: HostRow, sv: Server) -> Kept:
    short = names.short(lab, student, r.name)
    if r.role == "vm":
        snapshots.save(sv, r.name, name)
        return Kept(short, r.name, "vm", sv.name, bytes=snapshots.sizes(sv, r.name).get(name, 0))
    ref = f"{REPO}/{r.name}:{name}"
    size = registry.of(r).commit(r, ref, _labels(lab, student, name, r.name))
    return Kept(short, r.name, "container", sv.name, r.engine or "docker", ref, size)


def _drop(cp: Checkpoint, by_server: dict[str, Server], lab: str) -> None:
    """Remove what a checkpoint made on the servers (its images, its VM snapshots)."""
    for k in cp.kept:
        sv = by_server.get(k.server)
        if sv is None:
            continue
        if k.kind == "vm":
            snapshots.delete(sv, k.name, cp.name)
        else:
            registry.get(k.engine).remove_images(sv, _labels(lab, cp.student, cp.name, k.name))


def _get(lab: Lab, student: str, name: str) -> Checkpoint:
    cp = store.load_record(lab.name, student, name)
    if cp is None:
        have = [c.name for c in checkpoints(lab, [student])]
        raise SpecError(f"{student} has no checkpoint {name}",
                        f"{student}'s checkpoints: {', '.join(have)}" if have else f"{student} has none: "
                        f"`labkit checkpoint save --student {student} NAME` makes one")
    return cp


def restore(lab: Lab, students: Sequence[str] | None, name: str, *, every: bool = False, log: Log = quiet,
            on_event: OnEvent | None = None, verbosity: int = 0, show_output: bool = False) -> UpResult:
    """Bring each student's hosts back to checkpoint ``name``: containers made again from its
    images, VMs reverted; then the lab's content runs on their hosts (daemons start again)."""
    who = _students(lab, students, every)
    cps = [_get(lab, s, name) for s in who]  # all there, before anything changes
    servers, _ = lab_servers(lab.name)
    with lab_lock(lab.name, "checkpoint restore"), engines(lab.name, servers=servers) as svs:
        by_server = {sv.name: sv for sv in svs}
        rows = {r.name: r for r in hosts(lab.name, who, svs)}
        for cp in cps:
            for k in cp.kept:
                if k.server not in by_server:
                    raise SpecError(f"{cp.student}'s checkpoint {name}: {k.short} was on lab server {k.server}, "
                                    "which is no longer the lab's")
                if k.kind == "vm" and name not in snapshots.names(by_server[k.server], k.name):
                    raise SpecError(f"{cp.student}'s checkpoint {name}: the VM has no such snapshot (it was made "
                                    "again since, by `labkit reset`)", "its containers can still be restored: "
                                    f"`labkit checkpoint delete --student {cp.student} {name}` and save a new one")

        def one(cp: Checkpoint) -> None:
            for k in cp.kept:
                sv = by_server[k.server]
                if k.kind == "vm":
                    log(f"{cp.student}: reverting the VM")
                    snapshots.restore(sv, k.name, name)
                    continue
                row = rows.get(k.name)
                if row is not None:  # made again below, from the checkpoint's image
                    p = sv.run(registry.of(row).remove_argv(row), timeout=300)
                    if p.returncode != 0:
                        raise EngineError(f"cannot remove {k.name} on {sv.name}: {(p.stderr or p.stdout).strip()[-300:]}")

        with ThreadPoolExecutor(max_workers=max(1, min(4, len(cps)))) as pool:
            list(pool.map(one, cps))
        store.set_restored(lab.name, {k.name: k.ref for cp in cps for k in cp.kept if k.kind == "container"})
    log(f"{', '.join(who)}: starting the hosts from checkpoint {name}")
    return up(lab, students=who, log=log, on_event=on_event, verbosity=verbosity, show_output=show_output,
              with_facts=False, only=[k.name for cp in cps for k in cp.kept])


def delete(lab: Lab, students: Sequence[str] | None, name: str, *, every: bool = False) -> list[Checkpoint]:
    """Remove checkpoint ``name`` of each student (its images, its VM snapshots, its record).
    One a container still runs from is kept: reset that host first."""
    who = _students(lab, students, every)
    cps = [_get(lab, s, name) for s in who]
    in_use = store.restored_images(lab.name)
    for cp in cps:
        used = [k.short for k in cp.kept if k.ref and in_use.get(k.name) == k.ref]
        if used:
            raise SpecError(f"{cp.student}'s {', '.join(used)} run from checkpoint {name}: it cannot go",
                            f"`labkit reset --student {cp.student} {' '.join(used)}` first (a clean start), "
                            "or keep the checkpoint")
    servers, _ = lab_servers(lab.name)
    with lab_lock(lab.name, "checkpoint delete"), engines(lab.name, servers=servers) as svs:
        by_server = {sv.name: sv for sv in svs}
        for cp in cps:
            _drop(cp, by_server, lab.name)
            store.record_file(lab.name, cp.student, name).unlink(missing_ok=True)
    return cps


def forget(lab: str, students: Sequence[str] | None, servers: Sequence[Server]) -> None:
    """``down``: the checkpoints of the lab (of ``students``) go with its hosts: their images on
    every server, their records. The VMs' snapshots went with the VMs' disks."""
    for sv in servers:
        for eng in registry.all_engines():
            if not eng.caps.checkpoints:
                continue
            for s in students or [""]:
                eng.remove_images(sv, {"labkit.lab": lab, LABEL: "", **({"labkit.student": s} if s else {})})
    folder = store.folder(lab)
    for p in ([folder / s for s in students] if students else [folder]):
        shutil.rmtree(p, ignore_errors=True)
    if students is None:
        store.drop_restored(lab)
    else:
        store.drop_restored(lab, [c for c in store.restored_images(lab) if any(names.owned_by(c, lab, s) for s in students)])
