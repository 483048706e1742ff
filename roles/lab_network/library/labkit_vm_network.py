#!/usr/bin/python
"""Ansible module: the students' libvirt networks of a labkit lab on a lab server."""
from __future__ import annotations

DOCUMENTATION = r"""
module: labkit_vm_network
short_description: One libvirt NAT network per student VM, its subnet from labkit's pool
description:
  - C(present) makes sure each student of C(networks) has the libvirt network C(name)
    (bridge C(lkv<hash of lab/student>), NAT, DHCP), defined and running. A network that
    exists keeps its subnet; a new one gets a free /C(prefix) of C(pool), never overlapping
    another libvirt network, an address or route of the server, or the container engine's
    address pools. Allocation is serialised by a lock file, so concurrent runs never pick
    the same subnet.
  - The network carries the lab and student in its metadata; C(absent) removes the lab's
    networks (one student's with C(student)) found by it, whatever state the last run left.
options:
  lab: {description: Lab name, type: str, required: true}
  networks: {description: "Items with name and student (present)", type: list, elements: dict, default: []}
  pool: {description: IPv4 pool of the VM networks, type: str, default: 10.204.0.0/16}
  prefix: {description: Size of one student's network, type: int, default: 27}
  state: {description: present or absent, type: str, default: present, choices: [present, absent]}
  student: {description: "absent: only this student's network", type: str, default: ""}
  libvirt_uri: {description: libvirt connection, type: str, default: "qemu:///system"}
  required: {description: "absent: fail when libvirtd does not answer (else warn)", type: bool, default: true}
  daemon_json: {description: The container engine's configuration (its address pools), type: path, default: /etc/docker/daemon.json}
  lock_file: {description: Lock serialising allocations on the server, type: path, default: /run/lock/labkit-vm-networks.lock}
"""

RETURN = r"""
networks: {description: "per student: name, student, bridge, subnet, gateway, dhcp_start, dhcp_end", type: dict}
removed: {description: names of the networks removed (absent), type: list}
actions: {description: what was defined or started (present), type: list}
"""

import fcntl
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.labkit_netpool import (
    LibvirtError,
    bridge_name,
    describe,
    libvirt_networks,
    network_info,
    network_names,
    network_xml,
    parse_network,
    pick,
    taken,
    virsh,
)


def _fail_virsh(module, what, p, **kw):
    module.fail_json(msg=f"{what}: {(p.stderr or p.stdout).strip()}", **kw)


def _lock(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _wanted(info, lab, student, bridge):
    """Is an existing network what labkit would define for this student (subnet aside)?"""
    sub = info["subnet"]
    if sub is None:
        return False
    hosts = list(sub.hosts())
    return (info["lab"] == lab and info["student"] == student and info["bridge"] == bridge
            and info["forward"] == "nat" and len(hosts) >= 2 and info["gateway"] == str(hosts[0])
            and info["dhcp"] == (str(hosts[1]), str(hosts[-1])))


def present(module, p, result):
    uri, lab = p["libvirt_uri"], p["lab"]
    try:
        names, active = network_names(uri)
    except (LibvirtError, OSError) as e:
        module.fail_json(msg=f"libvirtd is not answering at {uri} ({e})", **result)
    by_name = {}
    nets = None  # every network, read only when a subnet must be allocated

    def everything():
        nonlocal nets
        if nets is None:
            nets = [i for i in (by_name.get(n) or network_info(uri, n, n in active) for n in names) if i]
        return nets

    out = {}
    for item in p["networks"]:
        name, student = item["name"], item["student"]
        bridge = bridge_name(lab, student)
        have = by_name.get(name) or (network_info(uri, name, name in active) if name in names else None)
        if have is not None:
            by_name[name] = have
        if have is not None and (have["lab"], have["student"]) != (lab, student):
            module.fail_json(msg=f"libvirt network {name} exists and is not labkit's network of lab {lab}, "
                                 f"student {student} (owner: {have['lab']}/{have['student']})",
                             hint=f"remove or rename it: virsh -c {uri} net-destroy {name}; "
                                  f"virsh -c {uri} net-undefine {name}", **result)
        if have is not None and _wanted(have, lab, student, bridge):
            info = have
        else:
            # a new network (or one changed by hand: redefined on the subnet it had)
            clash = [n["name"] for n in everything() if n["bridge"] == bridge and n["name"] != name]
            if clash:
                module.fail_json(msg=f"bridge {bridge} is already used by libvirt network {clash[0]}", **result)
            subnet = have["subnet"] if have is not None and have["subnet"] is not None else None
            if subnet is None:
                subnet = pick(p["pool"], p["prefix"], f"{lab}/{student}", taken(everything(), p["daemon_json"]))
            if subnet is None:
                module.fail_json(msg=f"the VM network pool {p['pool']} has no free /{p['prefix']} left for "
                                     f"{lab}/{student}", hint="`labkit doctor` counts the pool; set "
                                     "LABKIT_VM_POOL to a larger free range", **result)
            xml = network_xml(name, lab, student, bridge, subnet)
            result["changed"] = True
            result["actions"].append(f"defined {name} ({subnet}, bridge {bridge})")
            if not module.check_mode:
                if have is not None and have["active"]:
                    virsh(uri, "net-destroy", name)
                path = os.path.join(module.tmpdir, f"{name}.xml")
                with open(path, "w") as f:
                    f.write(xml)
                r = virsh(uri, "net-define", path)
                if r.returncode != 0:
                    _fail_virsh(module, f"cannot define libvirt network {name}", r, **result)
            info = parse_network(xml)
            info["active"] = False
            nets = [n for n in everything() if n["name"] != name] + [info]
            by_name[name] = info
            if name not in names:
                names.append(name)
        if not info.get("active"):
            result["changed"] = True
            result["actions"].append(f"started {name}")
            if not module.check_mode:
                r = virsh(uri, "net-start", name)
                if r.returncode != 0:
                    _fail_virsh(module, f"cannot start libvirt network {name} ({info['subnet']})", r,
                                hint="another interface may use its subnet: `ip route`; `labkit down` "
                                     "then `labkit up` picks another one", **result)
            info["active"] = True
        out[student] = describe(info)
    result["networks"] = out


def absent(module, p, result):
    uri, lab, student = p["libvirt_uri"], p["lab"], p["student"]
    try:
        nets = libvirt_networks(uri)
    except (LibvirtError, OSError) as e:
        if isinstance(e, OSError):  # no libvirt on this server: no VM network either
            return
        if p["required"]:
            module.fail_json(msg=f"libvirtd is not answering at {uri} ({e}): cannot remove the lab's "
                                 "VM networks", **result)
        module.warn(f"libvirtd is not answering at {uri} ({e}): VM networks not checked")
        return
    for n in nets:
        if n["lab"] != lab or (student and n["student"] != student):
            continue
        result["changed"] = True
        result["removed"].append(n["name"])
        if module.check_mode:
            continue
        if n["active"]:
            virsh(uri, "net-destroy", n["name"])
        r = virsh(uri, "net-undefine", n["name"])
        if r.returncode != 0 and virsh(uri, "net-info", n["name"]).returncode == 0:
            _fail_virsh(module, f"cannot remove libvirt network {n['name']}", r, **result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            lab=dict(type="str", required=True),
            networks=dict(type="list", elements="dict", default=[]),
            pool=dict(type="str", default="10.204.0.0/16"),
            prefix=dict(type="int", default=27),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            student=dict(type="str", default=""),
            libvirt_uri=dict(type="str", default="qemu:///system"),
            required=dict(type="bool", default=True),
            daemon_json=dict(type="path", default="/etc/docker/daemon.json"),
            lock_file=dict(type="path", default="/run/lock/labkit-vm-networks.lock"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = dict(changed=False, networks={}, removed=[], actions=[])
    if p["state"] == "present" and not p["networks"]:
        module.exit_json(**result)
    fd = None if module.check_mode else _lock(p["lock_file"])
    try:
        if p["state"] == "present":
            present(module, p, result)
        else:
            absent(module, p, result)
    finally:
        if fd is not None:
            os.close(fd)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
