#!/usr/bin/python
"""Ansible module: the students' libvirt networks of a labkit lab on a lab server."""
from __future__ import annotations

DOCUMENTATION = r"""
module: labkit_vm_network
short_description: One libvirt NAT network per student VM, its subnet from labkit's pool
description:
  - Makes the libvirt networks of a labkit lab's student VMs on one lab server, or removes
    them. Role C(lab_network) calls it before the VMs are made (role C(lab_vm), module
    C(labkit_vagrant)) and on C(labkit down).
  - O(state=present) makes sure each student of O(networks) has the libvirt network C(name)
    (bridge C(lkv) and 10 hex digits of a hash of C(<lab>/<student>), NAT, DHCP), defined and
    running. The gateway is the subnet's first address and DHCP hands out the rest.
  - A network that exists keeps its subnet; one changed by hand is defined again on the
    subnet it had. A new network gets a free /O(prefix) of O(pool), chosen from a slot
    hashed from C(<lab>/<student>) on, never overlapping another libvirt network, an address
    or route of the server, or the container engine's address pools (O(daemon_json)).
    Allocation is serialised by O(lock_file), so concurrent runs never pick the same subnet.
  - A network of a planned name that belongs to another lab or student (or is not labkit's)
    is not touched; the module fails naming its owner, as it does when the bridge is another
    network's or the pool is full.
  - The network carries the lab and student in its metadata; O(state=absent) removes the
    lab's networks (one student's with O(student)) found by it, whatever state the last run
    left.
options:
  lab:
    description:
      - Name of the lab, written in each network's metadata and found by it.
    type: str
    required: true
  networks:
    description:
      - With O(state=present), the students' VM networks. Each item is a dict with the keys
        C(name) (the libvirt network's name, C(labkit-<lab>-<student>) in labkit's plans) and
        C(student); other keys are ignored.
      - With O(state=present) and no networks the module does nothing.
      - Ignored with O(state=absent).
    type: list
    elements: dict
    default: []
  pool:
    description:
      - IPv4 pool the VM networks' subnets come from (labkit's C(LABKIT_VM_POOL)).
    type: str
    default: 10.204.0.0/16
  prefix:
    description:
      - Prefix length of one student's network, between the pool's own and 30 (V(27) gives
        29 addresses to DHCP).
    type: int
    default: 27
  state:
    description:
      - V(present) makes the networks of O(networks) defined and running; V(absent) removes
        the lab's networks.
    type: str
    default: present
    choices: [present, absent]
  student:
    description:
      - With O(state=absent), remove only this student's network. Empty removes every VM
        network of the lab.
      - Ignored with O(state=present).
    type: str
    default: ""
  libvirt_uri:
    description:
      - The libvirt connection.
    type: str
    default: "qemu:///system"
  required:
    description:
      - With O(state=absent), fail when libvirtd does not answer (a lab with VMs); V(false)
        only warns. Without libvirt on the server (no C(virsh)) there is nothing to remove
        either way.
      - Ignored with O(state=present), which always fails when libvirtd does not answer.
    type: bool
    default: true
  daemon_json:
    description:
      - The container engine's configuration; the C(default-address-pools) it names (or
        Docker's built-in pools without them) are never given to a VM network.
    type: path
    default: /etc/docker/daemon.json
  lock_file:
    description:
      - Lock file (C(flock)) serialising allocations on the server. Not taken in check mode.
      - Empty, C(vm-networks.lock) in labkit's private folder (C(/run/labkit) for root, else
        C($XDG_RUNTIME_DIR/labkit)): never a shared, guessable path such as C(/run/lock) where
        another local user could hold the lock first or plant a symlink.
    type: path
    default: ""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - RV(actions) and RV(removed) say what would be done, and RV(networks) gives a new
        network the subnet it would get.
  diff_mode:
    support: none
  platform:
    platforms: linux
notes:
  - Runs on the lab server (as root in labkit's playbooks), with C(virsh); C(ip) tells the
    server's addresses and routes when a subnet is allocated. The pool arithmetic is shared
    with C(labkit doctor) through the role's module_utils C(labkit_netpool), which Ansible
    ships with the module.
  - A network that fails to start is often one whose subnet another interface took; the
    error says so and C(labkit down) then C(labkit up) picks another subnet.
requirements:
  - libvirt (libvirtd and virsh) on the lab server
  - ip (iproute2) on the lab server, to avoid the server's own addresses and routes
seealso:
  - module: community.libvirt.virt_net
author:
  - labkit maintainers
"""

EXAMPLES = r"""
# Role lab_network, tasks/main.yml: one network per student whose VM this server hosts
- name: Ensure the students' VM networks are present
  labkit_vm_network:
    lab: webclass
    networks:
      - name: labkit-webclass-s01
        student: s01
      - name: labkit-webclass-s02
        student: s02
    pool: 10.204.0.0/16
    prefix: 27
    state: present
    student: ""
    required: true
    libvirt_uri: qemu:///system
  register: _lab_network_vm

- name: Show student s01's VM subnet and bridge
  ansible.builtin.debug:
    msg: "{{ _lab_network_vm.networks['s01'].subnet }} on {{ _lab_network_vm.networks['s01'].bridge }}"

# labkit down on a server that may have no VMs: only warn when libvirtd does not answer
- name: Ensure the lab's VM networks are absent
  labkit_vm_network:
    lab: webclass
    state: absent
    required: false

# Only one student's VM network
- name: Ensure student s01's VM network is absent
  labkit_vm_network:
    lab: webclass
    state: absent
    student: s01
"""

RETURN = r"""
networks:
  description:
    - Each planned network, keyed by its student id, with C(name), C(student), C(bridge),
      C(subnet), C(gateway) (the subnet's first address) and C(dhcp_start) and C(dhcp_end)
      (the DHCP range, the rest of the subnet).
    - Empty with O(state=absent).
  returned: always
  type: dict
  sample:
    s01:
      name: labkit-webclass-s01
      student: s01
      bridge: lkvbc99e4d3b2
      subnet: 10.204.94.128/27
      gateway: 10.204.94.129
      dhcp_start: 10.204.94.130
      dhcp_end: 10.204.94.158
removed:
  description:
    - Names of the networks removed (or that would be, in check mode). Empty with
      O(state=present).
  returned: always
  type: list
  elements: str
  sample: [labkit-webclass-s01]
actions:
  description:
    - What was defined or started (or would be, in check mode). Empty with O(state=absent).
  returned: always
  type: list
  elements: str
  sample:
    - defined labkit-webclass-s01 (10.204.94.128/27, bridge lkvbc99e4d3b2)
    - started labkit-webclass-s01
"""

import fcntl
import os
import stat

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


def _lock(module, path):
    """The lock, held: its folder private to this user (0700, owned, not a symlink), the file
    opened without following a symlink."""
    if not path:
        base = "/run/labkit" if os.geteuid() == 0 else os.path.join(
            os.environ.get("XDG_RUNTIME_DIR") or os.path.expanduser("~/.cache/labkit"), "labkit")
        path = os.path.join(base, "vm-networks.lock")
    folder = os.path.dirname(path)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        module.fail_json(msg=f"labkit_vm_network: the lock's folder {folder} is not private (a symlink, another "
                             "owner, or writable by others)",
                         hint=f"another user may have made it to hold labkit's lock: check and remove {folder}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        module.fail_json(msg=f"labkit_vm_network: cannot open the lock {path}: {e}")
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
            lock_file=dict(type="path", default=""),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = dict(changed=False, networks={}, removed=[], actions=[])
    if p["state"] == "present" and not p["networks"]:
        module.exit_json(**result)
    fd = None if module.check_mode else _lock(module, p["lock_file"])
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
