"""`labkit doctor`: is this machine ready for `labkit up`? Each problem comes with its fix."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit import paths
from labkit.errors import LabkitError
from labkit.paths import state_dir

SETUP = "bash scripts/setup.sh"
DEFAULT_POOL_NETWORKS = 31  # Docker's built-in pools: 172.17-31/16 and 192.168/16 in /20s


@dataclass
class Check:
    name: str
    status: str        # ok, warn, fail (fail blocks `labkit up`), skipped (not checked: never a pass)
    detail: str
    fix: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _run(cmd: list[str], timeout: float = 15) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def check_engine() -> list[Check]:
    from labkit.engines import docker as engine
    from labkit.errors import EngineError

    engine.reset()
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
    r = _run(["virsh", "-c", "qemu:///system", "version"])
    if r is None or r.returncode != 0:
        why = "virsh not installed" if r is None else (r.stderr.strip().splitlines() or ["no answer"])[-1]
        out.append(Check("libvirt", level, f"libvirtd is not answering ({why})",
                         f"`{SETUP}` starts virtlogd and libvirtd, or run `virtlogd -d; libvirtd -d` as root"))
    else:
        out.append(Check("libvirt", "ok", r.stdout.strip().splitlines()[-1]))
    if shutil.which("vagrant") is None:
        out.append(Check("vagrant", level, "vagrant is not installed", f"`{SETUP}` (apt-get install vagrant vagrant-libvirt)"))
    else:
        r = _run(["vagrant", "plugin", "list"], timeout=60)
        if r is None or "vagrant-libvirt" not in r.stdout:
            out.append(Check("vagrant-libvirt", level, "the vagrant-libvirt plugin is missing",
                             "apt-get install vagrant-libvirt"))
        else:
            out.append(Check("vagrant-libvirt", "ok", r.stdout.strip().splitlines()[0]))
    try:
        from labkit.vm.virt import detect_accel

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
    r = _run(["lsmod"])
    if r is not None and "vboxdrv" in r.stdout:
        out.append(Check("VirtualBox", "warn", "the vboxdrv module is loaded next to KVM",
                         "VirtualBox and KVM cannot both run VMs: `rmmod vboxnetadp vboxnetflt vboxdrv`"))
    return out


def check_lxc() -> list[Check]:
    """What a lab with LXC containers needs here: LXC and newuidmap, the lxc binding in labkit's
    Python, root's id map, the cgroup controllers of the limits, veth for its network."""
    from labkit.engines import lxc as engine_lxc

    return [Check(name, status, detail, "" if status == "ok" else fix)
            for name, status, detail, fix in engine_lxc.checks()]


def check_podman(users: list[str]) -> list[Check]:
    """What a lab with Podman containers needs here: Podman, a runtime and ulimits that work on
    this machine, and for each rootless user subuid/subgid, newuidmap, networking, cgroups."""
    from labkit.engines import podman as engine_podman

    return [Check(name, status, detail, "" if status == "ok" else fix)
            for name, status, detail, fix in engine_podman.checks(users)]


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


def run(students: int = 1, need_vm: bool = True, lab=None, build: bool = False) -> list[Check]:
    """Every check, in the order a user would fix them. With ``lab`` (see run_for_lab), what
    that lab needs too; VM checks are skipped (one "skipped" line) for a lab without VMs."""
    out = [check_arch(), *check_tools(required=lab is None), *check_engine(), check_pools(students)]
    out += check_vm_stack(need_vm, lab.vm.accel if lab is not None else None) if need_vm else [skipped_vm_checks()]
    if need_vm:  # one libvirt network per student's VM, from labkit's VM address pool
        from labkit.vm.vmnet import doctor_check

        out.append(doctor_check(len(lab.students) if lab is not None else students, need_vm))
    if lab is not None and any(getattr(c, "engine", "docker") == "lxc" for c in lab.containers):
        out += check_lxc()
    if lab is not None and any(getattr(c, "engine", "docker") == "podman" for c in lab.containers):
        out += check_podman(list(dict.fromkeys(c.user or "" for c in lab.containers if c.engine == "podman")))
    if lab is None:
        return out + check_disk()
    engine_ok = any(c.name == "docker engine" and c.status == "ok" for c in out)
    return out + check_lab(lab, build=build, engine_ok=engine_ok)


# --------------------------------------------------------------------------- what one lab needs
#
# `labkit doctor -f lab.yml` checks what *this* lab needs, so that it fails exactly when
# `labkit up` (with `--build`: `labkit up --build`) would. Sizes come from what `labkit up`
# measured on this machine (every lab's measurements.json, with its saved lab.json); until
# something is measured, from these estimates (measured on a 2-core machine without KVM):

MiB, GiB = 2**20, 2**30
# Host RAM a VM takes beyond vm.memory: under emulation TCG's translation cache (capped at
# tb-size=128 by labkit's wrapper) and QEMU itself (measured: 111 MiB for a 512 MiB VM); KVM
# has no translation cache.
QEMU_OVERHEAD_MIB = {"qemu": 192, "kvm": 64}
# One VM booting alone, `vagrant up` to SSH (measured under TCG on 2 cores: 45-65 s, 77 s
# while the lab's containers were provisioned next to it).
BOOT_SECONDS = {"qemu": 60.0, "kvm": 20.0}
# Under emulation each further VM booting at once costs about this many times one boot's
# time in core-seconds: the fit of one VM in 55 s and three at once in 184-195 s on 2 cores.
EXTRA_BOOT_FACTOR = 2.45
BOOT_TIMEOUT = {"qemu": 600, "kvm": 300}   # what `labkit up` gives Vagrant (api._vm_settings)
UP_FORKS = 20                              # Ansible forks of `labkit up`: hosts worked on at once
UP_BASE_MIB = 150                          # labkit, ansible-runner and ansible-playbook during `up`
FORK_MIB = 50                              # one Ansible worker (measured 50 MiB)
VAGRANT_MIB = 150                          # one `vagrant up` (Ruby with vagrant-libvirt) per booting VM
SHIM_MIB = 14                              # containerd-shim of one container (measured 13.5 MiB)
IMAGE_BYTES = {"debian": 200 * MiB, "busybox": 4 * MiB, "registry": 300 * MiB}  # measured 113-170 MB, 2 MB
CONTAINER_BYTES = 200 * MiB                # writable layer after provisioning (measured 111-147 MB)
BOX_BYTES = 650 * MiB                      # the box's qcow2 (measured 619 MiB)
BOX_BUILD_BYTES = 3 * GiB                  # mmdebstrap root, ext4 and raw images while the box is built
VM_DISK_BYTES = 256 * MiB                  # a VM's overlay in libvirt's pool (measured 132 MiB after `up`)
DISK_FLOOR_GIB = 5.0                       # less free than this fails, as check_disk()
TIGHT = 0.8                                # memory: warn above this share of what is available
REGISTRY_TIMEOUT = 4.0                     # seconds per registry endpoint, DNS included
MANIFEST_ACCEPT = ", ".join((
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
))


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def _mib(n: float) -> str:
    return f"{n / MiB:.0f} MiB"


def parse_bytes(text: str) -> int:
    """Docker's memory notation, as limits.memory takes it: ``256m``, ``1g``, ``512k`` or bytes."""
    t = str(text).strip().lower()
    mult = {"k": 2**10, "m": MiB, "g": GiB}.get(t[-1:], 1)
    return int(t[:-1] if mult != 1 else t) * mult


def mem_available(meminfo: str) -> int:
    """MemAvailable of /proc/meminfo text, in bytes."""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no MemAvailable line in /proc/meminfo")


def qemu_overhead(samples: list[tuple[int, int]], accel: str) -> tuple[int, str]:
    """Host RAM one VM takes beyond its vm.memory (bytes), and where the number comes from.

    ``samples`` are (qemu RSS bytes, vm.memory MiB) as `labkit up` measured them. RSS above
    vm.memory is QEMU's own; the largest such excess is used. A guest that has not touched
    all its memory yet tells nothing about QEMU's share: then the estimate is used.
    """
    excess = [rss - mem * MiB for rss, mem in samples if rss > mem * MiB]
    if excess:
        return max(excess), f"measured QEMU overhead ({len(excess)} VM(s) measured by `labkit up`)"
    return QEMU_OVERHEAD_MIB[accel] * MiB, "estimated QEMU overhead (no VM measured here yet)"


def support_bytes(hosts: int, vms_booting: int, containers: int) -> int:
    """Memory `labkit up` itself takes while it runs (Ansible, Vagrant), plus containerd-shims."""
    return (UP_BASE_MIB + min(hosts, UP_FORKS) * FORK_MIB + min(vms_booting, UP_FORKS) * VAGRANT_MIB
            + containers * SHIM_MIB) * MiB


@dataclass
class Sizing:
    """Memory (bytes) that starting a lab's missing hosts takes: the memory check's input."""

    vms: int = 0                                   # VMs to start
    vm_each: int = 0                               # vm.memory + QEMU overhead
    # per distro: (distro, containers to start, expected each, limit each, expected was measured)
    containers: list[tuple[str, int, int, int, bool]] = field(default_factory=list)
    support: int = 0                               # support_bytes()
    running: str = ""                              # hosts of the lab already running (not counted)

    @property
    def expected(self) -> int:
        return self.vms * self.vm_each + sum(n * e for _, n, e, _, _ in self.containers) + self.support

    @property
    def worst(self) -> int:
        """Every container at its memory limit."""
        return self.vms * self.vm_each + sum(n * lim for _, n, _, lim, _ in self.containers) + self.support


def memory_check(s: Sizing, available: int, vm_how: str = "") -> Check:
    """fail when what the lab's new hosts are expected to use does not fit in ``available``;
    warn when it is tight (over TIGHT of it) or when containers at their limits would not fit."""
    parts = []
    if s.vms:
        parts.append(f"{s.vms} VM(s) x {_mib(s.vm_each)} (vm.memory + {vm_how})")
    if s.containers:
        parts.append("containers: " + ", ".join(
            f"{n} x {d} " + (f"~{_mib(e)} (measured)" if measured else f"{_mib(lim)} (its limit: not measured here)")
            for d, n, e, lim, measured in s.containers))
    parts.append(f"`labkit up` itself and containerd-shims {_mib(s.support)}")
    if s.running:
        parts.append(f"already running, not counted: {s.running}")
    detail = (f"{_gib(s.expected)} needed of {_gib(available)} available: " + "; ".join(parts)
              + f"; {_gib(s.worst)} with every container at its limit")
    if s.expected > available:
        return Check("memory", "fail", detail,
                     "fewer students per lab server (more servers with -i), a smaller vm.memory or limits.memory")
    if s.expected > TIGHT * available or s.worst > available:
        return Check("memory", "warn", detail + " (tight)",
                     "it should fit, with little room: a smaller vm.memory or limits.memory, or more lab servers")
    return Check("memory", "ok", detail)


def boot_seconds(n: int, cores: int, one: float, emulated: bool) -> float:
    """How long each of ``n`` VMs booting at once takes to reach SSH (one alone: ``one`` s).

    Emulation is CPU-bound: each further VM adds EXTRA_BOOT_FACTOR x ``one`` core-seconds,
    shared by the cores (1 VM 55 s, 3 at once about 190 s on 2 cores). With KVM boots
    slow down only once the VMs outnumber the cores.
    """
    if n <= 0:
        return 0.0
    if emulated:
        return one * (1 + (n - 1) * EXTRA_BOOT_FACTOR / max(1, cores))
    return one * max(1.0, n / max(1, cores))


def cpu_check(n: int, vcpus: int, cores: int, accel: str, one: float, one_how: str, running: int = 0) -> Check:
    """VM boots vs cores: warn with the estimated boot time when boots at once slow each
    other down; fail when that estimate passes the boot timeout `labkit up` gives Vagrant."""
    emulated = accel == "qemu"
    how = "QEMU emulation (TCG)" if emulated else "KVM"
    if n <= 0:
        return Check("VM boot", "ok", f"no VM to boot ({running} already running)")
    at_once = min(n, UP_FORKS)
    each = boot_seconds(at_once, cores, one, emulated)
    rounds = -(-n // UP_FORKS)
    detail = (f"{n} VM(s) to boot" + (f", {at_once} at once" if n > 1 else "")
              + f", under {how} on {cores} core(s): about {each:.0f} s" + (" each" if n > 1 else "")
              + f" (one alone: {one:.0f} s, {one_how})"
              + (f"; about {each * rounds / 60:.0f} min for all ({rounds} rounds of {UP_FORKS})" if rounds > 1 else ""))
    if each > BOOT_TIMEOUT[accel]:
        return Check("VM boot", "fail", detail + f": over the {BOOT_TIMEOUT[accel]} s Vagrant is given to boot",
                     "bring the lab up in groups (`labkit up --student ID ...`), on more lab servers (-i), "
                     "or on a machine with KVM or more cores")
    if at_once > 1 and (at_once * vcpus > cores or each >= 2 * one):
        return Check("VM boot", "warn", detail + ": the boots share the cores",
                     "expect that wait; KVM or more cores make it shorter, so do groups (`--student ID`)")
    return Check("VM boot", "ok", detail)


def disk_check(label: str, need: int, free: int, what: list[str]) -> Check:
    """fail when the lab's images, box and hosts do not fit, or less than DISK_FLOOR_GIB is
    free; warn when fewer than DISK_FLOOR_GIB would be left."""
    detail = (f"this lab needs about {_gib(need)} here" + (f" ({', '.join(what)})" if what else "")
              + f"; {_gib(free)} free")
    fix = f"free space there (`labkit images rm`, `docker system prune`), at least {DISK_FLOOR_GIB:.0f} GiB beyond the lab's"
    if need > free or free < DISK_FLOOR_GIB * GiB:
        return Check(label, "fail", detail, fix)
    if free - need < DISK_FLOOR_GIB * GiB:
        return Check(label, "warn", detail + f": less than {DISK_FLOOR_GIB:.0f} GiB would be left", fix)
    return Check(label, "ok", detail)


def split_image_ref(ref: str) -> tuple[str, str, str]:
    """``127.0.0.1:5000/library/ubuntu:24.04`` -> (registry, repository, tag); Docker Hub is ``docker.io``."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host = first
    else:
        host, rest = "docker.io", ref
    if host == "docker.io" and "/" not in rest:
        rest = "library/" + rest
    name = rest.rsplit("/", 1)[-1]
    if ":" in name:
        repo, tag = rest.rsplit(":", 1)
    else:
        repo, tag = rest, "latest"
    return host, repo, tag


def registry_bases(host: str, mirrors: list[str] | None = None) -> list[str]:
    """The endpoints the engine pulls ``host``'s images from: Docker Hub goes through the
    engine's registry-mirrors first; another registry answers HTTPS, or plain HTTP when insecure."""
    if host == "docker.io":
        return [m.rstrip("/") for m in mirrors or []] + ["https://registry-1.docker.io"]
    return [f"https://{host}", f"http://{host}"]


_PROBE_RANK = {"found": 0, "missing": 1, "answers": 2, "unreachable": 3}


def best_probe(results: list[tuple[str, str]]) -> tuple[str, str]:
    """The most telling of several endpoints' answers: found > missing > answers > unreachable."""
    if not results:
        return "unreachable", "no endpoint"
    best = min(results, key=lambda r: _PROBE_RANK[r[0]])
    if best[0] == "unreachable":
        return best[0], "; ".join(d for _, d in results)
    return best


def probe_registry(base: str, repo: str, tag: str, timeout: float = REGISTRY_TIMEOUT) -> tuple[str, str]:
    """Ask one registry endpoint for a manifest, within ``timeout`` seconds whatever DNS does:
    found (it has it), missing (404), answers (it answers, e.g. a login is needed) or unreachable."""
    import urllib.error
    import urllib.request

    result = ["unreachable", f"{base}: no answer within {timeout:.0f} s"]

    def go() -> None:
        req = urllib.request.Request(f"{base}/v2/{repo}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": MANIFEST_ACCEPT})
        try:
            with urllib.request.urlopen(req, timeout=timeout):
                result[:] = ["found", f"{base} has {repo}:{tag}"]
        except urllib.error.HTTPError as e:
            result[:] = ["missing" if e.code == 404 else "answers", f"{base} answers HTTP {e.code}"]
        except (urllib.error.URLError, OSError, ValueError) as e:
            result[:] = ["unreachable", f"{base}: {getattr(e, 'reason', None) or e}"]

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout + 1)
    return result[0], result[1]


def registry_mirrors(daemon_json: Path = Path("/etc/docker/daemon.json")) -> list[str]:
    try:
        return list(json.loads(daemon_json.read_text()).get("registry-mirrors") or [])
    except (OSError, ValueError, AttributeError):
        return []


# ---- machine side of the lab checks


@dataclass
class Measured:
    """What `labkit up` measured on this machine, across labs (see measure.py)."""

    vm_samples: list[tuple[int, int, str | None]] = field(default_factory=list)  # qemu RSS, vm.memory MiB, accel
    boots: list[tuple[float, str | None]] = field(default_factory=list)  # one VM booting alone: seconds, accel
    container_mem: dict[str, int] = field(default_factory=dict)       # distro slug -> largest usage


def one_boot(seconds: float, at_once: int, cores: int, emulated: bool) -> float:
    """A boot measured with ``at_once`` VMs booting together, as the time of one alone
    (boot_seconds' model backwards)."""
    return seconds / boot_seconds(max(1, at_once), cores, 1.0, emulated)


def measured() -> Measured:
    """Every lab's saved measurements. A VM's memory needs its lab's spec (lab.json, for
    vm.memory); a boot time needs how it booted (accel, VMs at once, cores: recorded with it)
    or a lab of one VM. Read only: nothing is created."""
    m = Measured()
    for f in sorted((state_dir() / "labs").glob("*/measurements.json")):
        try:
            rows = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        try:
            spec = json.loads((f.parent / "lab.json").read_text())
        except (OSError, ValueError):
            spec = None
        vm = (spec or {}).get("vm") or {}
        one_vm = spec is not None and bool(vm.get("enabled", True)) and len(spec.get("students") or []) == 1
        for row in rows.values():
            if row.get("role") == "vm":
                acc = row.get("accel")
                if row.get("memory_bytes") and spec is not None:
                    mem = vm.get("memory", 512)
                    mem_mib = int(mem) if str(mem).isdigit() else parse_bytes(mem) // MiB
                    m.vm_samples.append((int(row["memory_bytes"]), mem_mib, acc))
                secs, at_once, cores = row.get("ready_seconds"), row.get("boots_at_once"), row.get("server_cores")
                if secs and at_once and cores and acc:
                    m.boots.append((one_boot(float(secs), int(at_once), int(cores), acc == "qemu"), acc))
                elif secs and one_vm:
                    m.boots.append((float(secs), acc))
            elif row.get("role") == "container" and row.get("memory_bytes") is not None:
                slug = str(row.get("host", "")).rsplit("-", 1)[-1]
                m.container_mem[slug] = max(m.container_mem.get(slug, 0), int(row["memory_bytes"]))
    return m


def _virsh_names(*args: str) -> set[str] | None:
    r = _run(["virsh", "-q", "-c", "qemu:///system", "list", "--name", *args], timeout=20)
    if r is None or r.returncode != 0:
        return None
    return {ln.strip() for ln in r.stdout.splitlines() if ln.strip()}


def _pool_path() -> Path:
    r = _run(["virsh", "-q", "-c", "qemu:///system", "pool-dumpxml", "default"], timeout=20)
    if r is not None and r.returncode == 0 and "<path>" in r.stdout:
        return Path(r.stdout.split("<path>", 1)[1].split("</path>", 1)[0].strip())
    return Path("/var/lib/libvirt/images")


def _fs(path: Path) -> tuple[int, Path]:
    """(device, the nearest existing folder) of a path that may not exist yet."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p.stat().st_dev, p


def check_image(d, registry: str | None, build: bool, mirrors: list[str]) -> tuple[Check, int]:
    """One distro's image: present, buildable here or pullable. Returns the check and the
    bytes its image will take on the engine's disk (0 when present)."""
    from labkit.images import build as images

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
    from labkit.vm import boxes

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


def check_lab(lab, build: bool = False, engine_ok: bool = True) -> list[Check]:
    """What this lab needs of this machine: its images, its box, memory and CPU for its hosts
    (from measured sizes), disk. Hosts of the lab that already run need nothing more."""
    from labkit.api import verbs as api
    from labkit.lab import catalog
    from labkit.vm.vms import vm_name

    out: list[Check] = []
    registry = lab.registry or catalog.default_registry()
    m = measured()
    hosts = api.container_plan(lab)
    running_ct: set[str] = set()
    existing_ct: set[str] = set()
    docker_root = Path("/var/lib/docker")
    disk: list[tuple[Path, int, str]] = []    # (where, bytes, what)

    # images
    if not lab.containers:
        pass
    elif not engine_ok:
        out.append(Check("images", "skipped", "not checked: the Docker engine is not answering (see above)"))
    else:
        from labkit.engines import docker as engine

        c = engine.client(timeout=10)
        docker_root = Path(c.info().get("DockerRootDir") or docker_root)
        for ct in c.containers.list(all=True, filters={"label": f"labkit.lab={lab.name}"}):
            existing_ct.add(ct.name)
            if ct.status == "running":
                running_ct.add(ct.name)
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
    new_ct = [h for h in hosts if h["name"] not in existing_ct]
    if new_ct:
        disk.append((docker_root, len(new_ct) * CONTAINER_BYTES, f"{len(new_ct)} container(s)"))

    # the VM: box, boots
    vms_to_start, vm_each, vm_how = 0, 0, ""
    pool = _pool_path() if lab.vm.enabled else None
    if lab.vm.enabled:
        from labkit.vm import boxes
        from labkit.vm.virt import detect_accel

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
        if not boxes.pool_volumes(boxes.box_volume_prefix(lab.vm.box)):
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
        n = sum(1 for h in hosts if h["distro"] == ct.distro and h["name"] not in running_ct)
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


def skipped_vm_checks() -> Check:
    return Check("VM checks", "skipped", "the lab has no VM: libvirt, Vagrant, KVM, the box, VM memory and boot "
                 "times are not checked")


def run_for_lab(lab, build: bool = False) -> list[Check]:
    """Every check `labkit up -f lab.yml` (with ``build``: `labkit up --build`) depends on,
    for this lab: a check fails exactly when `up` would."""
    return run(students=len(lab.students) if lab.containers else 0, need_vm=lab.vm.enabled, lab=lab, build=build)
