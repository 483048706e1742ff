#!/usr/bin/python
"""Ansible module: the firewall rules that keep each student's lab hosts to themselves."""
from __future__ import annotations

DOCUMENTATION = r"""
module: labkit_firewall
short_description: Isolate each student's lab hosts (VM and containers) with iptables on a lab server
description:
  - Keeps each student's lab hosts on one lab server to themselves with iptables rules. Role
    C(lab_firewall) calls it after role C(lab_network) made the students' networks, and
    C(labkit down) calls it with O(state=absent).
  - Rules live in two chains, C(LABKIT-FORWARD) (jumped to first from C(FORWARD) and from
    Docker's C(DOCKER-USER)) and C(LABKIT-INPUT) (jumped to first from C(INPUT)), and with
    O(rootless_users) a third, C(LABKIT-OUTPUT) (jumped to first from C(OUTPUT)), for IPv4 and
    IPv6. Every rule carries the comment C(labkit lab=<lab> student=<student>) (a rootless
    user's, C(labkit lab=<lab> user=<user>)); the chains' own rules and the jumps carry
    C(labkit). Each chain starts with a rule returning replies (C(RELATED,ESTABLISHED)).
  - A rootless Podman container's traffic does not cross a bridge of the server: the user's
    C(slirp4netns) (or C(pasta)) process sends it from the server itself, through C(OUTPUT),
    for every student whose containers that user runs. So per rootless user, matched by uid
    (C(-m owner --uid-owner)), C(LABKIT-OUTPUT) returns what goes out through the O(uplinks)
    (IPv4), DNS to the server's resolvers (IPv4, C(/etc/resolv.conf)) and the O(server_ports)
    of the server itself, and drops everything else - every student's bridges (of any lab),
    the server's own addresses, its other networks, and all IPv6. The rule holds for every
    process of that user, so the user should be one for labs only.
  - IPv6 fails closed - when IPv6 is on on the server (not disabled by C(disable_ipv6)) and
    C(ip6tables) is missing or does not work, O(state=present) fails before changing
    anything, naming why; only with IPv6 off are IPv6 rules left out.
  - Per student, with their VM bridge and their containers' bridges, the two reach each
    other (IPv4), each reaches the internet through the O(uplinks) (IPv4), and nothing else
    is forwarded from or to them - other students, other labs, other networks of the server
    are dropped, so a probe times out. Towards the server itself only DHCP and DNS from the
    VM to its own gateway and the O(server_ports) are accepted, besides replies to what the
    server opened. Over IPv6 a student's bridges reach nothing beyond themselves.
  - O(state=present) rewrites a student's rules only when they differ from the wanted ones,
    in one iptables-restore transaction (never half a rule set), and moves the jumps back to
    the top of their chains when another program (libvirt, Docker) inserted rules above
    them. One order is left as it is - Docker's own jump to C(DOCKER-USER) above labkit's in
    C(FORWARD), which Docker puts back on top whenever it makes a network. Every forwarded
    packet then meets labkit's jump first in C(DOCKER-USER), so the isolation is the same,
    and a lab's re-run reports no change because another lab made a network.
  - O(state=absent) removes the lab's rules (one student's with O(student)), found by their
    comment; the chains and jumps go with the last lab's rules.
  - Rules without a labkit comment are never touched.
options:
  lab:
    description:
      - Name of the lab, lowercase letters, digits and C(-), starting with a letter or digit.
        Every rule of its students carries the comment C(labkit lab=<lab> student=<student>).
    type: str
    required: true
  students:
    description:
      - With O(state=present), the students whose rules to ensure (role C(lab_network)'s
        C(lab_network_students)). Each item is a dict with the keys C(student) (the student
        id, lowercase letters, digits and C(-)), C(vm_bridge) (the bridge of the student's VM
        network, from C(labkit_vm_network)), C(vm_gateway) (that network's gateway address,
        where the VM's DNS is accepted), C(docker_bridge) (the bridge of the student's Docker
        network, from C(labkit_networks)) and optionally C(podman_bridge) (the bridge of a
        rootful Podman network of the student's). A bridge the student does not have is
        empty or left out; a bridge name has 1 to 15 of the characters C([A-Za-z0-9_.-]).
      - With O(state=present) and no students the module does nothing.
      - Ignored with O(state=absent).
    type: list
    elements: dict
    default: []
  state:
    description:
      - V(present) ensures the rules of O(students); V(absent) removes the lab's rules.
    type: str
    default: present
    choices: [present, absent]
  student:
    description:
      - With O(state=absent), remove only this student's rules. Empty removes every rule of
        the lab.
      - Ignored with O(state=present).
    type: str
    default: ""
  uplinks:
    description:
      - Interfaces through which the students' hosts reach the internet or the classroom's
        mirror (IPv4, NATed by libvirt and Docker).
      - Empty means the interfaces of the server's IPv4 default routes; without a default
        route the module warns, and the students' hosts then reach no network outside the
        lab server.
    type: list
    elements: str
    default: []
  server_ports:
    description:
      - Ports of the lab server itself that the students' hosts may reach (IPv4), each as
        C(PORT/tcp) or C(PORT/udp) - an apt cache on the server, say V(3142/tcp).
      - Empty allows none besides the VM's DHCP and DNS.
    type: list
    elements: str
    default: []
  rootless_users:
    description:
      - With O(state=present), the lab server's users whose rootless Podman containers the lab
        has there (role C(lab_podman)'s C(lab_podman_rootless_users)). Each gets the rules of
        C(LABKIT-OUTPUT) by its uid; a user that does not exist fails the module.
      - Ignored with O(state=absent) (the lab's rules are found by their comment).
    type: list
    elements: str
    default: []
  lock_file:
    description:
      - Lock file (C(flock)) serialising labkit's firewall changes on the server, so labs
        brought up at once do not interleave their changes. Not taken in check mode.
      - Empty, C(firewall.lock) in labkit's private folder - C(/run/labkit) for root, else
        C($XDG_RUNTIME_DIR/labkit) or C(~/.cache/labkit/run) - made C(0700) when missing.
        The lock's folder, given or not, must be a real folder (not a symlink) owned by the
        user and writable by no one else, or the module fails naming it - no other user can
        hold the lock or swap the file.
    type: path
    default: ""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - RV(actions) lists the iptables-restore lines that would be applied.
  diff_mode:
    support: none
  platform:
    platforms: linux
notes:
  - Runs as root on the lab server (labkit's playbooks become root there) and needs
    C(iptables) and C(iptables-restore), and C(ip6tables) and C(ip6tables-restore) where IPv6
    is on.
  - With O(state=present), the module fails when iptables does not work on the server, or
    ip6tables does not while IPv6 is on.
requirements:
  - iptables (with iptables-restore and ip6tables) on the lab server
  - ip (iproute2), to find the default routes' interfaces when O(uplinks) is empty
seealso:
  - module: ansible.builtin.iptables
author:
  - labkit maintainers
"""

EXAMPLES = r"""
# Role lab_firewall, tasks/main.yml: the students of role lab_network on this lab server
- name: Ensure each student's hosts reach only each other and the internet (present)
  labkit_firewall:
    lab: "{{ lab_firewall_lab }}"
    students: "{{ lab_firewall_students }}"
    state: "{{ lab_firewall_state }}"
    student: "{{ lab_firewall_student }}"
    uplinks: "{{ lab_firewall_uplinks }}"
    server_ports: "{{ lab_firewall_server_ports }}"
  when: lab_firewall_students | length > 0 or lab_firewall_state == 'absent'

# The same with the values spelled out: one student with a VM and containers; student
# hosts may reach the apt cache on the lab server
- name: Ensure student s01's hosts are isolated
  labkit_firewall:
    lab: webclass
    students:
      - student: s01
        vm_bridge: lkvbc99e4d3b2
        vm_gateway: 10.204.94.129
        docker_bridge: br-5d0e1c2b7a44
        podman_bridge: ""
    uplinks: [eth0]
    server_ports: [3142/tcp]
  register: lab_firewall_result

# A lab with rootless Podman containers run by the server's user alice: her slirp4netns
# reaches the uplink, the server's resolvers and its port 3142 only
- name: Ensure the rootless user's traffic leaves through the uplink only
  labkit_firewall:
    lab: webclass
    students:
      - {student: s01, vm_bridge: "", vm_gateway: "", docker_bridge: br-5d0e1c2b7a44}
    rootless_users: [alice]
    server_ports: [3142/tcp]

# labkit down: every rule of the lab (the chains and jumps go with the last lab's rules)
- name: Ensure the lab's firewall rules are absent
  labkit_firewall:
    lab: webclass
    state: absent

# Only one student's rules
- name: Ensure student s01's firewall rules are absent
  labkit_firewall:
    lab: webclass
    state: absent
    student: s01
"""

RETURN = r"""
actions:
  description:
    - The iptables-restore lines applied (or that would be, in check mode), each prefixed
      with the program (C(iptables) or C(ip6tables)). Empty when nothing changed.
  returned: always
  type: list
  elements: str
  sample:
    - "iptables: :LABKIT-FORWARD - [0:0]"
    - "iptables: -I LABKIT-FORWARD 1 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment labkit -j RETURN"
    - 'iptables: -A LABKIT-FORWARD -i lkvbc99e4d3b2 -o br-5d0e1c2b7a44 -m comment --comment "labkit lab=webclass student=s01" -j ACCEPT'
    - "iptables: -I FORWARD 1 -m comment --comment labkit -j LABKIT-FORWARD"
rules:
  description:
    - With O(state=present), how many rules the students' rule sets hold, over IPv4 and,
      where ip6tables works, IPv6 (labkit's own chain heads and jumps not counted).
    - 0 with O(state=absent) or without O(students).
  returned: always
  type: int
  sample: 25
uplinks:
  description:
    - The interfaces used towards the internet - O(uplinks), or when it is empty and
      O(state=present), the interfaces of the server's IPv4 default routes.
    - Empty with O(state=present) and no O(students).
  returned: always
  type: list
  elements: str
  sample: [eth0]
ipv6:
  description:
    - V(filtered) when IPv6 rules were handled, V(off) when IPv6 is off on the server (no
      IPv6 rules needed).
  returned: always
  type: str
  sample: filtered
"""

import fcntl
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

FWD, INP, OUT = "LABKIT-FORWARD", "LABKIT-INPUT", "LABKIT-OUTPUT"
COMMON = "labkit"
# (parent chain, labkit chain): the jumps kept first in their parents (OUTPUT's only while
# LABKIT-OUTPUT is in use: a lab with rootless users)
JUMPS = (("FORWARD", FWD), ("DOCKER-USER", FWD), ("INPUT", INP), ("OUTPUT", OUT))
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")


def comment(lab, student):
    return f"labkit lab={lab} student={student}"


def user_comment(lab, user):
    return f"labkit lab={lab} user={user}"


def _r(*tokens, c):
    return [*tokens, "-m", "comment", "--comment", c]


def student_rules(family, lab, s, uplinks, server_ports):
    """[(chain, tokens)] for one student, in order: what is allowed first, then drops."""
    c = comment(lab, s["student"])
    v, d, gw = s.get("vm_bridge") or "", s.get("docker_bridge") or "", s.get("vm_gateway") or ""
    # a rootful Podman network's bridge: a bridge of the student's like Docker's (not joined to the others)
    own = [x for x in (v, d, s.get("podman_bridge") or "") if x]
    fwd, inp = [], []
    if family == 4 and v and d:  # the student's VM and containers reach each other
        fwd += [_r("-i", v, "-o", d, c=c) + ["-j", "ACCEPT"], _r("-i", d, "-o", v, c=c) + ["-j", "ACCEPT"]]
    for x in own:  # within one bridge: libvirt's and Docker's own rules decide
        fwd.append(_r("-i", x, "-o", x, c=c) + ["-j", "RETURN"])
    if family == 4:
        for x in own:  # the internet or mirror, NATed by libvirt / Docker
            fwd += [_r("-i", x, "-o", u, c=c) + ["-j", "RETURN"] for u in uplinks]
    for x in own:  # nothing else, either way: other students, other labs, the server's other networks
        fwd.append(_r("-i", x, c=c) + ["-j", "DROP"])
    for x in own:
        fwd.append(_r("-o", x, c=c) + ["-j", "DROP"])
    if family == 4 and v:  # what the VM's provisioning needs from the server: DHCP, DNS at its gateway
        inp.append(_r("-i", v, "-p", "udp", "-m", "udp", "--dport", "67", c=c) + ["-j", "ACCEPT"])
        if gw:
            for proto in ("udp", "tcp"):
                inp.append(_r("-d", f"{gw}/32", "-i", v, "-p", proto, "-m", proto, "--dport", "53", c=c)
                           + ["-j", "ACCEPT"])
    if family == 4:
        for x in own:
            for sp in server_ports:
                port, proto = sp.split("/")
                inp.append(_r("-i", x, "-p", proto, "-m", proto, "--dport", port, c=c) + ["-j", "ACCEPT"])
    for x in own:  # no other service of the lab server
        inp.append(_r("-i", x, c=c) + ["-j", "DROP"])
    return [(FWD, t) for t in fwd] + [(INP, t) for t in inp]


def user_rules(family, lab, user, uid, uplinks, server_ports, nameservers):
    """[(chain, tokens)] for one rootless user: its slirp4netns (or pasta) sends the traffic of
    its containers, every student's alike, from the server itself (OUTPUT), so what the user's
    processes may open is what a student host may: the uplinks, DNS, the server's ports."""
    c = user_comment(lab, user)
    me = ["-m", "owner", "--uid-owner", str(uid)]
    out = []
    if family == 4:
        for u in uplinks:  # the internet or mirror
            out.append(_r("-o", u, *me, c=c) + ["-j", "RETURN"])
        for ns in nameservers:  # slirp4netns answers the containers' DNS with the server's resolvers
            for proto in ("udp", "tcp"):
                out.append(_r("-d", f"{ns}/32", "-p", proto, "-m", proto, "--dport", "53", *me, c=c)
                           + ["-j", "RETURN"])
        for sp in server_ports:  # the server's own addresses are routed through lo
            port, proto = sp.split("/")
            out.append(_r("-o", "lo", "-p", proto, "-m", proto, "--dport", port, *me, c=c) + ["-j", "RETURN"])
    # nothing else: every lab's bridges, the server's addresses and other networks, all IPv6
    out.append(_r(*me, c=c) + ["-j", "DROP"])
    return [(OUT, t) for t in out]


HEAD = _r("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", c=COMMON) + ["-j", "RETURN"]


def jump(chain):
    return _r(c=COMMON) + ["-j", chain]


def norm(tokens):
    """A rule as a set of its options, so iptables' own printing order does not matter."""
    groups, cur, neg = [], None, False
    for t in tokens:
        if t == "!":
            neg = True
            continue
        if t.startswith("-"):
            if cur:
                groups.append(tuple(cur))
            cur, neg = (["!"] if neg else []) + [t], False
        else:
            cur = (cur or []) + [t]
    if cur:
        groups.append(tuple(cur))
    # `-p udp` implies `-m udp`, which iptables prints whether it was given or not
    protos = {g[1] for g in groups if g[0] == "-p" and len(g) > 1}
    return tuple(sorted(g for g in groups if not (g[0] == "-m" and len(g) > 1 and g[1] in protos)))


def line(op, chain, tokens, pos=None):
    """An iptables-restore line (a comment with spaces double-quoted, as iptables-restore parses it)."""
    out = [f'"{t}"' if " " in t else t for t in tokens]
    return " ".join([op, chain, *([str(pos)] if pos else []), *out])


class Table:
    """The filter table of one family, read with ``iptables -S``."""

    def __init__(self, module, family):
        self.module, self.family = module, family
        self.bin = "iptables" if family == 4 else "ip6tables"
        self.chains = {}

    def unusable(self):
        """Why this family's iptables cannot be used here ("" when it can)."""
        missing = [b for b in (self.bin, self.bin + "-restore") if shutil.which(b) is None]
        if missing:
            return f"{' and '.join(missing)} not found (PATH={os.environ.get('PATH', '')})"
        p = self.run("-S", "INPUT")
        if p.returncode != 0:
            return f"`{self.bin} -S INPUT` failed: {(p.stderr or p.stdout).strip()[-300:]}"
        return ""

    def run(self, *args):
        return subprocess.run([self.bin, "-w", "-t", "filter", *args], capture_output=True, text=True)

    def load(self):
        """Every chain of the filter table as token lists (one ``iptables -S``: each call of
        iptables-nft reads the whole ruleset)."""
        p = self.run("-S")
        if p.returncode != 0:
            self.module.fail_json(msg=f"{self.bin} -S failed: {p.stderr.strip()}")
        self.chains = {}
        for ln in p.stdout.splitlines():
            toks = shlex.split(ln)
            if len(toks) >= 2 and toks[0] in ("-P", "-N"):
                self.chains.setdefault(toks[1], [])
            elif len(toks) >= 2 and toks[0] == "-A":
                self.chains.setdefault(toks[1], []).append(toks[2:])

    def apply(self, lines):
        data = "*filter\n" + "".join(ln + "\n" for ln in lines) + "COMMIT\n"
        p = subprocess.run([self.bin + "-restore", "-w", "--noflush"], input=data, capture_output=True, text=True)
        if p.returncode != 0:
            self.module.fail_json(msg=f"{self.bin}-restore failed: {p.stderr.strip()}", lines=lines)


def comment_of(tokens):
    for i, t in enumerate(tokens[:-1]):
        if t == "--comment":
            return tokens[i + 1]
    return None


def plan_present(t, lab, students, uplinks, server_ports, users=(), nameservers=()):
    """(declarations, lines) that make ``t`` hold the rules of ``students`` and of the rootless
    ``users`` ((name, uid) pairs), with labkit's chain heads and jumps first."""
    lines, decl = [], []
    chains = (FWD, INP) + ((OUT,) if users or t.chains.get(OUT) is not None else ())
    for ch in chains:
        rules = t.chains.get(ch)
        if rules is None:
            decl.append(f":{ch} - [0:0]")
            rules = t.chains[ch] = []
        common = [r for r in rules if comment_of(r) == COMMON]
        if not rules or norm(rules[0]) != norm(HEAD) or len(common) != 1:
            lines += [line("-D", ch, r) for r in common]
            lines.append(line("-I", ch, HEAD, 1))
    # (comment, the chains its rules live in, the rules)
    wanted = [(comment(lab, s["student"]), (FWD, INP), student_rules(t.family, lab, s, uplinks, server_ports))
              for s in students]
    wanted += [(user_comment(lab, name), (OUT,), user_rules(t.family, lab, name, uid, uplinks, server_ports, nameservers))
               for name, uid in users]
    for c, owned, want in wanted:
        for ch in owned:
            have = [r for r in t.chains[ch] if comment_of(r) == c]
            mine = [tok for x, tok in want if x == ch]
            if [norm(r) for r in have] != [norm(r) for r in mine]:
                lines += [line("-D", ch, r) for r in have]
                lines += [line("-A", ch, r) for r in mine]
    for parent, target in JUMPS:
        rules = t.chains.get(parent)
        if rules is None or target not in chains:  # no DOCKER-USER: no Docker here (or not for this family)
            continue
        j = jump(target)
        mine = [r for r in rules if norm(r) == norm(j)]
        first_ok = bool(rules) and (norm(rules[0]) == norm(j) or held_by_docker_user(t, parent, rules[0]))
        if not first_ok or len(mine) != 1:
            lines += [line("-D", parent, r) for r in mine]
            lines.append(line("-I", parent, j, 1))
    return decl, lines


def only_jumps_moved(decl, lines):
    """The plan only moves labkit's jumps back to the top of their parent chains."""
    moves = {line(op, parent, jump(target), pos) for parent, target in JUMPS for op, pos in (("-D", None), ("-I", 1))}
    return not decl and bool(lines) and all(ln in moves for ln in lines)


def settled_plan(t, plan, tries=4, wait=0.15):
    """``plan(t)`` (decl, lines); when it would only move labkit's jumps back on top, read the
    table again a moment later first: dockerd, making a network (another lab's, anyone's),
    inserts the network's rules at the top of FORWARD and puts its jump to DOCKER-USER back
    above them a few milliseconds later. A read in between would move labkit's jump for
    nothing and report a change (seen when two labs came up at once)."""
    decl, lines = plan(t)
    for _ in range(tries):
        if not only_jumps_moved(decl, lines):
            break
        time.sleep(wait)
        t.load()
        decl, lines = plan(t)
    return decl, lines


def held_by_docker_user(t, parent, first):
    """FORWARD's first rule is Docker's unconditional jump to DOCKER-USER, where this run keeps
    labkit's jump first: every forwarded packet meets labkit's rules first all the same."""
    return parent == "FORWARD" and t.chains.get("DOCKER-USER") is not None and norm(first) == norm(["-j", "DOCKER-USER"])


def plan_absent(t, lab, student):
    lines = []
    prefix = comment(lab, student) if student else f"labkit lab={lab} "
    left = 0
    for ch in (FWD, INP, OUT):
        for r in t.chains.get(ch) or []:
            c = comment_of(r) or ""
            if c == prefix or (not student and c.startswith(prefix)):
                lines.append(line("-D", ch, r))
            elif c.startswith("labkit lab="):
                left += 1
    if left == 0 and any(t.chains.get(ch) is not None for ch in (FWD, INP, OUT)):
        # the last lab's rules: the jumps and chains go too
        for parent, target in JUMPS:
            for r in t.chains.get(parent) or []:
                if r and r[-1] == target and r[-2] == "-j":
                    lines.append(line("-D", parent, r))
        for ch in (FWD, INP, OUT):
            if t.chains.get(ch) is not None:
                lines += [f"-F {ch}", f"-X {ch}"]
    return lines


def default_uplinks():
    p = subprocess.run(["ip", "-o", "-4", "route", "show", "default"], capture_output=True, text=True)
    out = []
    for ln in p.stdout.splitlines():
        toks = ln.split()
        if "dev" in toks:
            dev = toks[toks.index("dev") + 1]
            if dev not in out:
                out.append(dev)
    return out


def nameservers(path="/etc/resolv.conf"):
    """The server's IPv4 resolvers, where slirp4netns sends its containers' DNS."""
    out = []
    try:
        with open(path) as f:
            for ln in f:
                toks = ln.split()
                if len(toks) >= 2 and toks[0] == "nameserver" and re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", toks[1]):
                    if toks[1] not in out:
                        out.append(toks[1])
    except OSError:
        pass
    return out


def ipv6_on(root="/proc"):
    """IPv6 works on some interface of the server, or would on a new one (a new bridge): no
    ``disable_ipv6`` set on it. What cannot be read counts as on (fail closed)."""
    if not os.path.exists(f"{root}/net/if_inet6"):
        return False  # the kernel has no IPv6 (ipv6.disable=1)
    conf = f"{root}/sys/net/ipv6/conf"
    try:
        names = [n for n in os.listdir(conf) if n not in ("all", "lo")]
    except OSError:
        return True
    for n in names:
        try:
            with open(f"{conf}/{n}/disable_ipv6") as f:
                if f.read().strip() == "0":
                    return True
        except OSError:
            return True
    return False


def private_dir():
    """labkit's private folder for locks: /run/labkit for root (/run is root's alone), else the
    user's runtime folder or cache."""
    if os.geteuid() == 0:
        return "/run/labkit"
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "labkit")
    return os.path.join(os.path.expanduser("~"), ".cache", "labkit", "run")


def unsafe_dir(path, uid):
    """Why the folder ``path`` (made 0700 when missing) is not private to ``uid`` ("" when it is):
    a symlink, not a folder, another owner, or writable by its group or others."""
    if not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symlink (to {os.readlink(path)}), not a folder"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a folder"
    if st.st_uid != uid:
        return f"{path} is owned by uid {st.st_uid}, not by uid {uid} that labkit runs as"
    if st.st_mode & 0o022:
        return f"{path} is writable by its group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def take_lock(module, lock_file):
    """The lock's descriptor, held (flock): in labkit's private folder, never through a symlink."""
    folder = os.path.dirname(lock_file)
    why = unsafe_dir(folder, os.geteuid())
    if why:
        module.fail_json(msg=f"labkit_firewall: the lock's folder is not private: {why}",
                         hint=f"another user may have made it to hold or swap labkit's lock: check and remove "
                              f"{folder} (labkit makes it again, 0700, owned by uid {os.geteuid()})")
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        module.fail_json(msg=f"labkit_firewall: cannot open the lock {lock_file}: {e}",
                         hint=f"remove {lock_file} (a symlink or someone else's file) and run again")
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def rootless_uids(module, users):
    """(name, uid) of each rootless user, or fail naming the one that is not a user here."""
    out = []
    for name in users:
        if not USER_RE.match(name):
            module.fail_json(msg=f"rootless_users: bad user name {name!r}")
        try:
            uid = pwd.getpwnam(name).pw_uid
        except KeyError:
            module.fail_json(msg=f"rootless_users: no user {name!r} on this lab server",
                             hint=f"create it (`useradd -m -s /bin/sh {name}`), or drop `user: {name}` from the lab file")
        if uid == 0:
            module.fail_json(msg=f"rootless_users: {name!r} is root, not a rootless user")
        if (name, uid) not in out:
            out.append((name, uid))
    return out


def usable_tables(module, state):
    """The families' tables to work on: IPv4's, which must work, and IPv6's, which must work
    too while IPv6 is on (``present``); ``absent`` skips what it cannot read."""
    tables = []
    for family in (4, 6):
        t = Table(module, family)
        why = t.unusable()
        if not why:
            tables.append(t)
        elif state == "present" and family == 4:
            module.fail_json(msg=f"iptables does not work on this server: {why}",
                             hint="apt-get install iptables; labkit's playbooks run it as root")
        elif state == "present" and ipv6_on():
            module.fail_json(
                msg=f"IPv6 is on on this lab server but ip6tables does not work: {why}; without IPv6 rules the "
                    "students' hosts would reach each other and the server's services over IPv6",
                hint="apt-get install iptables (it ships ip6tables), or load IPv6 netfilter (modprobe ip6_tables), "
                     "or turn IPv6 off on the server (sysctl -w net.ipv6.conf.all.disable_ipv6=1 "
                     "net.ipv6.conf.default.disable_ipv6=1)")
    return tables


def main():
    module = AnsibleModule(
        argument_spec=dict(
            lab=dict(type="str", required=True),
            students=dict(type="list", elements="dict", default=[]),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            student=dict(type="str", default=""),
            uplinks=dict(type="list", elements="str", default=[]),
            server_ports=dict(type="list", elements="str", default=[]),
            rootless_users=dict(type="list", elements="str", default=[]),
            lock_file=dict(type="path", default=""),
        ),
        supports_check_mode=True,
    )
    p = module.params
    name_ok = re.compile(r"^[a-z0-9][a-z0-9-]*$")
    for s in p["students"]:
        if not name_ok.match(str(s.get("student", ""))):
            module.fail_json(msg=f"bad student id {s.get('student')!r}")
        for k in ("vm_bridge", "docker_bridge", "podman_bridge"):
            if s.get(k) and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", s[k]):
                module.fail_json(msg=f"bad interface name {s[k]!r} for {s['student']}")
    for sp in p["server_ports"]:
        if not re.fullmatch(r"\d{1,5}/(tcp|udp)", sp):
            module.fail_json(msg=f"server_ports: {sp!r} is not PORT/tcp or PORT/udp")
    if not name_ok.match(p["lab"]):
        module.fail_json(msg=f"bad lab name {p['lab']!r}")
    result = dict(changed=False, actions=[], rules=0, uplinks=[], ipv6="off")
    if os.geteuid() != 0:
        # an ordinary account (a student on a classroom machine): iptables is root's, so labkit
        # adds no rule and, never having added one, has none to remove. What holds without them
        # is the engines' own isolation (docs/instructors/shared-machine.md): a rootless Podman
        # network lives in the account's own network namespace, Docker keeps its bridges apart.
        result["skipped_not_root"] = True
        if p["state"] == "present" and (p["students"] or p["rootless_users"]):
            module.warn(f"lab {p['lab']}: no firewall rules (uid {os.geteuid()} is not root): the students' hosts "
                        "are kept apart by their engines alone, not by labkit's rules "
                        "(see docs/instructors/shared-machine.md)")
        module.exit_json(**result)
    if p["state"] == "present" and not p["students"] and not p["rootless_users"]:
        module.exit_json(**result)
    users = rootless_uids(module, p["rootless_users"]) if p["state"] == "present" else []
    dns = nameservers() if users else []
    uplinks = p["uplinks"] or (default_uplinks() if p["state"] == "present" else [])
    result["uplinks"] = uplinks
    if p["state"] == "present" and not uplinks:
        module.warn("no default route on this server: students' hosts reach no network outside the lab server")
    fd = None
    if not module.check_mode:
        fd = take_lock(module, p["lock_file"] or os.path.join(private_dir(), "firewall.lock"))
    try:
        tables = usable_tables(module, p["state"])  # every check before any change
        result["ipv6"] = "filtered" if any(t.family == 6 for t in tables) else "off"
        for t in tables:
            t.load()
            if p["state"] == "present":
                decl, lines = settled_plan(t, lambda tab: plan_present(tab, p["lab"], p["students"], uplinks,
                                                                       p["server_ports"], users, dns))
                result["rules"] += sum(len(student_rules(t.family, p["lab"], s, uplinks, p["server_ports"]))
                                       for s in p["students"])
                result["rules"] += sum(len(user_rules(t.family, p["lab"], n, u, uplinks, p["server_ports"], dns))
                                       for n, u in users)
            else:
                decl, lines = [], plan_absent(t, p["lab"], p["student"])
            if decl or lines:
                result["changed"] = True
                result["actions"] += [f"{t.bin}: {ln}" for ln in decl + lines]
                if not module.check_mode:
                    t.apply(decl + lines)
    finally:
        if fd is not None:
            os.close(fd)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
