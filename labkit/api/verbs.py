"""One function per verb, for Python callers and the CLI alike. Nothing here prints:
progress goes through the ``log``/``on_event`` callbacks, failures raise LabkitError."""
from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit import names
from labkit.ansible.runner import RunResult, run_playbook
from labkit.engines import docker as engine
from labkit.errors import EngineError, LabBusy, LabkitError, NotUp, PlaybookFailed, SpecError, UsageError
from labkit.images import build as images
from labkit.lab import catalog, uptodate
from labkit.lab.spec import DEFAULT_LAB, Lab, load_lab, parse_lab
from labkit.observe import measure
from labkit.observe.facts import HostFacts, collect
from labkit.paths import lab_dir, roles_dir, slug, state_dir, vagrant_home
from labkit.plan.model import Change, Context, ServerRef, diff, make_plan, split_extravars, teardown

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- lab resolution

LAB_FILES = ("lab.yml", "labkit.yml")  # looked for in the current folder, like compose.yaml or a Vagrantfile


@dataclass(frozen=True)
class Selected:
    """The lab a command acts on, and why that one (said to the user every time)."""

    lab: Lab
    why: str


def labs_up() -> list[str]:
    """Labs brought up here and not taken down since (``labkit up`` saves the lab's spec,
    a full ``labkit down`` drops it)."""
    return sorted(p.parent.name for p in (state_dir() / "labs").glob("*/lab.json"))


def _saved_lab(name: str) -> Lab | None:
    saved = state_dir() / "labs" / name / "lab.json"
    return parse_lab(json.loads(saved.read_text()), str(saved)) if saved.is_file() else None


def _by_name(name: str, how: str) -> Selected:
    lab = _saved_lab(name)
    if lab is not None:
        return Selected(lab, f"{how}, brought up before")
    if name == DEFAULT_LAB["name"]:
        return Selected(load_lab(None), f"{how}: the built-in default lab")
    up_now = labs_up()
    raise UsageError(f"{how}: no lab named '{name}' is up on this machine",
                     ("labs up: " + ", ".join(up_now) if up_now else "no lab is up")
                     + "; pass a lab file with -f to bring one up")


def select_lab(path: str | Path | None = None, name: str | None = None, *, default_ok: bool = False,
               cwd: str | Path | None = None) -> Selected:
    """The lab a command acts on, picked the way compose, Vagrant and Molecule users expect:

    1. ``-f FILE``; 2. ``--lab NAME`` (a lab that is up, or ``demo``); 3. ``$LABKIT_LAB``;
    4. ``lab.yml`` (or ``labkit.yml``) in the current folder; 5. the one lab that is up;
    6. with ``default_ok`` (``up``, ``doctor``, ``bundle create``) and no lab up: the built-in
    default lab. Several labs up and nothing to choose by: refused, naming them (exit 2);
    none up for a command that needs one: NotUp (exit 8).
    """
    if path is not None and name is not None:
        raise UsageError("give either -f FILE or --lab NAME, not both")
    if path is not None:
        return Selected(load_lab(path), f"from {path}")
    if name is not None:
        return _by_name(name, f"--lab {name}")
    env = os.environ.get("LABKIT_LAB", "").strip()
    if env:
        return _by_name(env, f"$LABKIT_LAB={env}")
    here = Path(cwd or Path.cwd())
    for fname in LAB_FILES:
        if (here / fname).is_file():
            return Selected(load_lab(here / fname), f"from ./{fname} in this folder")
    up_now = labs_up()
    if len(up_now) == 1:
        return _by_name(up_now[0], "the only lab that is up")
    if len(up_now) > 1:
        raise UsageError(f"{len(up_now)} labs are up ({', '.join(up_now)}): which one?",
                         "choose with --lab NAME (or -f FILE, or $LABKIT_LAB)")
    if default_ok:
        return Selected(load_lab(None), "the built-in default lab (no lab file here, no lab up)")
    raise NotUp("no lab is up on this machine (and no lab.yml in this folder)",
                "`labkit up` brings up the built-in default lab; `labkit up -f FILE` yours")


def resolve_lab(path: str | Path | None = None, name: str | None = None) -> Lab:
    """The lab from a file, a name, or the built-in default lab (Python callers; the CLI
    uses ``select_lab``)."""
    if path is None and name is None:
        return load_lab(None)
    return select_lab(path, name, default_ok=True).lab


def _save_lab(lab: Lab) -> None:
    (lab_dir(lab.name) / "lab.json").write_text(json.dumps(lab.model_dump(mode="json"), indent=2))


def _forget_lab(lab: str) -> None:
    """After a full ``down``: the lab is no longer up (nor its servers, assignment and ssh
    config remembered). The runner's artifacts stay, for the record."""
    d = lab_dir(lab)
    for name in ("lab.json", "inventory", "assignment.json", "ssh_config", "engines.json", uptodate.STAMP):
        (d / name).unlink(missing_ok=True)


@contextmanager
def lab_lock(lab: str, verb: str) -> Iterator[None]:
    """Hold the lab's lock; a second labkit on the same lab is refused, naming the holder.

    The lock is a kernel flock: it is released when its holder exits, also by a crash,
    so a stale lock file never blocks anybody.
    """
    path = lab_dir(lab) / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another labkit process"
            raise LabBusy(f"lab '{lab}' is busy: {holder} holds its lock ({path})",
                              "wait for it to finish, or stop that process") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"labkit {verb} (pid {os.getpid()}, started {time.strftime('%H:%M:%S')})".encode(), 0)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- plan

def _one_server_ctx(lab: Lab, assignment: dict[str, str] | None) -> Context:
    """A context without I/O for callers that only need names and servers (doctor, report,
    status): the assignment given, else this machine as the only server."""
    servers = tuple(ServerRef(s) for s in dict.fromkeys((assignment or {}).values())) or (ServerRef("localhost"),)
    return Context(servers, str(lab_dir(lab.name)), assignment, lab.registry or catalog.default_registry())


def container_plan(lab: Lab, students: list[str] | None = None,
                   assignment: dict[str, str] | None = None) -> list[dict]:
    """The plan's containers as dicts (labkit.plan.model owns them)."""
    return [_item(c) for c in make_plan(lab, _one_server_ctx(lab, assignment), students).containers]


def network_name(lab: str, student: str) -> str:
    return names.network(lab, student)


def network_plan(lab: Lab, students: list[str] | None = None,
                 assignment: dict[str, str] | None = None) -> list[dict]:
    return [asdict(n) for n in make_plan(lab, _one_server_ctx(lab, assignment), students).networks]


def _item(x) -> dict:
    d = asdict(x)
    d.pop("role", None)
    return d


# --------------------------------------------------------------------------- lab servers

def _inventory_file(lab: str) -> Path:
    return lab_dir(lab) / "inventory"


def lab_servers(lab: str, inventory: str | Path | None = None) -> tuple[list, str | None]:
    """The lab's servers: from ``inventory`` (remembered for later commands), else from the
    inventory the lab was brought up with, else this machine alone. Returns (servers, inventory)."""
    from labkit.servers import base as srv

    saved = _inventory_file(lab)
    if inventory is None and saved.is_file():
        inventory = saved.read_text().strip()
    if inventory is None:
        return srv.default_servers(), None
    return srv.from_inventory(inventory), str(Path(inventory).resolve())


@contextmanager
def engines(lab: str, inventory: str | Path | None = None, servers: list | None = None) -> Iterator[list]:
    """The lab's servers (``servers``, else those of ``lab_servers``) with their engines
    reachable (SSH tunnels to remote ones)."""
    from labkit.servers import base as srv

    if servers is None:
        servers, _ = lab_servers(lab, inventory)
    with srv.engines(lab, servers) as svs:
        yield svs


def vm_plan(lab: Lab, students: list[str] | None = None, assignment: dict[str, str] | None = None) -> list[dict]:
    """The plan's VMs as dicts: name, student, server."""
    return [{"name": v.name, "student": v.student, "server": v.server}
            for v in make_plan(lab, _one_server_ctx(lab, assignment), students).vms]


def _remote_vm_settings(lab: Lab, servers: list, plan: list[dict], log: Log) -> dict:
    """For each remote server that gets VMs: what `labkit prepare` recorded there (its
    folders, KVM or emulation) and the ProxyCommand through it to its VMs."""
    from labkit.errors import BoxError
    from labkit.vm import boxes

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


def _vm_settings(lab: Lab, log: Log, build: bool) -> dict:
    """Box present (or built), KVM or emulation decided and said: the lab_vm role's settings
    for VMs on this machine."""
    from labkit.errors import BoxError
    from labkit.vm import boxes, virt, vms

    vms.check_libvirt()
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
        "emulator_path": str(virt.tcg_emulator_wrapper()) if accel.emulated else "",
        "boot_timeout": 600 if accel.emulated else 300,
    }


def _check_students(lab: Lab, students: list[str] | None) -> None:
    for s in students or []:
        if s not in lab.students:
            raise SpecError(f"--student {s}: not a student of lab '{lab.name}'",
                            f"students: {', '.join(lab.students[:20])}")


# --------------------------------------------------------------------------- verbs

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


def up(lab: Lab, *, students: list[str] | None = None, build: bool = False, log: Log = _quiet,
       on_event=None, verbosity: int = 0, show_output: bool = False, with_facts: bool = True,
       inventory: str | Path | None = None, full: bool = False) -> UpResult:
    """Bring the lab up (idempotent): images, then ``playbooks/up.yml`` through ansible-runner.

    With ``inventory``, the lab's students are spread over its ``lab_servers`` (each server
    prepared with ``labkit prepare``); later commands on the lab remember the inventory.
    When nothing changed since the last full run (``labkit.lab.uptodate``), the playbook is skipped
    (``run`` is None, ``up_to_date`` the time of that run); ``full`` runs it anyway.
    """
    _check_students(lab, students)
    t0 = time.monotonic()
    servers, inv_path = lab_servers(lab.name, inventory)
    with lab_lock(lab.name, "up"), engines(lab.name, servers=servers) as svs:
        if inv_path:
            _inventory_file(lab.name).write_text(inv_path)
        imgs = []
        if any(sv.local for sv in svs):
            engine.client()
            registry = lab.registry or catalog.default_registry()
            imgs = images.ensure([c.distro for c in lab.containers], registry, build_missing=build, log=log)
            # the lab's packages baked into an image per distro once, not installed in every container
            images.bake([c.distro for c in lab.containers if c.engine == "docker"], lab.provision.packages,
                        registry, log=log)
        _check_remote_images(lab, svs)
        # gather what is read-only, then plan (no I/O), then apply (the playbook)
        draft = make_plan(lab, context(lab, svs, save=True), students)
        local = {sv.name for sv in svs if sv.local}
        vm_local = _vm_settings(lab, log, build) if any(v.server in local for v in draft.vms) else None
        vm_remote = _remote_vm_settings(lab, svs, [{"server": v.server} for v in draft.vms], log)
        plan = make_plan(lab, context(lab, svs, vm_local=vm_local, vm_remote=vm_remote), students)
        check_lxc(plan.containers, svs)
        _save_lab(lab)
        _record_scopes(lab)  # before anything is made: `down` then finds it from any state
        extravars = plan.extravars()
        extravars["labkit_podman_remote"] = podman_remote(lab.name, plan.containers, svs)
        check_podman_remote(lab.name, extravars["labkit_podman_remote"], svs)
        extravars["labkit_lxc_remote"] = lxc_remote(lab.name, plan.containers, svs)
        vms = [{"name": v.name, "server": v.server} for v in plan.vms]
        vm_settings = dict(plan.vm)
        stamped = not uptodate.eligible(plan, svs, students, has_content(lab))  # a full run writes a stamp
        key = uptodate.asked(lab, extravars, engine.client()) if stamped else ""
        if stamped and not full:
            since = uptodate.unchanged(lab.name, key, engine.client(), bool(vms))
            if since is not None:
                res = UpResult(lab, None, imgs, seconds=time.monotonic() - t0, up_to_date=since)
                if with_facts:
                    res.facts = facts(lab)
                return res
        uptodate.drop(lab.name)  # only a run that ends well writes one
        boots = measure.VmBoots(on_event)  # which VMs boot, and how many at once (K8's context)
        where = _vm_where(vms, vm_settings, vm_remote, svs)
        try:
            # the plan's lists go to the first play only, through a file (plan.FIRST_PLAY_ONLY)
            plan_file = lab_dir(lab.name) / "runner" / "plan.json"
            cmdline_vars, first_play = split_extravars(extravars, str(plan_file))
            plan_file.parent.mkdir(parents=True, exist_ok=True)
            plan_file.write_text(json.dumps(first_play))
            # no VM planned: the VM task is skipped by its tag, not by a `when` per container
            run = run_playbook("up.yml", lab=lab.name, extravars=cmdline_vars, on_event=boots,
                               verbosity=verbosity, show_output=show_output, inventory=inv_path,
                               skip_tags=None if vms else "labkit_vm")
        except PlaybookFailed as e:  # keep the boot times of the VMs that did boot (K8)
            booted = [v["name"] for v in vms if "labkit_vm_boot_seconds" in e.host_facts.get(v["name"], {})]
            measure.save(lab.name, [_measure_vm(lab, n, e.host_facts, boots, where) for n in booted])
            _diagnose(e, svs, with_vms=bool(vms))
            raise
        clients = {sv.name: engine.client_for(sv.docker_host) for sv in svs}
        # in parallel; unchanged containers keep their earlier row (measure.containers)
        rows = measure.containers([(c.name, clients[c.server]) for c in plan.containers if c.engine == "docker"],
                                  previous=measure.load(lab.name), log=log)
        rows += _measure_engines(lab.name, [c for c in plan.containers if c.engine != "docker"], log, svs)
        measure.save(lab.name, rows + [_measure_vm(lab, v["name"], run.host_facts, boots, where) for v in vms])
        if stamped:
            uptodate.save(lab.name, key, engine.client(), bool(vms))
        # the lesson's own content / the user's roles, after labkit's own (never on a lab server)
        conv = _converge(lab, svs, students=students, prepare=True, on_event=on_event, verbosity=verbosity,
                         show_output=show_output) if has_content(lab) else None
    res = UpResult(lab, run, imgs, seconds=time.monotonic() - t0, warnings=package_warnings(run.host_facts),
                   converge=conv)
    if with_facts:
        res.facts = facts(lab)
    return res


def check_lxc(containers, servers, installed=None, remote_missing=None) -> None:
    """Before anything is made for a lab with LXC containers: LXC with its Python binding is
    here when some go on this machine (lxc_container runs with labkit's Python), and each
    remote lab server that gets some has what role lab_lxc needs there (``engine_lxc.remote_missing``,
    read over its SSH); else an EngineError (exit 3) naming what is missing where, and the fix."""
    from labkit.engines import lxc as engine_lxc

    mine = [c for c in containers if c.engine == "lxc"]
    if not mine:
        return
    local = {sv.name for sv in servers if sv.local}
    here = [c for c in mine if c.server in local]
    missing = (installed or engine_lxc.missing)() if here else []
    if missing:
        raise EngineError(f"engine lxc: {', '.join(missing)} missing on this machine ({len(here)} LXC container(s) "
                          "planned)", engine_lxc.START_HINT)
    for sv in servers:
        there = [c for c in mine if c.server == sv.name and not sv.local]
        if not there:
            continue
        lacks = (remote_missing or engine_lxc.remote_missing)(sv)
        if lacks:
            raise EngineError(f"engine lxc: lab server {sv.name} lacks {', '.join(lacks)} ({len(there)} LXC "
                              f"container(s) planned there: {', '.join(c.name for c in there[:3])}"
                              f"{', ...' if len(there) > 3 else ''})", engine_lxc.REMOTE_HINT)


def lxc_remote(lab: str, containers, servers) -> dict[str, str]:
    """For each remote lab server with LXC containers: the wrapper here that runs ``lxc-attach``
    there over SSH (``servers.lxc_wrappers``), the ``ansible_lxc_attach_executable`` of labkit's
    connection plugin ``labkit_lxc`` for those containers (up.yml)."""
    from labkit.servers.base import lxc_wrappers

    by_name = {sv.name: sv for sv in servers}
    out: dict[str, str] = {}
    for c in containers:
        sv = by_name.get(c.server)
        if c.engine == "lxc" and sv is not None and not sv.local and sv.name not in out:
            out[sv.name] = lxc_wrappers(lab, sv)["attach"]
    return out


def podman_remote(lab: str, containers, servers) -> dict[str, dict[str, str]]:
    """For each remote lab server with Podman containers: per store ('' root's, or a rootless
    user's) the wrapper here that runs that Podman there over SSH (``servers.podman_wrapper``),
    the connection plugin's ``ansible_podman_executable`` for those containers (up.yml)."""
    from labkit.servers.base import podman_wrapper

    out: dict[str, dict[str, str]] = {}
    by_name = {sv.name: sv for sv in servers}
    for c in containers:
        sv = by_name.get(c.server)
        if c.engine == "podman" and sv is not None and not sv.local:
            out.setdefault(sv.name, {})[c.user or ""] = podman_wrapper(lab, sv, c.user or "")
    return out


def check_podman_remote(lab: str, remote: dict[str, dict[str, str]], servers) -> None:
    """Before anything is made: Podman answers on each remote lab server that gets Podman
    containers (else an EngineError naming the server and how to prepare it)."""
    import subprocess

    from labkit.servers.base import podman_wrapper

    for sv in servers:
        if sv.name not in remote:
            continue
        try:  # root's Podman there (a rootless user's wrapper is written there by `up` itself)
            p = subprocess.run([podman_wrapper(lab, sv, ""), "version", "--format",
                                "{{.Client.Version}}"], capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            p = None
        if p is None or p.returncode != 0:
            why = "no answer over SSH" if p is None else (p.stderr.strip().splitlines() or [f"rc {p.returncode}"])[-1]
            raise EngineError(f"engine podman: Podman does not answer on lab server {sv.name} ({why})",
                              "install and set it up there: `labkit prepare -i INVENTORY --podman`")


def _measure_engines(lab: str, items: list, log: Log, servers: list | None = None) -> list[dict]:
    """Create-to-ready, memory and disk of the other engines' containers (each engine's own
    ``measure``); a container that cannot be measured is said, never fatal."""
    if not items:
        return []
    from labkit.servers.base import default_servers

    scopes = engine_scopes(lab)  # only the other engines' rows: no Docker or libvirt scan here
    rows = {h["name"]: h for sv in servers or default_servers() for name, users in _engines_on(sv, scopes)
            for h in engine.backend(name).hosts(lab, None, sv, users)}
    out = []
    for c in items:
        row = rows.get(c.name)
        m = engine.backend(c.engine).measure(row) if row else None
        if m is None:
            log(f"{c.name}: not measured ({c.engine})")
        else:
            out.append(m)
    return out


def _diagnose(e: PlaybookFailed, servers: list, with_vms: bool) -> None:
    """After a failed run: say which engine (or libvirtd) stopped answering, if one did, and
    that the next `labkit up` resumes from where this one stopped."""
    from labkit.vm import vms

    dead, hints = [], []
    for sv in servers:
        try:
            if sv.local:
                engine.reset()
                engine.client(timeout=15)
            else:
                engine.forget(sv.docker_host)
                engine.client_for(sv.docker_host)
        except LabkitError as x:
            dead.append(x.message)
            hints.append(x.hint or engine.START_HINT)
    if with_vms and (why := vms.libvirt_answers()):
        dead.append(f"libvirtd is not answering at {vms.LIBVIRT_URI} ({why})")
        hints.append(vms.LIBVIRT_HINT)
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
        c = engine.client_for(sv.docker_host)
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
    from labkit.vm import boxes

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


@dataclass
class DownResult:
    lab: str
    removed_containers: int
    removed_networks: int
    run: RunResult | None
    removed_vms: list[str] = field(default_factory=list)


def down(lab: Lab, *, students: list[str] | None = None, log: Log = _quiet, on_event=None,
         verbosity: int = 0, show_output: bool = False, inventory: str | Path | None = None) -> DownResult:
    """Remove exactly what carries the lab's labels (one student's when asked), on every
    lab server of the lab; idempotent."""
    _check_students(lab, students)
    servers, inv_path = lab_servers(lab.name, inventory)
    with lab_lock(lab.name, "down"), engines(lab.name, servers=servers) as svs:
        if lab.vm.enabled and any(sv.local for sv in svs):
            from labkit.vm.vms import check_libvirt

            check_libvirt()  # down.yml removes the VM networks: say so now rather than as a failed task
        before = hosts(lab.name, servers=svs)
        nets_before = _networks(lab.name, svs)
        from labkit.vm import vms as vms_mod

        each: list[str | None] = list(students) if students else [None]
        proxied = [a for s in each for a in vms_mod.proxied_addresses(lab.name, s)]
        owned = _vm_resources(lab.name, svs, students)
        if students:
            run = None
            for s in students:
                run = run_playbook("down.yml", lab=lab.name, inventory=inv_path, on_event=on_event,
                                   extravars={**_down_vars(lab), "labkit_student": s,
                                              "labkit_down_vms": _vm_resources(lab.name, svs, [s], owned)},
                                   verbosity=verbosity, show_output=show_output)
        else:
            run = run_playbook("down.yml", lab=lab.name, extravars={**_down_vars(lab), "labkit_down_vms": owned},
                               on_event=on_event, verbosity=verbosity, show_output=show_output, inventory=inv_path)
        from labkit.vm.vms import remove_vm_folders

        for who in each:  # this machine's own records of the VMs (key copies, ssh configs)
            remove_vm_folders(lab.name, who)
        vms_mod.stop_proxies(proxied)
        after = hosts(lab.name, servers=svs)
        nets_after = _networks(lab.name, svs)
        still = {a["name"] for a in after}
        gone = [h["name"] for h in before if h["name"] not in still]
        removed_vms = [f"domain {h['name']}" + ("" if h.get("local", True) else f" (on {h['server']})")
                       for h in before if h["role"] == "vm" and h["name"] not in still]
        measure.forget(lab.name, gone if students else None)
    if not students and not after:
        _forget_lab(lab.name)
    containers_removed = len([h for h in before if h["role"] == "container"]) - len(
        [h for h in after if h["role"] == "container"])
    return DownResult(lab.name, containers_removed, len(nets_before) - len(nets_after), run, removed_vms)


def _vm_resources(lab: str, servers: list, students: list[str] | None = None,
                  known: dict | None = None) -> dict[str, dict[str, list[str]]]:
    """Per lab server, the lab's (or the students') libvirt domains and pool volumes and the
    server's Vagrant folders, read from each server (labkit.names decides what is the lab's);
    down.yml removes exactly these. ``known``: a reading to filter instead of reading again."""
    import subprocess

    from labkit.servers.base import SERVER_HOME
    from labkit.vm.vms import LIBVIRT_URI, _known_labs

    others = [o for o in _known_labs() if o != lab]
    out: dict[str, dict[str, list[str]]] = {}
    for sv in servers:
        if known is not None:
            found = known.get(sv.name, {})
            doms, vols = found.get("domains", []), found.get("volumes", [])
        else:
            doms, vols = [], []
            for what, cmd in (("domains", ["virsh", "-q", "-c", LIBVIRT_URI, "list", "--all", "--name"]),
                              ("volumes", ["virsh", "-q", "-c", LIBVIRT_URI, "vol-list", "default"])):
                try:
                    p = (subprocess.run(cmd, capture_output=True, text=True, timeout=60) if sv.local
                         else sv.run(cmd, timeout=60))
                except (OSError, subprocess.TimeoutExpired):
                    continue
                if p.returncode == 0:  # no libvirt there: a containers-only server
                    names_ = [ln.split()[0] for ln in p.stdout.splitlines() if ln.strip()]
                    (doms if what == "domains" else vols).extend(names_)
        each: list[str | None] = list(students) if students else [None]
        mine = {"domains": [d for d in doms if any(names.owned_by(d, lab, s, others) for s in each)],
                "volumes": [v for v in vols if any(names.owned_by(v, lab, s, others) for s in each)]}
        base = f"{SERVER_HOME}/labs/{lab}/vagrant"
        mine["vagrant_dirs"] = [] if sv.local else ([f"{base}/{s}" for s in students] if students else [base])
        out[sv.name] = mine
    return out


def _down_vars(lab: Lab) -> dict:
    return {"labkit_lab": lab.name, "labkit_vm_required": lab.vm.enabled,
            "labkit_down_engines": engine_scopes(lab.name, lab)}


def _networks(lab: str, servers: list | None = None) -> list[str]:
    """The lab's network names on each server, Docker's and (named with their engine) the other
    engines' in each store the lab used: on this machine and, for ``REMOTE_ENGINES``, on a
    remote lab server too (``down`` removes them there, and counts them)."""
    from labkit.servers.base import default_servers

    out = []
    scopes = engine_scopes(lab)
    for sv in servers or default_servers():
        out += [n.name for n in engine.client_for(sv.docker_host).networks.list(filters={"label": f"labkit.lab={lab}"})]
        for name, users in _engines_on(sv, scopes):
            out += [f"{n} ({name})" for n in engine.backend(name).networks(lab, sv, users)]
    return out


def vm_hosts(lab: str, students: list[str] | None = None, servers: list | None = None) -> list[dict]:
    """The lab's VMs found in libvirt by name (labkit-<lab>-<student>-vm), whatever their state,
    on each lab server (this machine's libvirt, or over SSH on a remote one)."""
    import subprocess

    from labkit.servers.base import default_servers
    from labkit.vm.vms import LIBVIRT_URI, _known_labs

    out = []
    others = [o for o in _known_labs() if o != lab]
    for sv in servers or default_servers():
        cmd = ["virsh", "-q", "-c", LIBVIRT_URI, "list", "--all"]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=30) if sv.local else sv.run(cmd, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if p.returncode != 0:  # no libvirt there: a containers-only server
            continue
        for line in p.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) < 3:
                continue
            name, state = parts[1], parts[2].strip()
            # the same ownership rule `labkit down` sweeps libvirt with
            if not name.endswith("-vm") or not names.owned_by(name, lab, None, others):
                continue
            student = name[len(f"labkit-{lab}-"):-len("-vm")]
            if students and student not in students:
                continue
            out.append({"name": name, "role": "vm", "student": student, "distro": "debian:12",
                        "state": state, "image": "", "spec": f"ssh://{name}", "server": sv.name, "local": sv.local})
    return out


def ssh_config(lab: str) -> Path:
    """One OpenSSH config for every VM of the lab (from the lab_vm role's per-VM files)."""
    parts = sorted((lab_dir(lab) / "vagrant").glob("*/ssh_config"))
    path = lab_dir(lab) / "ssh_config"
    path.write_text("".join(p.read_text() + "\n" for p in parts))
    path.chmod(0o600)
    return path


def hosts(lab: str, students: list[str] | None = None, servers: list | None = None) -> list[dict]:
    """The lab's hosts (containers by label on each lab server, VMs by name), whatever their state.
    ``servers``: with their engines reachable (``engines()``); default: this machine."""
    from labkit.servers.base import default_servers

    out = []
    scopes = engine_scopes(lab)
    for sv in servers or default_servers():
        out += _containers(lab, students, sv)
        for name, users in _engines_on(sv, scopes):
            out += engine.backend(name).hosts(lab, students, sv, users)
    # one order everywhere: by student, then name (containers and VMs alike)
    return sorted(out + vm_hosts(lab, students, servers), key=lambda h: (h["student"], h["role"] == "vm", h["name"]))


# engines labkit drives on a remote lab server too (each over the server's SSH)
REMOTE_ENGINES = frozenset({"podman", "lxc"})


def _engines_on(sv, scopes: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """The other engines (and their stores) of ``engine_scopes`` that labkit reads on ``sv``."""
    return [(name, users) for name, users in scopes.items() if sv.local or name in REMOTE_ENGINES]


def _scopes_file(lab: str) -> Path:
    return lab_dir(lab) / "engines.json"


def engine_scopes(lab: str, spec: Lab | None = None) -> dict[str, list[str]]:
    """The engines other than Docker this lab has used here, each with whose stores to read
    ('' is root's; a name, a rootless Podman user's): what ``up`` recorded (before it made
    anything, so ``down`` finds it from any state), with ``spec``'s own."""
    f = _scopes_file(lab)
    out: dict[str, list[str]] = json.loads(f.read_text()) if f.is_file() else {}
    for c in spec.containers if spec is not None else ():
        if c.engine != "docker":
            users = out.setdefault(c.engine, [])
            if (c.user or "") not in users:
                users.append(c.user or "")
    return out


def _record_scopes(lab: Lab) -> None:
    scopes = engine_scopes(lab.name, lab)
    if scopes:
        _scopes_file(lab.name).write_text(json.dumps(scopes, indent=2))


def _containers(lab: str, students: list[str] | None, server) -> list[dict]:
    out = []
    for c in engine.client_for(server.docker_host).containers.list(all=True, filters={"label": f"labkit.lab={lab}"}):
        lb = c.labels or {}
        if students and lb.get("labkit.student") not in students:
            continue
        out.append({
            "name": c.name,
            "role": lb.get("labkit.role", "container"),
            "student": lb.get("labkit.student", ""),
            "distro": lb.get("labkit.distro", ""),
            "state": c.status,
            "image": (c.attrs.get("Config") or {}).get("Image", ""),
            "spec": f"docker://{c.name}",
            "server": server.name,
            "local": server.local,
            "docker_host": server.docker_host,
            "engine": "docker",
            "user": "",
        })
    return out


def status(lab: Lab) -> dict:
    """Hosts and networks of the lab, with what the lab file expects but is missing."""
    with engines(lab.name) as svs:
        found = hosts(lab.name, servers=svs)
        have = {h["name"] for h in found}
        plan = make_plan(lab, context(lab, svs))  # the same plan `up` applies (and `up --plan` diffs)
        absent = [{"name": h.name, "role": h.role, "student": h.student, "distro": h.distro, "server": h.server,
                   **({"engine": h.engine, "user": h.user} if h.role == "container" else {})}
                  for h in plan.hosts if h.name not in have]
        return {
            "lab": lab.name,
            "servers": [sv.name for sv in svs],
            "hosts": found,
            "missing": [p["name"] for p in absent],
            "missing_hosts": absent,
            "networks": _networks(lab.name, svs),
        }


def facts(lab: Lab) -> list[HostFacts]:
    """Side-by-side facts of the lab server and every running host of the lab."""
    with engines(lab.name) as svs:
        running = _running(lab, svs)
        return collect(running, ssh_config(lab.name), servers=svs)


def _running(lab: Lab, servers: list) -> list[dict]:
    running = [h for h in hosts(lab.name, servers=servers) if h["state"] == "running"]
    if not running:
        raise NotUp(f"lab '{lab.name}' has no running hosts", "bring it up with `labkit up`")
    return running


def verify(lab: Lab, only: list[str] | None = None, junit: str | Path | None = None,
           tests: list[str] | None = None):
    """Check the kernel-sharing facts K1..K12 on the live lab, and the user's own tests
    (``tests``; default: the lab file's ``tests:`` unless ``only`` names facts); one result
    per fact (or test) and host, and one JUnit file for both."""
    from labkit.ansible import inventory as inv_mod
    from labkit.observe.verify import build_view, check_fact_ids, merge_junit, run_checks, run_user_tests

    check_fact_ids(only)  # a typo is said at once, before any host is read
    user = tests if tests is not None else ([] if only else list(lab.tests))
    with engines(lab.name) as svs:
        running = _running(lab, svs)
        cfg = ssh_config(lab.name)
        view = build_view(collect(running, cfg, servers=svs), lab.name, cfg)
        work = lab_dir(lab.name) / "verify"
        work.mkdir(exist_ok=True)
        facts_junit = work / "facts.xml" if (junit and user) else junit
        results = run_checks(view, only, facts_junit)
        if user:
            inv_path = inv_mod.write_to(work / "hosts.yml", inv_mod.build(
                running, _ssh_configs(lab.name, running), lab.provision.group_vars))
            mine, user_junit = run_user_tests(user, inv_path, lab.provision.hosts, work)
            from labkit.observe.verify import engine_label

            for r in mine:  # the engine of each host, as for the facts' rows
                h = view.hosts.get(r.host)
                r.engine = engine_label(h) if h is not None else ""
            results += mine
            if junit and facts_junit:
                merge_junit([Path(facts_junit), user_junit], Path(junit))
        return results


def shell_command(lab: Lab, host: str, student: str | None = None, root: bool = False,
                  command: list[str] | None = None) -> list[str]:
    """The command that opens a shell (or runs ``command``) on a lab host as the student.

    ``host`` is a full host name (``labkit-demo-s01-debian12``) or its short form
    (``debian12``, ``vm``) for ``student`` (default: the lab's first student).
    """
    _check_students(lab, [student] if student else None)
    with engines(lab.name) as svs:
        found = {h["name"]: h for h in hosts(lab.name, servers=svs)}
    server = {sv.name: sv for sv in svs}
    if host in found:  # a full name says whose host it is: a different --student is a mistake
        if student and found[host]["student"] != student:
            raise UsageError(f"{host} is student {found[host]['student']}'s host, not {student}'s",
                             f"drop --student, or name the host by its short form: `labkit shell --student "
                             f"{student} {host.rsplit('-', 1)[-1]}`")
        name = host
    else:
        student = student or lab.students[0]
        name = names.lab_prefix(lab.name, student) + host  # a short name: debian12, debian12-podman
        if name not in found:
            name = f"labkit-{lab.name}-{student}-{slug(host)}"  # or a distro: debian:12
    h = found.get(name)
    if h is None:
        prefix = f"labkit-{lab.name}-{student}-"
        choices = sorted(n.removeprefix(prefix) for n in found if n.startswith(prefix))
        raise UsageError(f"no host '{host}' in lab '{lab.name}' for student {student}",
                         "hosts: " + (", ".join(choices) or "none running: `labkit up` first"))
    if h["state"] != "running":
        raise NotUp(f"{name} is {h['state']}", "bring it back with `labkit up`")
    return _shell_argv(h, lab.provision.user, root, command, ssh_config(lab.name) if h["role"] == "vm" else None,
                       server.get(h["server"]))


# In a VM the command runs through sudo without -i: `sudo -i CMD` hands CMD to a login shell
# with `$` left unescaped, so `$x` and `$0` were expanded once too often. Instead sh runs the
# arguments as they are (`exec "$@"`) from the user's home, as `docker exec -u -w` does.
_RUN_AS_TYPED = 'cd "$HOME" && exec "$@"'


def _shell_argv(h: dict, user: str, root: bool, command: list[str] | None, ssh_cfg: Path | None, server) -> list[str]:
    """The argv that runs ``command`` (or a login shell) on host ``h``: the same argv, same
    quoting, same user and working folder on a container as in the VM."""
    import shlex
    import sys

    if h["role"] == "vm":
        if command:
            # ssh hands the VM's login shell one string: quote every word so it arrives as typed
            sudo = ["sudo", "-H"] + ([] if root else ["-u", user])
            remote = shlex.join([*sudo, "--", "sh", "-c", _RUN_AS_TYPED, "sh", *command])
            return ["ssh", "-F", str(ssh_cfg), "-T", h["name"], remote]
        return ["ssh", "-F", str(ssh_cfg), "-t", h["name"], shlex.join(["sudo", "-i"] + ([] if root else ["-u", user]))]
    interactive = sys.stdin.isatty() and not command
    if h.get("engine", "docker") != "docker":
        return engine.backend(h["engine"]).exec_argv(h, command or ["/bin/sh", "-l"], user=None if root else user,
                                                     workdir="/root" if root else f"/home/{user}",
                                                     interactive=interactive)
    who = ["-w", "/root"] if root else ["-u", user, "-w", f"/home/{user}"]
    argv = ["docker", "exec", "-it" if interactive else "-i", *who, h["name"], *(command or ["/bin/sh", "-l"])]
    if h.get("local", True):
        return argv
    return server.remote_argv(argv, tty=interactive)  # on its lab server, over SSH


@dataclass
class ReportResult:
    files: list[Path]
    data: dict


def report(lab: Lab, out_dir: str | Path, with_checks: bool = True, junit_dir: str | Path | None = None) -> ReportResult:
    """Write report.md, report.html (chart inlined as SVG: self-contained) and chart.png into
    ``out_dir``; the data (hosts, summary, checks) is returned too."""
    from labkit.observe import report as rep

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with engines(lab.name) as svs:
        running = _running(lab, svs)
        cfg = ssh_config(lab.name)
        host_facts = collect(running, cfg, servers=svs)
    meas = measure.load(lab.name)
    checks = None
    if with_checks:
        from labkit.observe.verify import build_view, run_checks

        checks = run_checks(build_view(host_facts, lab.name, cfg))
    expected = [p["name"] for p in container_plan(lab) + vm_plan(lab)]
    data = rep.build(lab.name, host_facts, meas, checks, expected)
    files = [out / "chart.png", out / "report.md", out / "report.html"]
    files[0].write_bytes(rep.chart_png(data))
    files[1].write_text(rep.markdown(data))
    files[2].write_text(rep.html_page(data, rep.chart_svg(data)))
    if junit_dir and checks is not None:
        files += rep.junit_per_student(lab.name, checks, {h["name"]: h["student"] for h in running}, Path(junit_dir))
    return ReportResult(files, data)


def prepare(inventory: str | Path, bundle: str | Path | None = None, log: Log = _quiet, on_event=None,
            verbosity: int = 0, show_output: bool = False, podman: bool = False, lxc: bool = False) -> RunResult:
    """Prepare every lab server of ``inventory`` (role lab_server), loading images from ``bundle``;
    with ``podman``, Podman installed and set up there too (rootful and rootless); with ``lxc``,
    LXC (tools, Python binding, BusyBox, root's id map)."""
    extravars: dict = {"lab_server_podman": True} if podman else {}
    if lxc:
        extravars["lab_server_lxc"] = True
    if bundle:
        from labkit.images.bundle import verify

        manifest = verify(bundle)  # a corrupt bundle is refused here, before any server is touched
        extravars["lab_server_bundle"] = str(Path(bundle).resolve())
        covers = [f"{e['release']}/{e['arch']}" for e in manifest.get("apt") or []]
        log(f"missing Debian packages: from the bundle only (Debian {', '.join(covers)})" if covers else
            "missing Debian packages: from each server's mirror (the bundle carries none)")
        if manifest.get("box"):  # servers get the VM stack: emulation's QEMU wrapper, the box's volumes
            from labkit.vm import boxes, virt

            extravars["lab_server_tcg_wrapper"] = virt.wrapper_text()
            extravars["lab_server_box_volume_prefix"] = boxes.box_volume_prefix(manifest["box"]["name"])
    inv = Path(inventory)
    if not inv.exists():
        raise SpecError(f"{inv}: inventory not found", "see inventories/classroom/ for an example")
    return run_playbook("lab_server.yml", lab="_servers", inventory=inv.resolve(), extravars=extravars,
                        on_event=on_event, verbosity=verbosity, show_output=show_output)


# --------------------------------------------------------------------------- plan (`--plan`)

def _network_rows(lab: str, servers: list, students: list[str] | None = None) -> list[dict]:
    """The lab's networks on each server (by label), with their student and server."""
    out = []
    scopes = engine_scopes(lab)
    for sv in servers:
        for n in engine.client_for(sv.docker_host).networks.list(filters={"label": f"labkit.lab={lab}"}):
            student = (n.attrs.get("Labels") or {}).get("labkit.student", "")
            if not students or student in students:
                out.append({"name": n.name, "student": student, "server": sv.name})
        for name, users in _engines_on(sv, scopes):  # the other engines' (in each store the lab used)
            for user in users:
                for net in engine.backend(name).networks(lab, sv, [user]):
                    student = _network_student(lab, net)
                    if not students or student in students:
                        out.append({"name": net, "student": student, "server": sv.name,
                                    "engine": name, "user": user})
    return out


def _network_student(lab: str, net: str) -> str:
    """The student of a network named ``names.network(lab, student)`` (other engines keep no
    student label that labkit reads back)."""
    prefix = names.network(lab, "")
    return net[len(prefix):] if net.startswith(prefix) else ""


def context(lab: Lab, servers: list, *, save: bool = False, vm_local: dict | None = None,
            vm_remote: dict | None = None) -> Context:
    """What planning needs, read (not changed: ``save`` keeps a new assignment for later runs)."""
    from labkit.servers import base as srv

    refs = tuple(ServerRef(sv.name, sv.local, sv.docker_host) for sv in servers)
    assignment = None
    if not (len(servers) == 1 and servers[0].local):
        path = lab_dir(lab.name) / "assignment.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        assignment = srv.assign(lab.students, servers, previous)
        if save:
            path.write_text(json.dumps(assignment, indent=2))
    from labkit.vm import vmnet

    registry = lab.registry or catalog.default_registry()
    # the images with the lab's packages baked in, for Docker's containers here (when baked)
    baked = images.baked([c.distro for c in lab.containers if c.engine == "docker"], lab.provision.packages,
                         registry) if any(sv.local for sv in servers) and lab.provision.packages else {}
    return Context(refs, str(lab_dir(lab.name)), assignment, registry,
                   vm_local or {}, vm_remote or {}, vmnet.pool(), vmnet.PREFIX, baked)


@dataclass
class PlanReport:
    lab: str
    verb: str
    servers: list[str]
    changes: list[Change]

    def as_dict(self) -> dict:
        return {"lab": self.lab, "verb": self.verb, "servers": self.servers,
                "changes": [c.as_dict() for c in self.changes]}


def plan(lab: Lab, verb: str = "up", *, students: list[str] | None = None,
         inventory: str | Path | None = None) -> PlanReport:
    """What ``labkit up`` (or ``down``) would create, start, recreate or remove, per server and
    student; changes nothing (like ``terraform plan``)."""
    _check_students(lab, students)
    servers, _ = lab_servers(lab.name, inventory)
    with engines(lab.name, servers=servers) as svs:
        found = hosts(lab.name, students, servers=svs)
        nets = _network_rows(lab.name, svs, students)
        if verb == "down":
            changes = teardown(found, nets)
        else:
            changes = diff(make_plan(lab, context(lab, svs), students), found, nets)
    return PlanReport(lab.name, verb, [sv.name for sv in servers], changes)


# --------------------------------------------------------------------------- the user's own Ansible

def _ssh_configs(lab: str, rows: list[dict]) -> dict[str, dict[str, str]]:
    """Each VM's OpenSSH settings as this machine reaches it (the lab_vm role's ssh_config)."""
    from labkit.vm.vms import read_ssh_config

    out = {}
    for r in rows:
        if r["role"] == "vm":
            f = lab_dir(lab) / "vagrant" / r["student"] / "ssh_config"
            if f.is_file():
                out[r["name"]] = read_ssh_config(f)
    return out


def _ssh_url(sv) -> str:
    hv = sv.hostvars
    user = hv.get("ansible_user")
    return f"ssh://{user + '@' if user else ''}{hv.get('ansible_host', sv.name)}:{hv.get('ansible_port', 22)}"


def inventory(lab: Lab, fmt: str = "yaml", *, with_servers: bool = False) -> tuple[str, Path]:
    """The lab's hosts as an inventory (YAML, INI or JSON) and the file labkit keeps current."""
    from labkit.ansible import inventory as inv_mod

    with engines(lab.name) as svs:
        rows = hosts(lab.name, servers=svs)
    by_name = {sv.name: sv for sv in svs}
    for r in rows:  # for use outside labkit: a remote engine through ssh://, not labkit's short-lived tunnel
        if not r.get("local", True) and r["role"] == "container":
            r["docker_host"] = _ssh_url(by_name[r["server"]])
    inv = inv_mod.build(rows, _ssh_configs(lab.name, rows), lab.provision.group_vars, svs if with_servers else ())
    path = inv_mod.write(lab.name, inv_mod.build(rows, _ssh_configs(lab.name, rows), lab.provision.group_vars))
    return inv_mod.render(inv, fmt), path


@dataclass
class ConvergeResult:
    run: RunResult | None                  # the converge
    prepare: RunResult | None = None       # provision.prepare, when run
    idempotence: RunResult | None = None   # the second converge, when asked for


def has_content(lab: Lab) -> bool:
    p = lab.provision
    return bool(p.playbooks or p.roles or p.prepare)


def _site(lab: Lab, playbooks: list[str] | None, pattern: str) -> Path:
    """One playbook that imports the user's playbooks and applies the lab's roles (one run,
    one recap)."""
    import yaml

    plays: list[dict] = [{"import_playbook": str(Path(pb).resolve())}
                         for pb in (playbooks if playbooks is not None else lab.provision.playbooks)]
    if playbooks is None:
        for r in lab.provision.roles:
            plays.append({"name": f"Apply role {r.role}", "hosts": r.hosts or pattern,
                          "roles": [{"role": r.role, **({"vars": r.vars} if r.vars else {})}]})
    d = lab_dir(lab.name) / "converge"
    d.mkdir(exist_ok=True)
    f = d / ("site.yml" if playbooks is None else "run.yml")
    f.write_text("---\n# written by labkit for this run\n" + yaml.safe_dump(plays, sort_keys=False))
    return f


def _extra_vars(lab: Lab, more: dict | None) -> dict:
    import yaml

    ev = lab.provision.extra_vars
    if isinstance(ev, str):  # @FILE
        p = Path(ev[1:])
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise SpecError(f"provision.extra_vars: {p}: cannot read it: {e}") from None
        if not isinstance(data, dict):
            raise SpecError(f"provision.extra_vars: {p}: expected a mapping of variables")
        ev = data
    return {**ev, **(more or {})}


def converge(lab: Lab, playbooks: list[str] | None = None, **opts) -> ConvergeResult:
    """Run the user's playbooks (``playbooks``, else the lab file's playbooks and roles) on the
    live lab's hosts — never on a lab server: the inventory holds the lab's hosts only.

    Options (``_converge``): students, limit, extra_vars, tags, skip_tags, check, diff,
    idempotence (converge a second time, skipping ``molecule-idempotence-notest``, and raise
    IdempotenceFailed, exit 6, naming each host and task that changed), prepare,
    on_event, verbosity, show_output.
    """
    _check_students(lab, opts.get("students"))
    for pb in playbooks or []:
        if not Path(pb).is_file():
            raise UsageError(f"{pb}: playbook not found", "give a path to a playbook file")
    with lab_lock(lab.name, "run"), engines(lab.name) as svs:
        return _converge(lab, svs, playbooks, **opts)


def _converge(lab: Lab, svs: list, playbooks: list[str] | None = None, *, students: list[str] | None = None,
              limit: str | None = None, extra_vars: dict | None = None, tags: str | None = None,
              skip_tags: str | None = None, check: bool = False, diff: bool = False, idempotence: bool = False,
              prepare: bool = False, on_event=None, verbosity: int = 0, show_output: bool = False,
              first: bool = True) -> ConvergeResult:
    """converge() with the lab locked and its engines reachable (``labkit up`` calls it so).
    ``first=False``: only the idempotence converge (the first one already ran)."""
    from labkit.ansible import inventory as inv_mod
    from labkit.errors import IdempotenceFailed

    pattern = lab.provision.hosts
    if limit:
        pattern = f"{pattern}:&{limit}"
    if students:
        pattern = f"{pattern}:&" + ",".join(f"student_{s.replace('-', '_')}" for s in students)
    skips = [*lab.provision.skip_tags, *(skip_tags.split(",") if skip_tags else [])]
    env = {"ANSIBLE_ROLES_PATH": os.pathsep.join([*lab.provision.roles_path, str(roles_dir())])}
    if lab.provision.collections_path:
        env["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join(lab.provision.collections_path)
    cmdline = " ".join(x for x in ("--check" if check else "", "--diff" if diff else "") if x) or None
    res = ConvergeResult(None)
    rows = [h for h in hosts(lab.name, servers=svs) if h["state"] == "running"]
    if not rows:
        raise NotUp(f"lab '{lab.name}' has no running hosts", "bring it up with `labkit up`")
    inv = inv_mod.build(rows, _ssh_configs(lab.name, rows), lab.provision.group_vars)
    inv_path = lab_dir(lab.name) / "converge" / "hosts.yml"
    inv_path.parent.mkdir(exist_ok=True)
    inv_mod.write_to(inv_path, inv)
    ev = _extra_vars(lab, extra_vars)

    def go(pb: Path, skip: list[str]) -> RunResult:
        return run_playbook(str(pb), lab=lab.name, inventory=inv_path, extravars=ev, limit=pattern,
                            tags=tags, skip_tags=",".join(dict.fromkeys(skip)) or None, cmdline=cmdline,
                            env=env, project_dir=pb.parent, on_event=on_event, verbosity=verbosity,
                            show_output=show_output)

    if prepare and lab.provision.prepare and playbooks is None:
        res.prepare = go(_site_of(lab, lab.provision.prepare, "prepare.yml"), skips)
    site = _site(lab, playbooks, lab.provision.hosts)
    if first:
        res.run = go(site, skips)
    if idempotence or not first:
        res.idempotence = go(site, [*skips, "molecule-idempotence-notest"])
        changed = res.idempotence.changed_hosts()
        if changed:
            lines = [str(c) + (f"\n{c.diff}" if diff and c.diff else "") for c in res.idempotence.changes]
            raise IdempotenceFailed(
                f"not idempotent: the second converge changed {sum(changed.values())} task(s) on "
                f"{', '.join(sorted(changed))}:\n  " + "\n  ".join(lines),
                "make those tasks report ok when nothing is to do (or tag them molecule-idempotence-notest); "
                f"`labkit run --idempotence{' --diff' if not diff else ''}` shows it again")
    return res


def idempotence(lab: Lab, **opts) -> ConvergeResult:
    """Only the second converge of the lab file's content: exit 6 naming what changed."""
    with lab_lock(lab.name, "run"), engines(lab.name) as svs:
        return _converge(lab, svs, None, first=False, **opts)


def _site_of(lab: Lab, playbooks: list[str], name: str) -> Path:
    import yaml

    d = lab_dir(lab.name) / "converge"
    d.mkdir(exist_ok=True)
    f = d / name
    f.write_text("---\n" + yaml.safe_dump([{"import_playbook": p} for p in playbooks]))
    return f
