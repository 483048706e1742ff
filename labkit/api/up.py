"""``labkit up``: images and box, the plan, then ``playbooks/up.yml`` through ansible-runner;
measurements and the lab's own content after."""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from labkit import names
from labkit.access import creds
from labkit.ansible import runner
from labkit.ansible.runner import EventHandler as OnEvent
from labkit.ansible.runner import RunResult, run_playbook
from labkit.api.converge import ConvergeResult, converge_on, has_content
from labkit.api.discover import (
    engine_scopes,
    engines,
    engines_on,
    hosts,
    inventory_file,
    lab_servers,
    record_scopes,
)
from labkit.api.planning import baked_distros, context, systemd_distros
from labkit.api.query import facts
from labkit.api.select import check_students, lab_lock, save_lab
from labkit.engines import docker, registry
from labkit.engines.base import Engine, HostRow
from labkit.engines.capabilities import caps
from labkit.errors import BoxError, LabkitError, PlaybookFailed, SpecError
from labkit.images import build as images
from labkit.images import content as lab_images
from labkit.lab import catalog
from labkit.lab.spec import Lab
from labkit.log import Log, quiet
from labkit.observe import measure
from labkit.observe.facts import HostFacts
from labkit.paths import SESSION_URI, lab_dir, vagrant_home
from labkit.plan import contentcache, uptodate
from labkit.plan.model import Plan, make_plan, split_extravars
from labkit.servers.base import Server
from labkit.vm import boxes, session, virt, vms


@dataclass
class UpResult:
    lab: Lab
    run: RunResult | None  # None: nothing changed since the last full run (up_to_date), no playbook
    images: list
    facts: list[HostFacts] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    converge: ConvergeResult | None = None  # the lab file's own playbooks and roles, when it has some
    up_to_date: float | None = None  # epoch seconds of the full run nothing changed since


def package_warnings(host_facts: dict[str, dict]) -> list[str]:
    """Per host, the lab's packages it could not get (a host without a package manager:
    BusyBox), and those BusyBox has as its own applets."""
    out = []
    for host in sorted(host_facts):
        f = host_facts[host]
        missing, applets = f.get("labkit_packages_unavailable") or [], f.get("labkit_packages_applets") or []
        if missing:
            out.append(f"{host}: not installed: {', '.join(missing)} (no package manager on this host"
                       + (f"; {', '.join(applets)}: BusyBox's own applet" if applets else "") + ")")
    return out


def up(lab: Lab, *, students: list[str] | None = None, build: bool = False, log: Log = quiet,
       on_event: OnEvent | None = None, verbosity: int = 0, show_output: bool = False, with_facts: bool = True,
       inventory: str | Path | None = None, full: bool = False, only: Sequence[str] | None = None,
       content_cache: bool = True) -> UpResult:
    """Bring the lab up (idempotent): images, then ``playbooks/up.yml`` through ansible-runner.

    With ``inventory``, the lab's students are spread over its ``lab_servers`` (each server
    prepared with ``labkit prepare``); later commands on the lab remember the inventory.
    When nothing changed since the last full run (``labkit.plan.uptodate``), the playbook is skipped
    (``run`` is None, ``up_to_date`` the time of that run); ``full`` runs it anyway.
    ``only`` (``reset``, ``checkpoint restore``: hosts by full name): these hosts alone are made,
    provisioned and given the lab's content (with their students' networks and rules).
    ``content_cache`` (``--no-content-cache`` turns it off): the lab's content converged once per
    distro and committed as a lab image the other students' new containers start from
    (``labkit.plan.contentcache``); the content then runs on every host as its idempotence pass.
    """
    check_students(lab, students)
    t0 = time.monotonic()
    servers, inv_path = lab_servers(lab.name, inventory)
    with lab_lock(lab.name, "up"), engines(lab.name, servers=servers) as svs:
        if inv_path:
            inventory_file(lab.name).write_text(inv_path)
        imgs = []
        uses_docker = docker.needed(lab.containers)  # an ordinary account's rootless Podman lab: no Docker
        if any(sv.local for sv in svs) and uses_docker:
            docker.client()
            image_registry = lab.registry or catalog.default_registry()
            imgs = images.ensure([c.distro for c in lab.containers], image_registry, build_missing=build, log=log)
            # the lab's packages baked into an image per distro once, not installed in every container
            images.bake(baked_distros(lab), lab.provision.packages, image_registry, log=log)
            if systemd_distros(lab):  # init: systemd: the distro's image with systemd as PID 1
                images.systemd_images(systemd_distros(lab), lab.provision.packages, image_registry, log=log)
        _check_remote_images(lab, svs)
        # gather what is read-only, then plan (no I/O), then apply (the playbook)
        draft = make_plan(lab, context(lab, svs, save=True), students)
        local = {sv.name for sv in svs if sv.local}
        vm_local = vm_settings_here(lab, log, build) if any(v.server in local for v in draft.vms) else None
        vm_remote = vm_settings_remote(lab, svs, [{"server": v.server} for v in draft.vms], log)
        ctx = context(lab, svs, vm_local=vm_local, vm_remote=vm_remote)
        plan = make_plan(lab, ctx, students)
        try:
            content_key: str | None = contentcache.digest(lab) if has_content(lab) else ""
        except contentcache.TooLarge as e:
            log(f"content: not checksummed ({e}): it runs at every up")
            content_key = None
        choice = _cache_choice(lab, plan, svs, content_key, content_cache and only is None and uses_docker, log)
        if choice.images:
            plan = make_plan(lab, replace(ctx, content=choice.images), students)
        if only is not None:  # these hosts alone (the students' networks and rules are ensured all the same)
            plan = replace(plan, containers=tuple(c for c in plan.containers if c.name in only),
                           vms=tuple(v for v in plan.vms if v.name in only))
        far = [c.name for c in plan.containers if c.init == "systemd" and c.server not in local]
        if far:
            raise SpecError(f"init: systemd on a remote lab server is not supported ({', '.join(far[:3])}): its "
                            "image is made on this machine", "use init: tini there, or run the lab on this machine")
        for eng in registry.all_engines():  # what each engine's planned containers lack, before anything is made
            eng.preflight(lab.name, plan.containers, svs)
        save_lab(lab)
        # the students' door credentials (new ones only; the handout shows them once)
        creds.ensure(lab.name, students or lab.students, lab.access.ssh_keys)
        record_scopes(lab)  # before anything is made: `down` then finds it from any state
        extravars = _playbook_vars(lab, plan, svs)
        vms = [{"name": v.name, "server": v.server} for v in plan.vms]
        vm_settings = dict(plan.vm)
        stamped = not uptodate.eligible(plan, svs, students, content_key, only)  # a full run writes a stamp
        stamped = stamped and uses_docker  # the stamp reads Docker: a lab without it runs the playbook
        key = uptodate.asked(lab, extravars, docker.client(), content_key or "") if stamped else ""
        if full:  # --full: facts are gathered again too
            runner.drop_facts(lab.name)
        if stamped and not full:
            since = uptodate.unchanged(lab.name, key, docker.client(), bool(vms))
            if since is not None:
                res = UpResult(lab, None, imgs, seconds=time.monotonic() - t0, up_to_date=since)
                if with_facts:
                    res.facts = facts(lab)
                return res
        uptodate.drop(lab.name)  # only a run that ends well writes one
        if choice.builders:  # the content cache: one host per distro converged and committed first
            _build_lab_images(lab, plan, svs, choice, content_key or "", log, on_event, verbosity, show_output)
            if stamped:  # the stamp names the ids of the images the containers run: the new lab images' now
                key = uptodate.asked(lab, extravars, docker.client(), content_key or "")
        boots = measure.VmBoots(on_event)  # which VMs boot, and how many at once (K8's context)
        where = _vm_where(vms, vm_settings, vm_remote, svs)
        try:
            cmdline_vars = _first_play_file(lab, extravars)
            # no VM planned: the VM task is skipped by its tag, not by a `when` per container
            run = run_playbook("up.yml", lab=lab.name, extravars=cmdline_vars, on_event=boots,
                               verbosity=verbosity, show_output=show_output, inventory=inv_path,
                               skip_tags=None if vms else "labkit_vm")
        except PlaybookFailed as e:  # keep the boot times of the VMs that did boot (K8)
            booted = [v["name"] for v in vms if "labkit_vm_boot_seconds" in e.host_facts.get(v["name"], {})]
            measure.save(lab.name, [_measure_vm(lab, n, e.host_facts, boots, where) for n in booted])
            _diagnose(e, svs, with_vms=bool(vms), with_docker=uses_docker)
            raise
        rows = measure_containers(lab.name, [c.name for c in plan.containers], svs, log)
        measure.save(lab.name, rows + [_measure_vm(lab, v["name"], run.host_facts, boots, where) for v in vms])
        # a host remade or changed by labkit's own run gathers its facts again (the fact cache)
        runner.drop_facts(lab.name, run.changed_hosts())
        # the lesson's own content / the user's roles, after labkit's own (never on a lab server)
        conv = converge_on(lab, svs, students=students, prepare=True, on_event=on_event, verbosity=verbosity,
                           show_output=show_output, only=only) if has_content(lab) else None
        if stamped:  # after the content too: a failed content run leaves no stamp
            uptodate.save(lab.name, key, docker.client(), bool(vms))
        if conv is not None and only is None and uses_docker and any(sv.local for sv in svs):
            # lab images of older content no container uses any more (Docker keeps those in use)
            lab_images.remove(lab.name, keep=[*choice.images.values(), *choice.builders.values()])
    res = UpResult(lab, run, imgs, seconds=time.monotonic() - t0, warnings=package_warnings(run.host_facts),
                   converge=conv)
    if with_facts:
        res.facts = facts(lab)
    return res


def vm_settings_remote(lab: Lab, servers: list, plan: list[dict], log: Log) -> dict:
    """For each remote server that gets VMs: what `labkit prepare` recorded there (its
    folders, KVM or emulation) and the ProxyCommand through it to its VMs."""
    out = {}
    for sv in servers:
        if sv.local or not any(v["server"] == sv.name for v in plan):
            continue
        info = sv.vm_settings()
        if info.get("box") != lab.vm.box:
            raise BoxError(f"lab server {sv.name} has the box {info.get('box')}, lab '{lab.name}' boots {lab.vm.box}",
                           "make a bundle with the lab's box (`labkit bundle create -f LAB DIR`) and run "
                           "`labkit prepare -i INVENTORY --bundle DIR`")
        if info.get("box_recipe") != boxes.recipe_hash():
            log(f"VM on {sv.name}: its box was built from another recipe than this machine's; "
                "`labkit prepare` with a fresh bundle brings it level")
        accel = info.get("accel", "qemu") if lab.vm.accel in (None, "auto") else lab.vm.accel
        log(f"VM on {sv.name}: {'KVM' if accel == 'kvm' else 'QEMU emulation (TCG)'}: "
            f"{info.get('accel_reason', 'recorded by labkit prepare')}")
        out[sv.name] = {
            "accel": accel, "emulator_path": info.get("emulator_path", "") if accel == "qemu" else "",
            "boot_timeout": 600 if accel == "qemu" else 300, "vagrant_home": info["vagrant_home"],
            "workdir_base": f"{info['home']}/labs/{lab.name}", "proxy_command": sv.proxy_command(),
        }
    return out


def vm_settings_here(lab: Lab, log: Log, build: bool) -> dict:
    """Box present (or built), KVM or emulation decided and said: the lab_vm role's settings
    for VMs on this machine."""
    vms.check_libvirt()
    user_network = vms.uri() == SESSION_URI  # an ordinary account: its session instance (labkit.vm.session)
    if user_network:
        session.box_volume(lab.vm.box)  # the shared box, linked and overlaid: nothing to build or copy
    if not boxes.box_present(lab.vm.box):
        if lab.vm.box != boxes.DEFAULT_BOX:  # --build would make labkit's own box under a foreign name
            raise BoxError(f"the Vagrant box {lab.vm.box} is not on this machine, and labkit builds only "
                           f"{boxes.DEFAULT_BOX}",
                           f"add it to labkit's Vagrant home (`VAGRANT_HOME={vagrant_home()} vagrant box add "
                           f"--name {lab.vm.box} FILE.box`), or use vm.box: {boxes.DEFAULT_BOX}")
        if not build:
            raise BoxError(f"the Vagrant box {lab.vm.box} is not on this machine",
                           "build it offline with `labkit box build` (about a minute), or run `labkit up --build`")
        boxes.build_box(lab.vm.box, log=log)
    accel = virt.detect_accel(lab.vm.accel)
    log(f"VM: {'KVM' if accel.mode == 'kvm' else 'QEMU emulation (TCG)'}: {accel.reason}")
    return {
        "box": lab.vm.box, "memory": lab.vm.memory, "cpus": lab.vm.cpus, "accel": accel.mode,
        "emulator_path": str(virt.tcg_emulator_wrapper(session=user_network)) if accel.emulated else "",
        "boot_timeout": 600 if accel.emulated else 300, "libvirt_uri": vms.uri(), "user_network": user_network,
    }


def measure_containers(lab: str, planned: list[str], servers: list[Server], log: Log) -> list[dict[str, Any]]:
    """Create-to-ready, memory and disk of the planned containers, each engine measuring its own
    (in parallel where it can; unchanged containers keep their earlier row). A container that
    cannot be measured is said, never fatal."""
    wanted = set(planned)
    previous = measure.load(lab)
    scopes = engine_scopes(lab)
    out: list[dict[str, Any]] = []
    rows_of: dict[Engine, list[HostRow]] = {}  # each engine's planned containers, on every server
    for sv in servers:
        for eng, users in engines_on(sv, scopes):
            rows_of.setdefault(eng, []).extend(h for h in eng.hosts(lab, None, sv, users) if h.name in wanted)
    for eng, rows in rows_of.items():
        out += eng.measure(rows, previous, log)
    found = {r.name for rows in rows_of.values() for r in rows}
    for name in planned:
        if name not in found:
            log(f"{name}: not measured (not found)")
    return out


def _diagnose(e: PlaybookFailed, servers: list, with_vms: bool, with_docker: bool = True) -> None:
    """After a failed run: say which engine (or libvirtd) stopped answering, if one did, and
    that the next `labkit up` resumes from where this one stopped."""
    dead, hints = [], []
    for sv in servers if with_docker else ():
        try:
            docker.reconnect(sv.docker_host)
        except LabkitError as x:
            dead.append(x.message)
            hints.append(x.hint or docker.START_HINT)
    if with_vms and (why := vms.libvirt_answers()):
        dead.append(f"libvirtd is not answering at {vms.uri()} ({why})")
        hints.append(vms.libvirt_hint())
    if dead:
        e.message = "; ".join(dead) + "\n" + e.message
    hints.append("once the cause is fixed, `labkit up` again resumes where this run stopped")
    e.hint = "; ".join(h for h in dict.fromkeys([*hints, e.hint]) if h)


def _check_remote_images(lab: Lab, servers: list) -> None:
    """A remote server must have the lab's images (from a bundle): say which are missing where."""
    registry = lab.registry or catalog.default_registry()
    for sv in servers:
        if sv.local:
            continue
        c = docker.client_for(sv.docker_host)
        missing = []
        for ct in lab.containers:
            ref = ct.spec.image_ref(registry)
            try:
                c.images.get(ref)
            except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound and friends
                missing.append(ref)
        if missing:
            raise images.ImageError(f"lab server {sv.name} lacks image(s): {', '.join(missing)}",
                                    "carry them over offline: `labkit bundle create DIR` then "
                                    "`labkit prepare -i INVENTORY --bundle DIR`")


def _vm_where(vms: list[dict], vm_settings: dict, vm_remote: dict, servers: list) -> dict[str, dict]:
    """Per VM: the accelerator it boots with and its lab server (whose cores a boot time depends on)."""
    by_name = {sv.name: sv for sv in servers}
    local = next((sv for sv in servers if sv.local), None)
    return {v["name"]: {"accel": (vm_remote.get(v["server"]) or vm_settings).get("accel"),
                        "server": by_name.get(v["server"], local)} for v in vms}


def _measure_vm(lab: Lab, domain: str, host_facts: dict, boots: measure.VmBoots | None = None,
                where: dict[str, dict] | None = None) -> dict:
    mine = host_facts.get(domain) or {}
    secs = mine.get("labkit_vm_boot_seconds")
    at = (where or {}).get(domain) or {}
    if secs is None:  # not booted by this run: keep the time of the boot that made it, and how it booted
        old = measure.load(lab.name).get(domain) or {}
        secs = old.get("ready_seconds")
        boot = {k: old.get(k) for k in measure.BOOT_KEYS}
    else:
        boot = {"accel": mine.get("labkit_accel") or at.get("accel"),
                "boots_at_once": boots.at_once(domain) if boots else None,
                "server_cores": measure.server_cores(at["server"]) if at.get("server") else None,
                # guests counted on this machine: a remote server's VMs are not seen from here
                "server_vms": boots.guests_at_end.get(domain) if boots and getattr(at.get("server"), "local", False)
                else None,
                "vm_cpus": lab.vm.cpus}
    return measure.vm(domain, float(secs) if secs is not None else None, boxes.box_size(lab.vm.box), boot)


def _cache_choice(lab: Lab, plan: Plan, svs: list[Server], content_key: str | None, on: bool,
                  log: Log) -> contentcache.Choice:
    """The content cache's images for this run (labkit.plan.contentcache): on Docker on this
    machine, when every student gets the same content; said when it does not apply."""
    if not content_key or not lab.provision.playbooks and not lab.provision.roles:
        return contentcache.Choice()
    local = {sv.name for sv in svs if sv.local}
    cached = [c for c in plan.containers if c.server in local and caps(c.engine).baked_images]
    groups = {"vm", *(names.host_slug(catalog.get(c.distro).slug, c.engine, c.user).replace("-", "_")
                      for c in plan.containers)}
    why = contentcache.why_not(lab, groups, off=not on)
    if why or not cached:
        if why and why != "--no-content-cache" and len(lab.students) > 1:
            log(f"content cache: off ({why})")
        return contentcache.Choice()
    code = uptodate.code_digest()
    wanted: dict[str, str] = {}
    base_ids: dict[str, str | None] = {}
    for c in cached:
        if c.image in wanted:
            continue
        base_ids[c.image] = lab_images.image_id(c.image)
        per = hashlib.sha256(f"{content_key}\0{code}\0{c.image}\0{base_ids[c.image]}\0{c.init}".encode()).hexdigest()
        wanted[c.image] = contentcache.image_ref(lab.name, catalog.get(c.distro).slug, per)
    existing = {h.name: h.image for h in hosts(lab.name, None, servers=svs) if h.role == "container" and h.image}
    have = lab_images.lab_images(lab.name)
    known = {**dict.fromkeys(wanted.values()), **have}
    for ref in existing.values():  # a container's lab image gone (removed by hand): remade
        if ref.startswith(f"{contentcache.REPO}:") and ref not in known:
            known[ref] = None
    return contentcache.images_for(cached, existing, known, wanted, base_ids)


def _playbook_vars(lab: Lab, plan: Plan, svs: list[Server]) -> dict[str, Any]:
    """up.yml's variables for ``plan``: the plan's, and each engine's for its containers."""
    extravars = plan.extravars()
    for eng in registry.all_engines():
        extravars.update(eng.playbook_vars(lab.name, plan.containers, svs))
    return extravars


def _first_play_file(lab: Lab, extravars: dict[str, Any]) -> dict[str, Any]:
    """The plan's lists go to the first play only, through a file (plan.FIRST_PLAY_ONLY): written
    here; the variables left for the command line returned."""
    plan_file = lab_dir(lab.name) / "runner" / "plan.json"
    cmdline_vars, first_play = split_extravars(extravars, str(plan_file))
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(first_play))
    return cmdline_vars


def _build_lab_images(lab: Lab, plan: Plan, svs: list[Server], choice: contentcache.Choice, content_key: str,
                      log: Log, on_event: OnEvent | None, verbosity: int, show_output: bool) -> None:
    """Make the builders (one host per distro, from the base image), converge the lab's content
    on them, and commit each as its lab image: the other new containers start from it."""
    t0 = time.monotonic()
    bplan = replace(plan, containers=tuple(c for c in plan.containers if c.name in choice.builders), vms=())
    cmdline_vars = _first_play_file(lab, _playbook_vars(lab, bplan, svs))
    run_playbook("up.yml", lab=lab.name, extravars=cmdline_vars, on_event=on_event, verbosity=verbosity,
                 show_output=show_output, skip_tags="labkit_vm")
    runner.drop_facts(lab.name, list(choice.builders))  # new containers: no facts of an earlier one
    converge_on(lab, svs, prepare=True, on_event=on_event, verbosity=verbosity, show_output=show_output,
                only=list(choice.builders))
    for c in bplan.containers:
        ref = choice.builders[c.name]
        base = lab_images.image_id(c.image) or ""
        lab_images.commit(c.name, ref, lab.name, content_key, base, c.distro)
        log(f"content cache: {ref} made from {c.name} ({c.image})")
    log(f"content cache: {len(choice.builders)} lab image(s) in {time.monotonic() - t0:.0f}s")
