"""How much a lab needs of a machine: memory, CPU and disk from what `labkit up` measured here
(or estimates), and whether a registry holds an image. Pure arithmetic and reads; nothing is
created."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from labkit.doctor.check import Check
from labkit.paths import state_dir

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
