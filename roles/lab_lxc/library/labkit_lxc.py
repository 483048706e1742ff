#!/usr/bin/python
"""Ansible module: a labkit lab's LXC system containers on one lab server, from its Docker images."""
from __future__ import annotations

DOCUMENTATION = r"""
module: labkit_lxc
short_description: Prepare, list or remove a labkit lab's LXC system containers on one lab server
description:
  - Makes, lists or removes the LXC system containers of one labkit lab on one lab server.
    Role C(lab_lxc) calls it, then has M(community.general.lxc_container) make sure each
    container runs (O(state=present)) or is destroyed (O(state=list) then O(state=absent)).
  - O(state=present) makes each planned container's folder under O(lxc_path) - a marker file
    C(labkit.json) (lab, student, distro, image), the LXC configuration and the root file
    system - and starts every one that is not running, all at once. A container whose planned
    settings or image changed is stopped and made again.
  - The root file system is the lab server's own Docker image of the distro (C(docker export)
    of a container created from it, never started), its owners shifted by O(idmap_base) for an
    unprivileged container, with BusyBox's C(init) (from O(busybox)) as C(/usr/sbin/init) and
    an C(/etc/inittab) that starts nothing. It is cached per image id under O(cache_dir) (a
    folder of root's only) and copied for each container, its owners moved to the container's
    own ids. Nothing is downloaded.
  - The image is data, never trusted with the server's paths - every member is made, and every
    later file written, inside the root file system, whatever symlinks it holds (a symlinked
    C(etc) or C(usr/sbin) is followed as the container would follow it, inside its root, never
    the server's); a member named outside it (absolute, C(..)) refuses the image; device nodes
    are left out (LXC gives each container its own C(/dev)).
  - Each container is unprivileged, with its own 65536 server ids - the first free range from
    O(idmap_base) (4096 of them), written in its marker file under a lock - so root in one
    container is no user at all in another; it keeps only the capabilities O(cap_keep), runs
    with C(no_new_privs) and memory, CPU and PID limits (cgroup v1 or v2 keys, whichever the
    server has). Its one interface is a veth on the bridge of the student's Docker network
    (role C(lab_network)), with a fixed address from the top of that network's subnet (Docker
    allocates from the bottom), so the student's isolation and NAT are those of the Docker
    network (role C(lab_firewall)). Its C(/etc/resolv.conf) names the server's nameservers.
  - O(state=list) returns the lab's containers (one student's with O(student)) found by their
    marker files; O(state=absent) stops them (SIGKILL) and removes their folders, whatever
    state an earlier run left them in.
options:
  lab:
    description:
      - Name of the lab, written in each container's marker file and found by it.
    type: str
    required: true
  containers:
    description:
      - With O(state=present), the planned containers. Each item is a dict with the keys
        C(name) (the container's name, its folder under O(lxc_path)), C(image) (the Docker
        image on the lab server its root file system is made from), C(hostname), C(network)
        (the student's Docker bridge network, which must exist with an IPv4 subnet),
        C(student) and C(distro). Every key is required and must not be empty; other keys are
        ignored.
      - Ignored with O(state=list) and O(state=absent).
    type: list
    elements: dict
    default: []
  state:
    description:
      - V(present) makes and starts the containers of O(containers).
      - V(list) only returns the lab's containers.
      - V(absent) stops and removes the lab's containers.
    type: str
    default: present
    choices: [present, list, absent]
  student:
    description:
      - With O(state=list) and O(state=absent), only this student's containers. Empty means
        every container of the lab.
      - Ignored with O(state=present).
    type: str
    default: ""
  memory:
    description:
      - Memory limit of each container - a number of bytes, or a number with the suffix
        V(k), V(m), V(g) or V(t) (powers of 1024), such as V(256m) or V(1g).
    type: str
    default: 256m
  cpus:
    description:
      - CPU limit of each container, in cores (a CFS quota over a 100 ms period).
    type: float
    default: 1.0
  pids:
    description:
      - Maximum number of processes in each container.
    type: int
    default: 256
  cap_keep:
    description:
      - Capabilities each container keeps (C(lxc.cap.keep)), in LXC's names (lowercase,
        without C(cap_)). Role C(lab_lxc) passes C(chown), C(dac_override), C(fowner),
        C(fsetid), C(kill), C(setgid), C(setuid), C(net_bind_service) and C(sys_chroot).
    type: list
    elements: str
    default: []
  idmap_base:
    description:
      - The first server uid and gid of the containers' ids - each container takes its own
        65536 from here (4096 containers, root's C(/etc/subuid) and C(/etc/subgid) line
        C(root:1000000000:268435456) for the default). The cached root file systems are shifted
        by it.
    type: int
    default: 1000000000
  lxc_path:
    description:
      - LXC's containers folder, where each container's folder is made and found.
    type: path
    default: /var/lib/lxc
  cache_dir:
    description:
      - Folder of the cached root file systems (under C(rootfs/), one per image id, recipe and
        O(idmap_base)).
    type: path
    default: /var/lib/labkit/lxc
  busybox:
    description:
      - Static BusyBox binary copied into each root file system as the containers' init (from
        the server's C(busybox-static) package).
    type: path
    default: /bin/busybox
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - With O(state=present), RV(containers) says what would be V(created), V(recreated) or
        left V(unchanged); nothing is started, so V(started) is not predicted.
  diff_mode:
    support: none
  platform:
    platforms: linux
notes:
  - Runs as root on the lab server. O(state=present) needs LXC (C(lxc-start), C(lxc-info)),
    the Docker CLI (the images and the students' networks are Docker's) and O(busybox).
  - A container that is made again loses whatever was written in it.
  - A failure to start names the error lines of the container's C(lxc.log); C(labkit doctor)
    checks LXC (id map, cgroups, networking).
  - A container made by an earlier labkit (one id map for every container, no C(idmap) in its
    marker) is made again.
requirements:
  - LXC (lxc-start, lxc-info, lxc-stop) on the lab server
  - Docker CLI and Engine on the lab server (O(state=present))
  - busybox-static on the lab server (O(state=present))
seealso:
  - module: community.general.lxc_container
author:
  - labkit maintainers
"""

EXAMPLES = r"""
# Role lab_lxc, tasks/server.yml: folder, configuration and root file system of every
# planned LXC container of this lab server, all started at once
- name: Ensure the LXC containers are made (folder, configuration, root file system) and started
  labkit_lxc:
    lab: webclass
    containers:
      - name: labkit-webclass-s01-debian12-lxc
        image: debian:12
        hostname: s01-debian12-lxc
        network: labkit-webclass-s01
        student: s01
        distro: debian:12
    memory: 256m
    cpus: 1.0
    pids: 256
    cap_keep: [chown, dac_override, fowner, fsetid, kill, setgid, setuid, net_bind_service, sys_chroot]
    idmap_base: 1000000000
    lxc_path: /var/lib/lxc
    cache_dir: /var/lib/labkit/lxc
  register: lab_lxc_result

- name: Ensure the LXC containers are running
  community.general.lxc_container:
    name: "{{ item.name }}"
    lxc_path: /var/lib/lxc
    state: started
  loop: "{{ lab_lxc_result.containers }}"
  loop_control:
    label: "{{ item.name }}"

# Role lab_lxc, tasks/down.yml (labkit down): find the lab's containers, destroy them with
# LXC's own API, then remove whatever is left
- name: Find the lab's LXC containers
  labkit_lxc:
    lab: webclass
    state: list
    student: ""
    lxc_path: /var/lib/lxc
  register: _lab_lxc_found

- name: Ensure the lab's LXC containers are destroyed
  community.general.lxc_container:
    name: "{{ item.name }}"
    lxc_path: /var/lib/lxc
    state: absent
  loop: "{{ _lab_lxc_found.containers }}"
  loop_control:
    label: "{{ item.name }}"
  failed_when: false

- name: Ensure nothing of the lab's LXC containers is left
  labkit_lxc:
    lab: webclass
    state: absent
    student: ""
    lxc_path: /var/lib/lxc

# Only one student's containers
- name: Ensure student s01's LXC containers are absent
  labkit_lxc:
    lab: webclass
    state: absent
    student: s01
"""

RETURN = r"""
containers:
  description:
    - With O(state=present), one item per planned container, with C(name), C(action) and
      C(address).
    - With O(state=list) and O(state=absent), one item per container of the lab (of O(student))
      found (with O(state=absent), removed), with C(name), C(student), C(distro) and C(running).
  returned: always
  type: list
  elements: dict
  sample:
    - name: labkit-webclass-s01-debian12-lxc
      action: created
      address: 172.18.255.254
  contains:
    name:
      description: The container's name.
      returned: always
      type: str
      sample: labkit-webclass-s01-debian12-lxc
    action:
      description:
        - What was done - V(created), V(recreated) (its settings or image changed),
          V(started) (it was made already but not running) or V(unchanged).
      returned: when O(state=present)
      type: str
      sample: created
    address:
      description:
        - The container's fixed IPv4 address on its Docker network, from the top of the subnet.
      returned: when O(state=present)
      type: str
      sample: 172.18.255.254
    student:
      description: The student the container belongs to (from its marker file).
      returned: when O(state=list) or O(state=absent)
      type: str
      sample: s01
    distro:
      description: The container's distro (from its marker file).
      returned: when O(state=list) or O(state=absent)
      type: str
      sample: debian:12
    running:
      description: Whether LXC reported the container running when it was found.
      returned: when O(state=list) or O(state=absent)
      type: bool
      sample: true
"""

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.labkit_lxc_idmap import IdmapError, allocate, idmap_lock, idmaps_in_use
from ansible.module_utils.labkit_lxc_layout import IDMAP_RANGE, IDMAP_SLOTS, MARKER
from ansible.module_utils.labkit_lxc_rootfs import RootfsError, rootfs_open, rootfs_write
from ansible.module_utils.labkit_lxc_rootfs_image import ImageError, rootfs, rootfs_shift

UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class Fail(Exception):
    pass


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise Fail(f"{' '.join(cmd)} failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def to_bytes(mem):
    s = str(mem).strip().lower().rstrip("b")
    if s and s[-1] in UNITS:
        return int(float(s[:-1]) * UNITS[s[-1]])
    return int(s)


def marker_of(path):
    try:
        with open(os.path.join(path, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def found(lxc_path, lab, student=""):
    """The lab's containers under lxc_path, by their marker files."""
    out = []
    if not os.path.isdir(lxc_path):
        return out
    for name in sorted(os.listdir(lxc_path)):
        m = marker_of(os.path.join(lxc_path, name))
        if not m or m.get("lab") != lab or (student and m.get("student") != student):
            continue
        out.append({"name": name, "student": m.get("student", ""), "distro": m.get("distro", ""),
                    "running": state(name) == "RUNNING"})
    return out


def state(name):
    if shutil.which("lxc-info") is None:
        return "STOPPED"
    p = subprocess.run(["lxc-info", "-n", name, "-sH"], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else "STOPPED"


def destroy(lxc_path, name):
    if state(name) != "STOPPED":
        subprocess.run(["lxc-stop", "-k", "-n", name], capture_output=True)
    shutil.rmtree(os.path.join(lxc_path, name))


def image_id(image):
    return run(["docker", "image", "inspect", "--format", "{{.Id}}", image]).strip()


def network(net):
    """(bridge, subnet, gateway, addresses in use) of a Docker bridge network."""
    info = json.loads(run(["docker", "network", "inspect", net]))[0]
    cfg = [c for c in (info.get("IPAM") or {}).get("Config") or [] if ":" not in c.get("Subnet", ":")]
    if not cfg:
        raise Fail(f"Docker network {net} has no IPv4 subnet")
    bridge = (info.get("Options") or {}).get("com.docker.network.bridge.name") or "br-" + info["Id"][:12]
    used = {c.get("IPv4Address", "").split("/")[0] for c in (info.get("Containers") or {}).values()}
    return bridge, ipaddress.ip_network(cfg[0]["Subnet"]), cfg[0].get("Gateway", ""), used


def cgroup_keys(p):
    mem, quota = to_bytes(p["memory"]), int(p["cpus"] * 100000)
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # cgroup v2 only
        return [("lxc.cgroup2.memory.max", mem), ("lxc.cgroup2.pids.max", p["pids"]),
                ("lxc.cgroup2.cpu.max", f"{quota} 100000")]
    return [("lxc.cgroup.memory.limit_in_bytes", mem), ("lxc.cgroup.pids.max", p["pids"]),
            ("lxc.cgroup.cpu.cfs_period_us", 100000), ("lxc.cgroup.cpu.cfs_quota_us", quota)]


def config(p, c, path, bridge, addr, prefix, gw, base):
    """The LXC configuration; ``base``: the container's own first server id (its root)."""
    lines = [
        "# labkit: made by role lab_lxc; found by labkit.json beside it",
        f"# labkit.lab = {p['lab']}",
        f"# labkit.student = {c['student']}",
        f"# labkit.distro = {c['distro']}",
        "lxc.include = /usr/share/lxc/config/common.conf",
        "lxc.include = /usr/share/lxc/config/userns.conf",
        "lxc.arch = linux64",
        f"lxc.uts.name = {c['hostname']}",
        f"lxc.rootfs.path = dir:{path}/rootfs",
        f"lxc.idmap = u 0 {base} {IDMAP_RANGE}",
        f"lxc.idmap = g 0 {base} {IDMAP_RANGE}",
        "lxc.init.cmd = /usr/sbin/init",
        "lxc.signal.halt = SIGUSR2",  # BusyBox init: poweroff
        "lxc.tty.max = 0",
        "lxc.net.0.type = veth",
        f"lxc.net.0.link = {bridge}",
        "lxc.net.0.flags = up",
        "lxc.net.0.name = eth0",
        f"lxc.net.0.ipv4.address = {addr}/{prefix}",
        f"lxc.net.0.ipv4.gateway = {gw}",
        "lxc.cap.keep = " + " ".join(sorted(x.lower() for x in p["cap_keep"])),
        "lxc.no_new_privs = 1",
        f"lxc.log.file = {path}/lxc.log",
        "lxc.log.level = WARN",
    ]
    lines += [f"{k} = {v}" for k, v in cgroup_keys(p)]
    return "\n".join(lines) + "\n"


def nameservers():
    for f in ("/run/systemd/resolve/resolv.conf", "/etc/resolv.conf"):
        try:
            with open(f) as fh:
                ns = [ln.split()[1] for ln in fh if ln.startswith("nameserver") and len(ln.split()) > 1]
        except OSError:
            continue
        ns = [n for n in ns if not n.startswith("127.") and n != "::1"]
        if ns:
            return ns
    return []


def planned(p, c, path, where, iid, idmap):
    """(configuration, marker) of container ``c`` with its own ids from ``idmap``; ``where``:
    its network, bridge, subnet, gateway and address."""
    net, bridge, subnet, gw, addr = where
    text = config(p, c, path, bridge, addr, subnet.prefixlen, gw, idmap)
    return text, {"lab": p["lab"], "student": c["student"], "distro": c["distro"], "image": c["image"],
                  "image_id": iid, "role": "container", "engine": "lxc", "hostname": c["hostname"],
                  "network": net, "address": addr, "idmap": idmap, "spec": hashlib.sha256(text.encode()).hexdigest()[:16]}


def present(p):
    out, by_net = [], {}
    for c in p["containers"]:
        missing = [k for k in ("name", "image", "hostname", "network", "student", "distro") if not c.get(k)]
        if missing:
            raise Fail(f"container {c.get('name', '?')}: no {', '.join(missing)}")
        by_net.setdefault(c["network"], []).append(c)
    images = {}
    for net, cs in by_net.items():
        bridge, subnet, gw, used = network(net)
        for i, c in enumerate(sorted(cs, key=lambda x: x["name"])):
            addr = str(subnet.broadcast_address - 1 - i)
            if addr in used:
                raise Fail(f"{c['name']}: address {addr} of network {net} is taken by a Docker container")
            if c["image"] not in images:
                images[c["image"]] = image_id(c["image"])
            iid = images[c["image"]]
            path = os.path.join(p["lxc_path"], c["name"])
            where = (net, bridge, subnet, gw, addr)
            have = marker_of(path)
            action = "created"
            if have is not None:
                have.pop("created", None)
                if isinstance(have.get("idmap"), int) and have == planned(p, c, path, where, iid, have["idmap"])[1] \
                        and os.path.exists(os.path.join(path, "config")):
                    out.append({"name": c["name"], "action": "unchanged", "address": addr})
                    continue
                action = "recreated"
            if os.path.lexists(path):
                if p["check_mode"]:
                    out.append({"name": c["name"], "action": action, "address": addr})
                    continue
                destroy(p["lxc_path"], c["name"])
            if p["check_mode"]:
                out.append({"name": c["name"], "action": action, "address": addr})
                continue
            with idmap_lock(p["lxc_path"]):  # its own ids, taken by its marker
                taken = idmaps_in_use(p["lxc_path"], MARKER, IDMAP_RANGE)
                text, want = planned(p, c, path, where, iid, allocate(p["idmap_base"], taken, IDMAP_RANGE, IDMAP_SLOTS))
                os.makedirs(path)
                os.chown(path, 0, want["idmap"])  # the container's root reaches its rootfs, nobody else
                os.chmod(path, 0o750)
                with open(os.path.join(path, MARKER), "w") as f:  # first: `down` finds a half-made one
                    json.dump(dict(want, created=time.time()), f, indent=1, sort_keys=True)
            create(p, c, path, want, text, iid)
            out.append({"name": c["name"], "action": action, "address": addr})
    if not p["check_mode"]:
        start(p, out)
    return out


def start(p, out):
    """Start every planned container that is not running, all at once (``lxc-start`` returns
    once init runs); lxc_container then finds them running. A failure names LXC's log lines."""
    todo = [r for r in out if state(r["name"]) != "RUNNING"]

    def one(r):
        log = os.path.join(p["lxc_path"], r["name"], "lxc.log")
        q = subprocess.run(["lxc-start", "-n", r["name"]], capture_output=True, text=True)
        if q.returncode != 0 or state(r["name"]) != "RUNNING":
            try:
                with open(log) as f:
                    why = [ln.strip() for ln in f if " ERROR " in ln][-3:]
            except OSError:
                why = []
            return f"{r['name']}: lxc-start failed: {' | '.join(why) or q.stderr.strip()[-300:]}"
        if r["action"] == "unchanged":
            r["action"] = "started"
        return None

    with ThreadPoolExecutor(max_workers=8) as ex:
        errors = [e for e in ex.map(one, todo) if e]
    if errors:
        raise Fail("; ".join(errors) + " (`labkit doctor` checks LXC: id map, cgroups, networking)")


def create(p, c, path, want, text, iid):
    """The root file system (a copy of the cached one, its owners moved to the container's own
    ids) and the configuration of a container whose folder and marker are made."""
    base, idmap = p["idmap_base"], want["idmap"]
    src = rootfs(p["cache_dir"], p["busybox"], base, c["image"], iid)  # cached: made once per image (the bench's create-to-ready leaves it out)
    run(["cp", "-a", "--reflink=auto", src, os.path.join(path, "rootfs")])
    if idmap != base:
        rootfs_shift(os.path.join(path, "rootfs"), base, idmap, IDMAP_RANGE)
    root = rootfs_open(os.path.join(path, "rootfs"))
    try:
        own = (idmap, idmap)
        ns = "".join(f"nameserver {n}\n" for n in nameservers())
        rootfs_write(root, "etc/resolv.conf", ns.encode(), *own, dir_owner=own)
        rootfs_write(root, "etc/hostname", f"{c['hostname']}\n".encode(), *own, dir_owner=own)
        rootfs_write(root, "etc/hosts", f"127.0.0.1\tlocalhost\n{want['address']}\t{c['hostname']}\n".encode(),
                     *own, dir_owner=own)
    except RootfsError as e:
        raise Fail(f"{c['name']}: {e}") from None
    finally:
        os.close(root)
    with open(os.path.join(path, "config.tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(path, "config.tmp"), os.path.join(path, "config"))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            lab=dict(type="str", required=True),
            containers=dict(type="list", elements="dict", default=[]),
            state=dict(type="str", default="present", choices=["present", "list", "absent"]),
            student=dict(type="str", default=""),
            memory=dict(type="str", default="256m"),
            cpus=dict(type="float", default=1.0),
            pids=dict(type="int", default=256),
            cap_keep=dict(type="list", elements="str", default=[]),
            idmap_base=dict(type="int", default=1000000000),
            lxc_path=dict(type="path", default="/var/lib/lxc"),
            cache_dir=dict(type="path", default="/var/lib/labkit/lxc"),
            busybox=dict(type="path", default="/bin/busybox"),
        ),
        supports_check_mode=True,
    )
    p = dict(module.params, check_mode=module.check_mode)
    try:
        if p["state"] == "list":
            module.exit_json(changed=False, containers=found(p["lxc_path"], p["lab"], p["student"]))
        if p["state"] == "absent":
            gone = found(p["lxc_path"], p["lab"], p["student"])
            if not module.check_mode:
                for c in gone:
                    destroy(p["lxc_path"], c["name"])
            module.exit_json(changed=bool(gone), containers=gone)
        if shutil.which("lxc-start") is None:
            raise Fail("LXC is not installed on this lab server (lxc-start not found)")
        res = present(p)
        module.exit_json(changed=any(r["action"] != "unchanged" for r in res), containers=res)
    except (Fail, OSError, ValueError, tarfile.TarError, RootfsError, IdmapError, ImageError) as e:
        module.fail_json(msg=f"labkit_lxc ({p['state']}) on lab {p['lab']}: {e}")


if __name__ == "__main__":
    main()
