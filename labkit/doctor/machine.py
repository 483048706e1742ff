"""`labkit doctor`: is this machine ready for `labkit up`? Each problem comes with its fix."""
from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

from labkit.doctor.check import Check, libvirt_denied, run_quiet
from labkit.doctor.lab import check_lab
from labkit.engines import docker, registry
from labkit.errors import EngineError
from labkit.lab.spec import Lab
from labkit.paths import SYSTEM_URI, libvirt_uri, state_dir
from labkit.servers.base import LOCAL_SOCKET
from labkit.vm import vms
from labkit.vm.virt import detect_accel
from labkit.vm.vmnet import doctor_check

SETUP = "bash scripts/setup.sh"
DEFAULT_POOL_NETWORKS = 31  # Docker's built-in pools: 172.17-31/16 and 192.168/16 in /20s


def check_engine(lab: Lab | None = None) -> list[Check]:
    """Docker's engine. An ordinary account that may not use it: a failure naming the account,
    the socket and who grants it, or, for a lab that needs no Docker (rootless Podman only), a
    line saying it is not needed. Never a hint to start a daemon as root to someone who is not."""
    engine = docker
    engine.reset()
    denied = engine.permission_denied(os.environ.get("DOCKER_HOST", LOCAL_SOCKET))
    if denied and lab is not None and not engine.needed(lab.containers):
        return [Check("docker engine", "skipped", f"not needed: this lab's containers are rootless Podman ({denied[0]})")]
    if denied:
        return [Check("docker engine", "fail", *denied)]
    try:
        c = engine.client(timeout=10)
    except EngineError as e:
        return [Check("docker engine", "fail", e.message,
                      f"start it: `{SETUP}` (starts dockerd when none answers) or `dockerd &` as root; "
                      "then `docker info`")]
    info = c.info()
    out = [Check("docker engine", "ok", f"Docker {info.get('ServerVersion')} on {info.get('OperatingSystem')}, "
                                       f"storage {info.get('Driver')}")]
    cg = str(info.get("CgroupVersion") or "1")
    out.append(Check("cgroups", "ok", f"cgroup v{cg}, driver {info.get('CgroupDriver')}; "
                     "memory/CPU/PID limits apply" if info.get("MemoryLimit", True) else "memory limit unsupported"))
    return out


def pool_capacity(daemon_json: Path = Path("/etc/docker/daemon.json")) -> int:
    """How many /size networks the engine's configured address pools hold."""
    try:
        pools = json.loads(daemon_json.read_text()).get("default-address-pools")
    except (OSError, ValueError):
        pools = None
    if not pools:
        return DEFAULT_POOL_NETWORKS
    total = 0
    for p in pools:
        base_bits = int(p["base"].split("/")[1])
        total += 2 ** max(0, int(p["size"]) - base_bits)
    return total


def check_pools(students: int) -> Check:
    cap = pool_capacity()
    if students + 1 > cap:
        return Check("address pools", "fail", f"{students} student networks needed, the engine's pools hold {cap}",
                     'add {"default-address-pools": [{"base": "10.200.0.0/14", "size": 24}]} to '
                     "/etc/docker/daemon.json and restart dockerd")
    return Check("address pools", "ok", f"room for {cap} networks ({students} needed by this lab)")


def check_vm_stack(need_vm: bool, accel: str | None = None) -> list[Check]:
    level = "fail" if need_vm else "warn"
    out = []
    uri = libvirt_uri()  # an ordinary account's own session instance, root's system instance
    r = run_quiet(["virsh", "-c", uri, "version"], timeout=30)
    denied = libvirt_denied(r.stderr if r is not None and r.returncode != 0 and uri == SYSTEM_URI else "")
    if denied:
        out.append(Check("libvirt", level, *denied))
    elif r is None or r.returncode != 0:
        why = "virsh not installed" if r is None else (r.stderr.strip().splitlines() or ["no answer"])[-1]
        out.append(Check("libvirt", level, f"libvirtd is not answering at {uri} ({why})",
                         f"`{SETUP}` starts virtlogd and libvirtd, or run `virtlogd -d; libvirtd -d` as root"
                         if uri == SYSTEM_URI else vms.SESSION_HINT))
    else:
        out.append(Check("libvirt", "ok", r.stdout.strip().splitlines()[-1]))
    if shutil.which("vagrant") is None:
        out.append(Check("vagrant", level, "vagrant is not installed", f"`{SETUP}` (apt-get install vagrant vagrant-libvirt)"))
    else:
        r = run_quiet(["vagrant", "plugin", "list"], timeout=60)
        if r is None or "vagrant-libvirt" not in r.stdout:
            out.append(Check("vagrant-libvirt", level, "the vagrant-libvirt plugin is missing",
                             "apt-get install vagrant-libvirt"))
        else:
            out.append(Check("vagrant-libvirt", "ok", r.stdout.strip().splitlines()[0]))
    try:
        a = detect_accel()
        if accel == "kvm" and a.mode != "kvm":  # the lab forces KVM where it does not work: VMs would not boot
            out.append(Check("KVM", "fail", f"the lab sets vm.accel: kvm, but KVM does not work here ({a.reason})",
                             "set vm.accel: auto (emulation here), or use a machine with vmx/svm and a usable /dev/kvm"))
        elif accel == "qemu":
            out.append(Check("KVM", "ok", f"the lab sets vm.accel: qemu: VMs run emulated (here: {a.reason})"))
        else:
            out.append(Check("KVM", "ok" if a.mode == "kvm" else "warn",
                             f"VMs run with {a.mode} ({a.reason})",
                             "" if a.mode == "kvm" else "emulation works, only slower (about a minute per boot); "
                             "for KVM use a machine with vmx/svm and a usable /dev/kvm"))
    except Exception as e:  # noqa: BLE001 - doctor reports, never crashes
        out.append(Check("KVM", "warn", f"cannot decide: {e}", f"`{SETUP}` installs QEMU"))
    r = run_quiet(["lsmod"])
    if r is not None and "vboxdrv" in r.stdout:
        out.append(Check("VirtualBox", "warn", "the vboxdrv module is loaded next to KVM",
                         "VirtualBox and KVM cannot both run VMs: `rmmod vboxnetadp vboxnetflt vboxdrv`"))
    return out


def check_engines(lab: Lab) -> list[Check]:
    """What each engine of the lab's containers needs here (each engine's own ``checks``: LXC's
    tools, binding and id map; Podman's runtime, ulimits and each rootless user's ids,
    networking and cgroups). Docker's engine is checked for every lab (``check_engine``)."""
    out: list[Check] = []
    for eng in registry.all_engines():
        users = list(dict.fromkeys(c.user or "" for c in lab.containers if c.engine == eng.name))
        if users:
            out += [Check(name, status, detail, "" if status == "ok" else fix)
                    for name, status, detail, fix in eng.checks(users)]
    return out


def check_tools(required: bool = True) -> list[Check]:
    """The offline image builders. With a lab (``required`` False) a missing one is only a
    warning here: the lab's image checks fail when one of its images needs it."""
    out = []
    for tool, pkg in (("mmdebstrap", "mmdebstrap"), ("busybox", "busybox-static")):
        p = shutil.which(tool) or (Path("/bin/busybox").exists() and "/bin/busybox")
        level = "fail" if required else "warn"
        out.append(Check(tool, "ok" if p else level,
                         p or f"{tool} not found" + ("" if required else " (needed to build images; see the image lines)"),
                         "" if p else f"apt-get install {pkg}"))
    return out


def check_disk(min_gb: float = 5.0) -> list[Check]:
    out = []
    for label, path in (("disk (images)", Path("/var/lib/docker")), ("disk (boxes, labs)", state_dir())):
        probe = path if path.exists() else Path("/")
        free = shutil.disk_usage(probe).free / 2**30
        ok = free >= min_gb
        out.append(Check(label, "ok" if ok else "fail", f"{free:.1f} GiB free on {probe}",
                         "" if ok else f"free at least {min_gb:.0f} GiB: `labkit images rm`, `docker system prune`"))
    return out


def check_arch() -> Check:
    m = platform.machine()
    ok = m in ("x86_64", "amd64")
    return Check("architecture", "ok" if ok else "fail", m,
                 "" if ok else "labkit's images and box are built for amd64 (x86_64)")


def run(students: int = 1, need_vm: bool = True, lab: Lab | None = None, build: bool = False) -> list[Check]:
    """Every check, in the order a user would fix them. With ``lab`` (see run_for_lab), what
    that lab needs too; VM checks are skipped (one "skipped" line) for a lab without VMs."""
    out = [check_arch(), *check_tools(required=lab is None), *check_engine(lab), check_pools(students)]
    out += check_vm_stack(need_vm, lab.vm.accel if lab is not None else None) if need_vm else [skipped_vm_checks()]
    if need_vm:  # one libvirt network per student's VM, from labkit's VM address pool
        out.append(doctor_check(len(lab.students) if lab is not None else students, need_vm))
    if lab is not None:
        out += check_engines(lab)
    if lab is None:
        return out + check_disk()
    engine_ok = any(c.name == "docker engine" and c.status == "ok" for c in out)
    return out + check_lab(lab, build=build, engine_ok=engine_ok)


def skipped_vm_checks() -> Check:
    return Check("VM checks", "skipped", "the lab has no VM: libvirt, Vagrant, KVM, the box, VM memory and boot "
                 "times are not checked")


def run_for_lab(lab: Lab, build: bool = False) -> list[Check]:
    """Every check `labkit up -f lab.yml` (with ``build``: `labkit up --build`) depends on,
    for this lab: a check fails exactly when `up` would."""
    return run(students=len(lab.students) if lab.containers else 0, need_vm=lab.vm.enabled, lab=lab, build=build)
