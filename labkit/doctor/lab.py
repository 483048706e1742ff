"""What one lab needs of this machine: its images, its box, memory and CPU for its hosts, disk.
`labkit doctor -f lab.yml` fails exactly when `labkit up` would."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from labkit import paths
from labkit.doctor.check import Check, run_quiet
from labkit.doctor.sizing import (
    BOOT_SECONDS,
    BOX_BUILD_BYTES,
    BOX_BYTES,
    CONTAINER_BYTES,
    IMAGE_BYTES,
    VM_DISK_BYTES,
    MiB,
    Sizing,
    _mib,
    best_probe,
    cpu_check,
    disk_check,
    measured,
    mem_available,
    memory_check,
    parse_bytes,
    probe_registry,
    qemu_overhead,
    registry_bases,
    registry_mirrors,
    split_image_ref,
    support_bytes,
)
from labkit.engines import docker, shared_images
from labkit.errors import LabkitError
from labkit.images import build as images
from labkit.lab import catalog
from labkit.lab.catalog import Distro
from labkit.lab.spec import Lab
from labkit.paths import SESSION_URI, libvirt_uri, state_dir
from labkit.plan.checkpoints import records as checkpoint_records
from labkit.plan.model import make_plan, simple_context
from labkit.vm import boxes, session, vms
from labkit.vm.virt import detect_accel
from labkit.vm.vms import vm_name


def _virsh_names(*args: str) -> set[str] | None:
    r = run_quiet(["virsh", "-q", "-c", libvirt_uri(), "list", "--name", *args], timeout=20)
    if r is None or r.returncode != 0:
        return None
    return {ln.strip() for ln in r.stdout.splitlines() if ln.strip()}


def _pool_path() -> Path:
    r = run_quiet(["virsh", "-q", "-c", libvirt_uri(), "pool-dumpxml", "default"], timeout=20)
    found = vms.pool_folder(r.stdout) if r is not None and r.returncode == 0 else None
    if found is not None:
        return found
    return session.pool_dir() if libvirt_uri() == SESSION_URI else Path("/var/lib/libvirt/images")


def _fs(path: Path) -> tuple[int, Path]:
    """(device, the nearest existing folder) of a path that may not exist yet."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p.stat().st_dev, p


def check_image(d: Distro, registry: str | None, build: bool, mirrors: list[str]) -> tuple[Check, int]:
    """One distro's image: present, buildable here or pullable. Returns the check and the
    bytes its image will take on the engine's disk (0 when present)."""
    name = f"image {d.ref}"
    st = images.status(d, registry)
    if st in ("built", "present"):
        return Check(name, "ok", f"{d.image_ref(registry)} is here"), 0
    if st == "stale":
        return Check(name, "warn", f"{d.image} is here, built from an older recipe (`labkit up` uses it)",
                     f"`labkit images build --force {d.ref}`"), 0
    size = IMAGE_BYTES.get(d.family if d.source == "local" else "registry", IMAGE_BYTES["registry"])
    if d.source == "local":
        tool = "busybox-static" if d.family == "busybox" else "mmdebstrap"
        have = images.BUSYBOX_BIN.exists() if d.family == "busybox" else shutil.which("mmdebstrap") is not None
        if not have:
            return Check(name, "fail", f"{d.image} is missing and {tool} is not installed to build it",
                         f"`apt-get install {tool}` then `labkit images build {d.ref}`"), size
        fix = f"`labkit images build {d.ref}` (under a minute) or `labkit up --build`"
        if build:
            return Check(name, "warn", f"{d.image} is missing: `labkit up --build` builds it with {tool} "
                         "(Debian's mirror must answer)", fix), size
        return Check(name, "fail", f"{d.image} is missing: `labkit up` stops (exit 4) until it is built", fix), size
    ref = d.image_ref(registry)
    host, repo, tag = split_image_ref(ref)
    state, why = best_probe([probe_registry(b, repo, tag) for b in registry_bases(host, mirrors)])
    fix = ("connect the classroom, or give a reachable mirror (`registry:` in the lab file or $LABKIT_REGISTRY), "
           "or carry the image in with `labkit bundle load` / `docker load`")
    if state == "found":
        return Check(name, "ok", f"{ref} is not here; registry {host} has it: `labkit up` pulls it"), size
    if state == "missing":
        return Check(name, "fail", f"{ref} is not here and registry {host} does not have it ({why})", fix), size
    if state == "answers":
        return Check(name, "warn", f"{ref} is not here; registry {host} answers ({why}): `labkit up` pulls it "
                     "(whether it holds this tag was not checked)"), size
    return Check(name, "fail", f"{ref} is not here and registry {host} is unreachable ({why}): "
                 "`labkit up` cannot pull it", fix), size


def check_box(box: str, build: bool) -> tuple[Check, bool]:
    """The lab's Vagrant box: present, or buildable by labkit. Returns the check and whether
    the box is here."""
    if libvirt_uri() == SESSION_URI:  # an ordinary account: the box the instructor published, linked
        shared = session.shared_box(box)
        if shared is None:
            return Check("box", "fail", f"the Vagrant box {box} is not installed for the accounts of this machine",
                         session.NOT_PUBLISHED), False
        return Check("box", "ok", f"{box} is shared read-only in {shared} (this account's VMs are overlays on "
                     "it)"), True
    if boxes.box_present(box):
        size = boxes.box_size(box)
        return Check("box", "ok", f"{box} is in labkit's Vagrant home" + (f" ({_mib(size)})" if size else "")), True
    if box != boxes.DEFAULT_BOX:
        return Check("box", "fail", f"the Vagrant box {box} is not here, and labkit builds only {boxes.DEFAULT_BOX}",
                     f"add it to labkit's Vagrant home (`VAGRANT_HOME={paths.vagrant_home()} vagrant box add "
                     f"--name {box} FILE.box`), or use vm.box: {boxes.DEFAULT_BOX}"), False
    missing = [t for t in boxes.TOOLS if shutil.which(t) is None]
    if missing or os.geteuid() != 0:
        why = f"{', '.join(missing)} not installed" if missing else "building it needs root"
        return Check("box", "fail", f"the Vagrant box {box} is not here and cannot be built ({why})",
                     "`bash scripts/setup-vm.sh` as root, then `sudo labkit box build`"), False
    fix = "`labkit box build` (about 70 s) or `labkit up --build`"
    if build:
        return Check("box", "warn", f"the Vagrant box {box} is not here: `labkit up --build` builds it "
                     "(about 70 s; Debian's mirror must answer)", fix), False
    return Check("box", "fail", f"the Vagrant box {box} is not here: `labkit up` stops (exit 4) until it is built",
                 fix), False


def check_lab(lab: Lab, build: bool = False, engine_ok: bool = True) -> list[Check]:
    """What this lab needs of this machine: its images, its box, memory and CPU for its hosts
    (from measured sizes), disk. Hosts of the lab that already run need nothing more."""
    out: list[Check] = []
    registry = lab.registry or catalog.default_registry()
    m = measured()
    # the plan's containers, as `labkit up` would make them on this machine
    hosts = make_plan(lab, simple_context(lab, str(paths.lab_dir(lab.name)))).containers
    running_ct: set[str] = set()
    existing_ct: set[str] = set()
    docker_root = Path("/var/lib/docker")
    disk: list[tuple[Path, int, str]] = []    # (where, bytes, what)

    # images
    if not lab.containers:
        pass
    elif not engine_ok and not docker.needed(lab.containers):
        # an ordinary account's rootless Podman lab: its images come from the classroom's shared copy
        refs = [catalog.get(c.distro).image_ref(registry) for c in lab.containers]
        gone = shared_images.missing(refs)
        out.append(Check("images", "fail", f"not in the classroom's shared copy ({shared_images.SHARED_DIR}): "
                         f"{', '.join(gone)}", "the instructor adds them once, as root: "
                         "`labkit prepare --classroom -f LAB.yml --account NAME`") if gone else
                   Check("images", "ok", f"{', '.join(dict.fromkeys(refs))}: in the classroom's shared copy "
                         f"({shared_images.SHARED_DIR})"))
    elif not engine_ok:
        out.append(Check("images", "skipped", "not checked: the Docker engine is not answering (see above)"))
    else:
        c = docker.client(timeout=10)
        docker_root = Path(c.info().get("DockerRootDir") or docker_root)
        for found in c.containers.list(all=True, filters={"label": f"labkit.lab={lab.name}"}):
            existing_ct.add(found.name or "")
            if found.status == "running":
                running_ct.add(found.name or "")
        mirrors = registry_mirrors()
        for ct in lab.containers:
            try:
                chk, size = check_image(ct.spec, registry, build, mirrors)
            except Exception as e:  # noqa: BLE001 - doctor reports, never crashes; not checked is no pass
                chk, size = Check(f"image {ct.distro}", "skipped", f"not checked: {type(e).__name__}: {e}"), 0
            out.append(chk)
            if size:
                disk.append((docker_root, size, f"image {ct.distro}"))
                if ct.spec.source == "local":
                    disk.append((state_dir() / "tmp", size, f"building {ct.distro}"))
    new_ct = [h for h in hosts if h.name not in existing_ct]
    if new_ct:
        disk.append((docker_root, len(new_ct) * CONTAINER_BYTES, f"{len(new_ct)} container(s)"))

    # the VM: box, boots
    vms_to_start, vm_each, vm_how = 0, 0, ""
    pool = _pool_path() if lab.vm.enabled else None
    if lab.vm.enabled:
        try:
            accel = detect_accel(lab.vm.accel).mode
        except Exception:  # noqa: BLE001 - check_vm_stack reports it; size as emulation
            accel = "qemu"
        try:
            box_chk, box_here = check_box(lab.vm.box, build)
        except LabkitError as e:
            box_chk, box_here = Check("box", "fail", f"cannot tell whether {lab.vm.box} is here: {e.message}",
                                      e.hint or ""), False
        out.append(box_chk)
        if not box_here:
            if lab.vm.box == boxes.DEFAULT_BOX:
                disk.append((state_dir() / "boxes", BOX_BUILD_BYTES + BOX_BYTES, "building the box"))
            disk.append((paths.vagrant_home(), BOX_BYTES, "the box in Vagrant"))
        pool = pool or _pool_path()  # (set whenever the lab has a VM)
        if not boxes.pool_volumes(boxes.box_volume_prefix(lab.vm.box)) and libvirt_uri() != SESSION_URI:
            disk.append((pool, boxes.box_size(lab.vm.box) or BOX_BYTES, "the box in libvirt's pool"))
        names = [vm_name(lab.name, s) for s in lab.students]
        vms_up = _virsh_names() or set()
        defined = _virsh_names("--all") or set()
        vms_to_start = sum(1 for n in names if n not in vms_up)
        new_vms = sum(1 for n in names if n not in defined)
        if new_vms:
            disk.append((pool, new_vms * VM_DISK_BYTES, f"{new_vms} VM disk(s)"))
        overhead, vm_how = qemu_overhead([(r, mem) for r, mem, a in m.vm_samples if a in (None, accel)], accel)
        vm_each = lab.vm.memory * MiB + overhead
        vm_how = f"{_mib(overhead)} {vm_how}"
        boots = [b for b, a in m.boots if a in (None, accel)]
        if boots:
            one, one_how = max(boots), "measured by `labkit up` here"
        else:
            one, one_how = BOOT_SECONDS[accel], "estimate: nothing measured here yet"
        out.append(cpu_check(vms_to_start, lab.vm.cpus, os.cpu_count() or 1, accel, one, one_how,
                             running=len(names) - vms_to_start))

    # memory
    limit = parse_bytes(lab.limits.memory)
    per_distro = []
    for ct in lab.containers:
        n = sum(1 for h in hosts if h.distro == ct.distro and h.name not in running_ct)
        used = m.container_mem.get(ct.spec.slug)
        if n:
            per_distro.append((ct.distro, n, limit if used is None else min(used, limit), limit, used is not None))
    vms_running = (len(lab.students) - vms_to_start) if lab.vm.enabled else 0
    running = ", ".join(x for x in (f"{vms_running} VM(s)" if vms_running else "",
                                    f"{len(running_ct)} container(s)" if running_ct else "") if x)
    sizing = Sizing(vms_to_start, vm_each, per_distro,
                    support_bytes(len(hosts) + (len(lab.students) if lab.vm.enabled else 0), vms_to_start,
                                  sum(n for _, n, _, _, _ in per_distro)), running)
    try:
        available = mem_available(Path("/proc/meminfo").read_text())
    except (OSError, ValueError) as e:
        out.append(Check("memory", "warn", f"cannot read MemAvailable: {e}"))
    else:
        out.append(memory_check(sizing, available, vm_how))

    # checkpoints: what they keep, and room for the next one of each student who has one
    cps = checkpoint_records(lab.name)
    if cps:
        newest = {c.student: c for c in cps}  # by time: the last one of each student wins
        for kind, where in (("container", docker_root), ("vm", pool or _pool_path())):
            nxt = sum(k.bytes for c in newest.values() for k in c.kept if k.kind == kind)
            if nxt:
                disk.append((where, nxt, f"the next checkpoint's {'images' if kind == 'container' else 'VM memory'}"))
        out.append(Check("checkpoints", "ok",
                         f"{len(cps)} checkpoint(s) of {len(newest)} student(s) keep {_mib(sum(c.bytes for c in cps))} "
                         "(containers' layers with Docker's images, VMs' memory inside their disks)",
                         "`labkit checkpoint list` shows them; `labkit checkpoint delete` frees their space"))

    # disk, per file system: every place the lab's things go, and what goes there
    places = [(docker_root, 0, ""), (state_dir(), 0, ""), *disk]
    by_fs: dict[int, tuple[Path, list[str], int, list[str]]] = {}
    for where, size, what in places:
        dev, p = _fs(where)
        probe, wheres, total, whats = by_fs.setdefault(dev, (p, [], 0, []))
        top = next((str(w) for w in (docker_root, state_dir(), pool)
                    if w is not None and (where == w or w in where.parents)), str(where))
        by_fs[dev] = (probe, wheres if top in wheres else [*wheres, top], total + size, [*whats, what] if what else whats)
    for probe, wheres, total, whats in by_fs.values():
        out.append(disk_check(f"disk ({', '.join(wheres)})", total, shutil.disk_usage(probe).free, whats))
    return out
