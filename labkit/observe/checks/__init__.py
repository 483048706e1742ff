"""The kernel-sharing facts K1..K12 (../shared/design/FACTS.md) as checks.

Each check compares hosts side by side: the lab server, each container, each VM. The
per-host checks take the host's probed facts (``labkit.observe.facts.HostFacts``, read through
testinfra) and the server's; a failure raises ``FactFailed`` naming the fact, the hosts
and the values that differed. The same functions serve ``labkit verify`` (pytest over
the live lab, ``test_facts.py`` beside this file) and the Molecule verifiers.
"""
from __future__ import annotations

from typing import NoReturn

from labkit.engines.capabilities import DEFAULT, caps
from labkit.lab import catalog
from labkit.observe.facts import HostFacts
from labkit.observe.report import fmt_disk, fmt_memory

FACTS: dict[str, str] = {
    "K1": "containers share the lab server's kernel (uname -r, uname -v)",
    "K2": "...the same running kernel: same boot_id as the server",
    "K3": "the VM boots its own kernel: own boot_id, release from its own /boot, virtualized",
    "K4": "each container has its distro's own user space (os-release)",
    "K5": "a container image carries no kernel; the VM has one",
    "K6": "containers keep the package manager; a container may run an init (LXC) but never boots a "
          "kernel, Docker's and Podman's PID 1 is no init; the VM's PID 1 is systemd",
    "K7": "containers are isolated user spaces: own pid/mnt/uts/net namespaces",
    "K8": "containers start in seconds; the VM boots an OS (create-to-ready, measured)",
    "K9": "containers are lighter: memory and disk per host (measured)",
    "K10": "a Windows image is refused by the Linux engine",
    "K11": "a container inside the VM runs on the VM's kernel (Docker on Windows/macOS)",
    "K12": "chroot: a distro's files on the server's kernel, no new namespaces",
}
# engines whose containers are system containers: PID 1 is an init, on the server's kernel
INIT_SYSTEMS = {"systemd", "init", "runit", "openrc-init", "s6-svscan"}  # they boot a system: its services
REAPERS = {"tini", "docker-init", "podman-init", "dumb-init", "catatonit"}  # PID 1 that only reaps and passes signals on
PKG_BINARIES = {"apt": "apt-get", "dnf": "dnf", "yum": "yum", "microdnf": "microdnf", "apk": "apk",
                "zypper": "zypper", "pacman": "pacman", "none": "none"}


class FactFailed(AssertionError):
    """A fact did not hold; the message names the fact, the hosts and the values."""


def _fail(fact: str, msg: str) -> NoReturn:
    raise FactFailed(f"{fact}: {msg}")


def _label(h: HostFacts) -> str:
    return h.distro or h.host if h.role == "container" else h.host


def k1(h: HostFacts, server: HostFacts) -> str:
    if h.kernel_release != server.kernel_release:
        _fail("K1", f"{_label(h)} kernel {h.kernel_release} != server {server.kernel_release}")
    if h.kernel_version != server.kernel_version:
        _fail("K1", f"{_label(h)} kernel build '{h.kernel_version}' != server '{server.kernel_version}'")
    return f"kernel {h.kernel_release} = server"


def k2(h: HostFacts, server: HostFacts) -> str:
    if h.boot_id != server.boot_id:
        _fail("K2", f"{_label(h)} boot_id {h.boot_id} != server {server.boot_id} "
                    f"(kernel {h.kernel_release} vs server {server.kernel_release})")
    return f"boot_id {h.boot_id[:8]}... = server"


def k3(vm: HostFacts, server: HostFacts) -> str:
    if vm.boot_id == server.boot_id:
        _fail("K3", f"{vm.host} boot_id {vm.boot_id} == server's: it is not running its own kernel")
    if not vm.own_kernel_image.endswith(f"vmlinuz-{vm.kernel_release}"):
        _fail("K3", f"{vm.host} runs kernel {vm.kernel_release} but /boot/vmlinuz-{vm.kernel_release} is missing")
    if vm.virt not in ("kvm", "qemu"):
        _fail("K3", f"{vm.host} virtualization is '{vm.virt}', expected kvm or qemu")
    return f"own kernel {vm.kernel_release} (server {server.kernel_release}), virt {vm.virt}"


def k4(h: HostFacts, server: HostFacts) -> str:
    d = catalog.get(h.distro) if h.distro else None
    if d is None:
        _fail("K4", f"{h.host} has no labkit.distro label: cannot tell what it should be")
    if d.os_id is None:
        if h.os_id:
            _fail("K4", f"{h.host} ({d.ref}) should have no os-release but reports {h.os_id} {h.os_version}")
        return f"{d.ref}: no os-release (reported as such)"
    if h.os_id != d.os_id or (d.version_id and h.os_version != d.version_id):
        _fail("K4", f"{h.host} made from {d.ref} reports os-release {h.os_id} {h.os_version}, "
                    f"expected {d.os_id} {d.version_id}")
    same_as_server = (h.os_id, h.os_version) == (server.os_id, server.os_version)
    return f"{h.os_pretty}" + (" (same release as the server)" if same_as_server else f" (server: {server.os_pretty})")


def k5(h: HostFacts, server: HostFacts) -> str:
    if h.role == "vm":
        if not h.own_kernel_image or h.kernel_modules != "yes":
            _fail("K5", f"{h.host}: VM without its own kernel files (/boot/vmlinuz-{h.kernel_release}: "
                        f"{h.own_kernel_image or 'missing'}, /lib/modules: {h.kernel_modules})")
        return f"{h.own_kernel_image} and /lib/modules/{h.kernel_release} present"
    if h.own_kernel_image or h.kernel_modules == "yes":
        _fail("K5", f"{_label(h)} carries kernel files: {h.own_kernel_image or ''} "
                    f"/lib/modules/{h.kernel_release}: {h.kernel_modules}")
    return f"no /boot/vmlinuz-{h.kernel_release}, no /lib/modules/{h.kernel_release}"


def k6(h: HostFacts, server: HostFacts) -> str:
    if h.role == "vm":
        if h.pid1 != "systemd":
            _fail("K6", f"{h.host}: VM PID 1 is '{h.pid1}', expected systemd")
        return f"PID 1 systemd, package manager {h.pkg_mgr}"
    d = catalog.get(h.distro)
    want = PKG_BINARIES.get(d.pkg_mgr, d.pkg_mgr)
    if h.pkg_mgr != want:
        _fail("K6", f"{_label(h)}: package manager '{h.pkg_mgr}', expected {d.ref}'s '{want}'")
    engine = getattr(h, "engine", "") or DEFAULT
    if caps(engine).system_container:
        # a system container: an init as PID 1 is what it is for, but no kernel of its own boots
        if h.pid1 not in INIT_SYSTEMS:
            _fail("K6", f"{_label(h)}: {engine} system container's PID 1 is '{h.pid1}', expected an init")
        if (h.kernel_release, h.kernel_version) != (server.kernel_release, server.kernel_version) \
                or h.boot_id != server.boot_id:
            _fail("K6", f"{_label(h)}: {engine} container with init '{h.pid1}' is not on the server's running "
                        f"kernel (kernel {h.kernel_release}, boot_id {h.boot_id}; server {server.kernel_release}, "
                        f"{server.boot_id})")
        return (f"PID 1 {h.pid1} ({engine} system container: an init, but no kernel booted: the server's "
                f"{h.kernel_release}, same boot_id), package manager {h.pkg_mgr}")
    init = getattr(h, "init", "") or "none"
    if init == "systemd":  # the lab chose it: services as on a server, but still no kernel of its own
        if h.pid1 != "systemd":
            _fail("K6", f"{_label(h)}: made with init: systemd, but PID 1 is '{h.pid1}'")
        if (h.kernel_release, h.boot_id) != (server.kernel_release, server.boot_id):
            _fail("K6", f"{_label(h)}: container with systemd is not on the server's running kernel "
                        f"(kernel {h.kernel_release}, boot_id {h.boot_id})")
        return (f"PID 1 systemd (the lab's init: systemd: it starts services, but no kernel booted: the "
                f"server's {h.kernel_release}, same boot_id), package manager {h.pkg_mgr}")
    if h.pid1 in INIT_SYSTEMS:
        _fail("K6", f"{_label(h)}: container PID 1 is the init system '{h.pid1}'")
    if h.pid1 in REAPERS:
        return (f"PID 1 {h.pid1} (init: tini: it reaps orphans and passes signals on; no service runs), "
                f"package manager {h.pkg_mgr}")
    return f"PID 1 {h.pid1}, package manager {h.pkg_mgr}"


NAMESPACES = ("pid", "mnt", "uts", "net")


def k7(h: HostFacts, server: HostFacts, others: list[HostFacts]) -> str:
    for ns in NAMESPACES:
        mine, srv = getattr(h, f"ns_{ns}"), getattr(server, f"ns_{ns}")
        if not mine:
            _fail("K7", f"{_label(h)}: cannot read /proc/1/ns/{ns}")
        if mine == srv:
            _fail("K7", f"{_label(h)} shares the server's {ns} namespace {mine}")
        for o in others:
            if o.host != h.host and getattr(o, f"ns_{ns}") == mine:
                _fail("K7", f"{_label(h)} and {_label(o)} share the {ns} namespace {mine}")
    if h.hostname == server.hostname:
        _fail("K7", f"{_label(h)} has the server's hostname {h.hostname}")
    if h.kernel_release != server.kernel_release:
        _fail("K7", f"{_label(h)}: isolated, but not on the server's kernel ({h.kernel_release})")
    userns = ""
    first = (h.uid_map or "").split(";")[0].split()
    if len(first) == 3 and first != ["0", "0", "4294967295"]:  # rootless Podman, unprivileged LXC
        userns = f", own user namespace (uid 0 is uid {first[1]} outside)"
    return f"own pid/mnt/uts/net namespaces{userns}, hostname {h.hostname}, on the server's kernel"


def k8(h: HostFacts, m: dict | None, vm_seconds: list[float]) -> str:
    if not m or m.get("ready_seconds") is None:
        _fail("K8", f"{h.host}: create-to-ready time not recorded (run `labkit up`)")
    secs = m["ready_seconds"]
    if h.role == "container" and vm_seconds and secs >= min(vm_seconds):
        _fail("K8", f"{_label(h)} took {secs:.1f}s to be ready, not below the VM's {min(vm_seconds):.1f}s")
    return f"ready in {secs:.2f}s ({m['ready_how']})"


def k9(h: HostFacts, m: dict | None) -> str:
    if not m or not m.get("memory_bytes") or not m.get("disk_bytes"):
        _fail("K9", f"{h.host}: memory/disk not recorded ({m})")
    # fmt_memory: BusyBox's few hundred KiB read in KiB, not "0 MiB"
    return f"memory {fmt_memory(m['memory_bytes'])} ({m['memory_how']}), disk {fmt_disk(m['disk_bytes'])} ({m['disk_how']})"
