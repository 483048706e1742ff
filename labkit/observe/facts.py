"""Collect the kernel-sharing facts of each lab host with testinfra.

One shell script per host (POSIX sh, so BusyBox works), run through testinfra's
backends: ``local://`` for the lab server, ``docker://`` for containers (no
Python needed inside), ``ssh://`` with the lab's ssh config for the VM.
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.engines import registry
from labkit.engines.base import HostRow
from labkit.engines.capabilities import DEFAULT
from labkit.errors import NotUp
from labkit.servers.base import Server, default_servers

PROBE = r"""
echo "kernel_release=$(uname -r)"
echo "kernel_version=$(uname -v)"
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
echo "pid1=$(cat /proc/1/comm 2>/dev/null)"
echo "hostname=$(cat /proc/sys/kernel/hostname)"
if [ -r /etc/os-release ]; then
  . /etc/os-release; echo "os_id=$ID"; echo "os_version=${VERSION_ID:-}"; echo "os_pretty=$PRETTY_NAME"
fi
pm=none
for p in apt-get dnf microdnf yum apk zypper pacman; do
  if command -v $p >/dev/null 2>&1; then pm=$p; break; fi
done
echo "pkg_mgr=$pm"
v=$(systemd-detect-virt 2>/dev/null)
if [ -z "$v" ] && [ -f /.dockerenv ]; then v=docker; fi
if [ -z "$v" ] && [ -f /run/.containerenv ]; then v=podman; fi
echo "virt=${v:-unknown}"
r=$(uname -r)
if [ -e "/boot/vmlinuz-$r" ]; then echo "own_kernel_image=/boot/vmlinuz-$r"; fi
if [ -d "/lib/modules/$r" ]; then echo "kernel_modules=yes"; else echo "kernel_modules=no"; fi
for ns in pid mnt uts net; do echo "ns_$ns=$(readlink /proc/1/ns/$ns 2>/dev/null)"; done
# LXC bind-mounts a boot_id of its own over the kernel's (/dev/.lxc-boot-id, new per start):
# say it, and read the kernel's beneath it in a private mount namespace (this line wins)
if [ -e /dev/.lxc-boot-id ] && grep -q ' /proc/sys/kernel/random/boot_id ' /proc/self/mountinfo 2>/dev/null; then
  [ -n "$v" ] || echo "virt=lxc"
  echo "boot_id_engine=$(cat /proc/sys/kernel/random/boot_id)"
  echo "boot_id=$(unshare -m sh -c 'umount /proc/sys/kernel/random/boot_id && cat /proc/sys/kernel/random/boot_id' 2>/dev/null)"
fi
echo "ns_user=$(readlink /proc/1/ns/user 2>/dev/null)"
echo "uid_map=$(while read -r a b c; do printf '%s %s %s; ' "$a" "$b" "$c"; done < /proc/1/uid_map 2>/dev/null)"
"""


@dataclass
class HostFacts:
    host: str
    role: str                      # server, container, vm
    student: str = ""
    distro: str = ""               # the catalogue reference it was made from
    server: str = "localhost"      # the lab server (inventory name) it runs on; a server: itself
    kernel_release: str = ""
    kernel_version: str = ""
    boot_id: str = ""
    boot_id_engine: str = ""       # what the engine shows at the boot_id path (LXC's own), when not the kernel's
    pid1: str = ""
    hostname: str = ""
    os_id: str = ""
    os_version: str = ""
    os_pretty: str = ""
    pkg_mgr: str = ""
    virt: str = ""
    own_kernel_image: str = ""
    kernel_modules: str = ""
    ns_pid: str = ""
    ns_mnt: str = ""
    ns_uts: str = ""
    ns_net: str = ""
    ns_user: str = ""
    uid_map: str = ""              # /proc/1/uid_map: "0 0 4294967295" is no user namespace
    engine: str = ""               # a container's engine: docker, podman, lxc
    engine_user: str = ""          # rootless Podman: the lab server's user it runs as
    init: str = ""                 # a container's init as made (none, tini, systemd; '' its engine's own)
    same_kernel: bool | None = None   # vs the lab server
    same_boot: bool | None = None
    error: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _parse(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def probe_host(host: Any, name: str = "") -> dict[str, str]:
    """Run the probe on a testinfra Host (any backend: local, docker, ssh, ansible)."""
    out = host.run(PROBE)
    if out.rc != 0 or "boot_id=" not in out.stdout:
        raise NotUp(f"cannot read facts from {name or host}: {out.stderr.strip() or 'rc ' + str(out.rc)}")
    return _parse(out.stdout)


def probe(spec: str, ssh_config: Path | None = None) -> dict[str, str]:
    """Run the probe on one testinfra host spec (``local://``, ``docker://name``, ``ssh://name``)."""
    import testinfra

    kwargs = {"ssh_config": str(ssh_config), "sudo": True} if ssh_config else {}
    return probe_host(testinfra.get_host(spec, **kwargs), spec)


def host_facts(host: Any, name: str, role: str, student: str = "", distro: str = "") -> HostFacts:
    """HostFacts of a testinfra Host, e.g. a Molecule instance seen by the testinfra verifier."""
    return _fill(HostFacts(name, role, student, distro), probe_host(host, name))


def _fill(hf: HostFacts, raw: dict[str, str]) -> HostFacts:
    for k, v in raw.items():
        if hasattr(hf, k) and k not in ("extra",):
            setattr(hf, k, v)
    return hf


def server_label(name: str, local: bool) -> str:
    """How a lab server appears among the hosts: ``lab-server`` for this machine, else its name."""
    return "lab-server" if local else name


def _probe_container(row: HostRow) -> dict[str, str]:
    """A container, through its engine's own exec (an engine may probe its own way: LXC's root
    keeps its capabilities, to read the kernel's boot_id; a remote server's engine is reached
    the way its rows say)."""
    import testinfra  # testinfra (and pytest with it) is loaded only when facts are read

    argv = registry.of(row).probe_argv(row)
    return probe_host(_Wrapped(testinfra.get_host("local://"), shlex.join(argv)), row.name)


class _Wrapped:
    """A testinfra host whose commands run through a prefix (``docker -H ... exec NAME sh -c``)."""

    def __init__(self, host: Any, prefix: str) -> None:
        self.host, self.prefix = host, prefix

    def run(self, script: str) -> Any:
        return self.host.run(f"{self.prefix} {shlex.quote(script)}")


def collect(hosts: Sequence[Mapping[str, Any]], ssh_config: Path | None = None, jobs: int = 8,
            servers: Sequence[Server] | None = None) -> list[HostFacts]:
    """Facts of every lab server followed by ``hosts`` (``HostRow``s, or the mappings
    ``status --json`` prints)."""
    servers = servers or default_servers()
    todo: list[tuple[HostFacts, tuple[str, Any, Any]]] = []
    for s in servers:
        spec, kw = s.testinfra_spec()
        todo.append((HostFacts(server_label(s.name, s.local), "server", server=s.name), ("server", spec, kw)))
    for h in map(HostRow.of, hosts):
        hf = HostFacts(h.name, h.role, h.student, h.distro, server=h.server or "localhost")
        if h.role == "container":
            hf.engine, hf.engine_user, hf.init = h.engine or DEFAULT, h.user, h.init
        if h.engine:  # a container: through its engine's exec
            todo.append((hf, ("container", h, None)))
        else:  # a VM: over SSH, by its spec
            todo.append((hf, ("spec", h.spec, None)))

    def one(item: tuple[HostFacts, tuple[str, Any, Any]]) -> HostFacts:
        hf, (kind, a, b) = item
        try:
            if kind == "server":
                import testinfra  # loaded only when facts are read

                raw = probe_host(testinfra.get_host(a, **b), hf.host)
            elif kind == "container":
                raw = _probe_container(a)
            else:
                raw = probe(a, ssh_config if a.startswith("ssh://") else None)
            _fill(hf, raw)
        except Exception as e:  # a host that cannot be read is reported, not fatal
            hf.error = str(getattr(e, "message", e)).strip().splitlines()[0][:200]
        return hf

    with ThreadPoolExecutor(max_workers=jobs) as ex:
        results = list(ex.map(one, todo))
    by_server = {r.server: r for r in results if r.role == "server"}
    for hf in results:
        srv = by_server.get(hf.server)
        if hf.role != "server" and not hf.error and srv is not None and not srv.error:
            hf.same_kernel = (hf.kernel_release, hf.kernel_version) == (srv.kernel_release, srv.kernel_version)
            hf.same_boot = hf.boot_id == srv.boot_id
    return results


_BY_INVENTORY: dict[str, HostFacts] = {}


def inventory_host_facts(host: Any) -> HostFacts:
    """HostFacts of a testinfra host of the ansible backend (a Molecule instance), probed once
    per process; its role, student and distro come from its inventory variables."""
    v = host.ansible.get_variables()
    name = v["inventory_hostname"]
    if name not in _BY_INVENTORY:
        _BY_INVENTORY[name] = host_facts(host, name, v["labkit_role"], v.get("labkit_student", ""),
                                         v.get("labkit_distro", ""))
    return _BY_INVENTORY[name]


def local_server_facts() -> HostFacts:
    """HostFacts of this machine, the lab server."""
    import testinfra

    return host_facts(testinfra.get_host("local://"), "lab-server", "server")
