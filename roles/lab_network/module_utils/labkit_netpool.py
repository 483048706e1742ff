"""The address pool of the students' VM networks: which subnets are taken on a lab server
and which one a student's libvirt network gets.

Standard library only: Ansible ships this file to every lab server with the module
``labkit_vm_network`` (role module_utils), and ``labkit doctor`` loads it on this machine
(``labkit.vmnet``), so both count the pool the same way.

A student's subnet is picked deterministically: the pool's /prefix slots are tried from a
slot chosen by a hash of ``<lab>/<student>``, skipping every slot that overlaps a taken
range (another libvirt network, an address or route of the server, the container engine's
address pools). A network that exists keeps its subnet, so addresses stay across runs.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
import xml.etree.ElementTree as ET

# libvirt <metadata> namespace: marks a network as labkit's and names its lab and student
OWNER_NS = "urn:labkit:network:1"
# Docker's built-in address pools (daemon.json without default-address-pools):
# 172.17.0.0/16 .. 172.31.0.0/16 and 192.168.0.0/16
DOCKER_DEFAULT_POOLS = [f"172.{i}.0.0/16" for i in range(17, 32)] + ["192.168.0.0/16"]


def bridge_name(lab: str, student: str) -> str:
    """The Linux bridge of a student's VM network: ``lkv`` + 10 hex digits (15 chars max)."""
    return "lkv" + hashlib.sha256(f"{lab}/{student}".encode()).hexdigest()[:10]


def slots(pool: str, prefix: int) -> int:
    """How many /prefix subnets the pool has."""
    net = ipaddress.ip_network(pool)
    if prefix < net.prefixlen or prefix > 30:
        raise ValueError(f"VM network size /{prefix} does not fit pool {pool} (needs /{net.prefixlen}../30)")
    return 2 ** (prefix - net.prefixlen)


def subnet_at(pool: str, prefix: int, i: int) -> ipaddress.IPv4Network:
    net = ipaddress.ip_network(pool)
    size = 2 ** (32 - prefix)
    return ipaddress.ip_network(f"{net.network_address + i * size}/{prefix}")


def _overlaps(sub, taken) -> bool:
    return any(sub.overlaps(t) for t in taken)


def pick(pool: str, prefix: int, key: str, taken: list) -> ipaddress.IPv4Network | None:
    """The subnet for ``key`` (``<lab>/<student>``): the first free slot from its hashed slot on."""
    n = slots(pool, prefix)
    start = int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % n
    for k in range(n):
        sub = subnet_at(pool, prefix, (start + k) % n)
        if not _overlaps(sub, taken):
            return sub
    return None


def free(pool: str, prefix: int, taken: list) -> int:
    """How many /prefix subnets of the pool overlap nothing taken."""
    return sum(1 for i in range(slots(pool, prefix)) if not _overlaps(subnet_at(pool, prefix, i), taken))


def docker_pools(daemon_json: str = "/etc/docker/daemon.json") -> list:
    """The container engine's address pools (all of them taken, used or not)."""
    try:
        with open(daemon_json) as f:
            pools = json.load(f).get("default-address-pools")
    except (OSError, ValueError):
        pools = None
    bases = [p["base"] for p in pools] if pools else DOCKER_DEFAULT_POOLS
    return [ipaddress.ip_network(b, strict=False) for b in bases]


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def host_networks() -> list:
    """IPv4 ranges of the server's addresses and routes (every table)."""
    out = []
    for cmd in (["ip", "-j", "-4", "addr", "show"], ["ip", "-j", "-4", "route", "show", "table", "all"]):
        try:
            p = _run(cmd)
            data = json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else []
        except (OSError, ValueError, subprocess.TimeoutExpired):
            data = []
        for item in data:
            if "addr_info" in item:
                nets = [f"{a['local']}/{a.get('prefixlen', 32)}" for a in item["addr_info"] if a.get("local")]
            else:
                dst = item.get("dst", "")
                nets = [] if dst in ("", "default") or item.get("type") in ("broadcast",) else [dst]
            for n in nets:
                try:
                    net = ipaddress.ip_network(n, strict=False)
                except ValueError:
                    continue
                if net.version == 4 and not net.is_loopback and net.prefixlen > 0:
                    out.append(net)
    return out


def parse_network(xml: str) -> dict:
    """Name, bridge, IPv4 subnet, DHCP range, forward mode and labkit owner of a libvirt network."""
    root = ET.fromstring(xml)
    info = {"name": root.findtext("name", ""), "bridge": "", "subnet": None, "gateway": "", "dhcp": None,
            "forward": "", "lab": None, "student": None}
    br = root.find("bridge")
    if br is not None:
        info["bridge"] = br.get("name", "")
    fw = root.find("forward")
    if fw is not None:
        info["forward"] = fw.get("mode", "nat")
    for ip in root.findall("ip"):
        if ip.get("family", "ipv4") != "ipv4" or not ip.get("address"):
            continue
        mask = ip.get("netmask") or ip.get("prefix") or "24"
        iface = ipaddress.ip_interface(f"{ip.get('address')}/{mask}")
        info["subnet"], info["gateway"] = iface.network, str(iface.ip)
        rng = ip.find("dhcp/range")
        if rng is not None:
            info["dhcp"] = (rng.get("start"), rng.get("end"))
        break
    owner = root.find(f"metadata/{{{OWNER_NS}}}owner")
    if owner is not None:
        info["lab"], info["student"] = owner.get("lab"), owner.get("student")
    return info


class LibvirtError(Exception):
    pass


def virsh(uri: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return _run(["virsh", "-q", "-c", uri, *args], timeout=timeout)


def network_names(uri: str) -> tuple[list[str], set[str]]:
    """(every libvirt network's name, the active ones). LibvirtError when libvirtd does not answer."""
    p = virsh(uri, "net-list", "--all", "--name")
    if p.returncode != 0:
        raise LibvirtError((p.stderr.strip().splitlines() or [f"virsh exit {p.returncode}"])[-1])
    names = [n.strip() for n in p.stdout.splitlines() if n.strip()]
    active = {n.strip() for n in virsh(uri, "net-list", "--name").stdout.splitlines() if n.strip()}
    return names, active


def network_info(uri: str, name: str, active: bool) -> dict | None:
    """One libvirt network, parsed, with ``active``; None when it is gone."""
    d = virsh(uri, "net-dumpxml", name)
    if d.returncode != 0:
        return None
    info = parse_network(d.stdout)
    info["active"] = active
    return info


def libvirt_networks(uri: str) -> list[dict]:
    """Every libvirt network of the server (parsed), with ``active``. LibvirtError when
    libvirtd does not answer."""
    names, active = network_names(uri)
    return [i for i in (network_info(uri, n, n in active) for n in names) if i is not None]


def taken(networks: list[dict], daemon_json: str = "/etc/docker/daemon.json", skip: str | None = None) -> list:
    """Every IPv4 range a new VM network must not overlap (``skip``: a network's own name)."""
    out = [n["subnet"] for n in networks if n["subnet"] is not None and n["name"] != skip]
    return out + host_networks() + docker_pools(daemon_json)


DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"


def network_xml(name: str, lab: str, student: str, bridge: str, subnet) -> str:
    """A NAT network with DHCP for one student's VM: gateway .1, the rest for DHCP.

    Its dnsmasq does not ping an address before it offers it (``no-ping``): dnsmasq waits
    3 s for an echo that never comes on a network of one VM, 3 of the VM's 22 s from start to
    lease under emulation. The network is the student's alone, so nothing else holds an address."""
    hosts = list(subnet.hosts())
    gw, first, last = hosts[0], hosts[1], hosts[-1]
    return (f"<network xmlns:dnsmasq='{DNSMASQ_NS}'>\n  <name>{name}</name>\n"
            f"  <metadata>\n    <labkit:owner xmlns:labkit='{OWNER_NS}' lab='{lab}' student='{student}'/>\n"
            f"  </metadata>\n  <forward mode='nat'/>\n  <bridge name='{bridge}' stp='on' delay='0'/>\n"
            f"  <ip address='{gw}' netmask='{subnet.netmask}'>\n"
            f"    <dhcp>\n      <range start='{first}' end='{last}'/>\n    </dhcp>\n  </ip>\n"
            f"  <dnsmasq:options>\n    <dnsmasq:option value='no-ping'/>\n  </dnsmasq:options>\n</network>\n")


def describe(info: dict) -> dict:
    """What playbooks get of a student's VM network."""
    return {"name": info["name"], "student": info["student"], "bridge": info["bridge"],
            "subnet": str(info["subnet"]), "gateway": info["gateway"],
            "dhcp_start": (info["dhcp"] or ("", ""))[0], "dhcp_end": (info["dhcp"] or ("", ""))[1]}
