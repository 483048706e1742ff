"""Pure logic of the rules roles/lab_firewall/library/labkit_firewall.py writes: which rules a
student gets, in which order, and how they compare with what `iptables -S` prints. No iptables."""
from __future__ import annotations

import shlex

import pytest

from tests.conftest import role_module


def firewall():
    return role_module("lab_firewall", "labkit_firewall")


def test_firewall_rules_compare_as_iptables_prints_them():
    fw = firewall()
    s = {"student": "a", "vm_bridge": "lkv0123456789", "vm_gateway": "10.204.3.33", "docker_bridge": "br-0123456789ab"}
    rules = fw.student_rules(4, "iso", s, ["eth0"], [])
    printed = {  # `iptables -S` lines of the same rules
        '-A LABKIT-INPUT -d 10.204.3.33/32 -i lkv0123456789 -p udp -m udp --dport 53 -m comment '
        '--comment "labkit lab=iso student=a" -j ACCEPT',
        '-A LABKIT-FORWARD -i lkv0123456789 -o br-0123456789ab -m comment --comment "labkit lab=iso student=a" -j ACCEPT',
    }
    norms = {fw.norm(t) for _, t in rules}
    for ln in printed:
        assert fw.norm(shlex.split(ln)[2:]) in norms
    assert fw.norm(shlex.split("-A FORWARD -m comment --comment labkit -j LABKIT-FORWARD")[2:]) == fw.norm(
        fw.jump("LABKIT-FORWARD"))


def test_firewall_allows_first_then_drops_and_names_the_student():
    fw = firewall()
    s = {"student": "a", "vm_bridge": "lkv0123456789", "vm_gateway": "10.204.3.33", "docker_bridge": "br-0123456789ab"}
    for family in (4, 6):
        rules = fw.student_rules(family, "iso", s, ["eth0"], ["3142/tcp"])
        assert all(fw.comment_of(t) == "labkit lab=iso student=a" for _, t in rules)
        for chain in ("LABKIT-FORWARD", "LABKIT-INPUT"):
            targets = [t[-1] for c, t in rules if c == chain]
            first_drop = targets.index("DROP")
            assert all(x == "DROP" for x in targets[first_drop:]), (family, chain, targets)
    v6 = fw.student_rules(6, "iso", s, ["eth0"], [])
    assert not any(t[-1] == "ACCEPT" for _, t in v6)  # no IPv6 in a lab: nothing accepted
    assert all("-d" not in t for _, t in v6)
    inp = [t for c, t in fw.student_rules(4, "iso", s, ["eth0"], []) if c == "LABKIT-INPUT"]
    accepted = [t for t in inp if t[-1] == "ACCEPT"]
    assert len(accepted) == 3 and all("lkv0123456789" in t for t in accepted)  # DHCP, DNS udp/tcp: the VM's only


@pytest.mark.parametrize("student", [{"student": "b", "vm_bridge": "lkv0123456789", "vm_gateway": "10.0.0.1",
                                      "docker_bridge": ""},
                                     {"student": "b", "vm_bridge": "", "vm_gateway": "", "docker_bridge": "br-x"}])
def test_firewall_one_kind_of_host_only(student):
    fw = firewall()
    rules = fw.student_rules(4, "iso", student, ["eth0"], [])
    bridges = {x for x in (student["vm_bridge"], student["docker_bridge"]) if x}
    assert {tok for _, t in rules for tok in t if tok.startswith(("lkv", "br-"))} == bridges


class FakeTable:
    """The filter table as labkit_firewall reads it: chain -> rules as token lists."""

    def __init__(self, family, chains):
        self.family, self.chains = family, chains


def _rules(*lines):
    return [shlex.split(ln) for ln in lines]


S = {"student": "a", "vm_bridge": "lkv0123456789", "vm_gateway": "10.204.3.33", "docker_bridge": "br-0123456789ab"}


def test_present_puts_the_jumps_back_on_top_when_libvirt_or_docker_pushed_them_down():
    fw = firewall()
    jump = "-m comment --comment labkit -j LABKIT-FORWARD"
    settled = {
        "FORWARD": _rules(jump, "-j LIBVIRT_FWX", "-j DOCKER-USER"),
        "DOCKER-USER": _rules(jump, "-j RETURN"),
        "INPUT": _rules("-m comment --comment labkit -j LABKIT-INPUT", "-j LIBVIRT_INP"),
        "LABKIT-FORWARD": [fw.HEAD] + [t for c, t in fw.student_rules(4, "iso", S, ["eth0"], []) if c == fw.FWD],
        "LABKIT-INPUT": [fw.HEAD] + [t for c, t in fw.student_rules(4, "iso", S, ["eth0"], []) if c == fw.INP],
    }
    assert fw.plan_present(FakeTable(4, settled), "iso", [S], ["eth0"], []) == ([], [])  # nothing to do
    # libvirt rebuilt its chains (its jumps on top, above Docker's and labkit's)
    pushed = dict(settled, FORWARD=_rules("-j LIBVIRT_FWX", "-j DOCKER-USER", jump))
    decl, lines = fw.plan_present(FakeTable(4, pushed), "iso", [S], ["eth0"], [])
    assert decl == [] and lines == ["-D FORWARD " + jump, "-I FORWARD 1 " + jump]
    # Docker made a network (its DOCKER-USER jump on top): labkit's jump is first there, so every
    # forwarded packet still meets labkit's rules first; left as it is (no change to report)
    docker_made_a_network = dict(settled, FORWARD=_rules("-j DOCKER-USER", "-j LIBVIRT_FWX", jump))
    assert fw.plan_present(FakeTable(4, docker_made_a_network), "iso", [S], ["eth0"], []) == ([], [])
    # ... but not without labkit's jump in FORWARD, nor where there is no DOCKER-USER
    no_jump = dict(docker_made_a_network, FORWARD=_rules("-j DOCKER-USER", "-j LIBVIRT_FWX"))
    assert fw.plan_present(FakeTable(4, no_jump), "iso", [S], ["eth0"], [])[1] == ["-I FORWARD 1 " + jump]
    no_docker = {k: v for k, v in docker_made_a_network.items() if k != "DOCKER-USER"}
    assert fw.plan_present(FakeTable(4, no_docker), "iso", [S], ["eth0"], [])[1] == [
        "-D FORWARD " + jump, "-I FORWARD 1 " + jump]
    # a jump gone from DOCKER-USER and INPUT comes back first
    gone = dict(settled, **{"DOCKER-USER": _rules("-j RETURN"), "INPUT": _rules("-j LIBVIRT_INP")})
    _, lines = fw.plan_present(FakeTable(4, gone), "iso", [S], ["eth0"], [])
    assert lines == ["-I DOCKER-USER 1 " + jump, "-I INPUT 1 -m comment --comment labkit -j LABKIT-INPUT"]


def test_present_rewrites_only_the_student_whose_rules_differ_and_absent_keeps_other_labs():
    fw = firewall()
    b = dict(S, student="b", vm_bridge="lkvbbbbbbbbbb", docker_bridge="br-bbbbbbbbbbbb")
    other = [t for c, t in fw.student_rules(4, "other", S, ["eth0"], []) if c == fw.FWD]
    mine = [t for c, t in fw.student_rules(4, "iso", S, ["eth0"], []) if c == fw.FWD]
    chains = {"FORWARD": [], "INPUT": [], "LABKIT-FORWARD": [fw.HEAD] + other + mine[:-1],  # a's last rule lost
              "LABKIT-INPUT": [fw.HEAD] + [t for c, t in fw.student_rules(4, "iso", S, ["eth0"], []) if c == fw.INP]}
    _, lines = fw.plan_present(FakeTable(4, chains), "iso", [S, b], ["eth0"], [])
    touched = {ln.split('"')[1] for ln in lines if '"' in ln}
    assert touched == {"labkit lab=iso student=a", "labkit lab=iso student=b"}  # never lab "other"
    assert [ln for ln in lines if ln.startswith("-D LABKIT-FORWARD")] == [fw.line("-D", fw.FWD, t) for t in mine[:-1]]
    gone = fw.plan_absent(FakeTable(4, chains), "iso", "")
    assert gone and all("lab=iso " in ln for ln in gone)  # lab "other" keeps its rules, chains and jumps stay


class SettlingTable(FakeTable):
    """A table read again shows the next state: dockerd mid-way through making a network."""

    def __init__(self, family, states):
        self.states = list(states)
        super().__init__(family, self.states.pop(0))

    def load(self):
        if self.states:
            self.chains = self.states.pop(0)


def test_a_jump_pushed_down_for_a_moment_is_read_again_not_moved(monkeypatch):
    """dockerd making a network (another lab's) inserts the network's rules on top of FORWARD and
    puts its jump to DOCKER-USER back above them a moment later: read in between, labkit would
    move its jump for nothing and report a change. It reads again; a push that stays is moved."""
    fw = firewall()
    monkeypatch.setattr(fw.time, "sleep", lambda s: None)
    jump = "-m comment --comment labkit -j LABKIT-FORWARD"
    settled = {
        "FORWARD": _rules("-j DOCKER-USER", jump),
        "DOCKER-USER": _rules(jump, "-j RETURN"),
        "INPUT": _rules("-m comment --comment labkit -j LABKIT-INPUT"),
        "LABKIT-FORWARD": [fw.HEAD] + [t for c, t in fw.student_rules(4, "iso", S, ["eth0"], []) if c == fw.FWD],
        "LABKIT-INPUT": [fw.HEAD] + [t for c, t in fw.student_rules(4, "iso", S, ["eth0"], []) if c == fw.INP],
    }
    midway = dict(settled, FORWARD=_rules("-o br-new -j DOCKER", "-j DOCKER-USER", jump))

    def plan(t):
        return fw.plan_present(t, "iso", [S], ["eth0"], [])

    assert fw.settled_plan(SettlingTable(4, [midway, settled]), plan) == ([], [])
    stays = SettlingTable(4, [midway] * 10)
    assert fw.settled_plan(stays, plan) == ([], ["-D FORWARD " + jump, "-I FORWARD 1 " + jump])
    # a student's rules to write are not waited for
    missing = dict(settled, **{"LABKIT-FORWARD": [fw.HEAD]})
    decl, lines = fw.settled_plan(SettlingTable(4, [missing, settled]), plan)
    assert any(ln.startswith("-A LABKIT-FORWARD") for ln in lines)


def test_a_rootless_user_reaches_the_uplink_dns_and_server_ports_only():
    """Issue 26 item 3: a rootless container's traffic leaves from the server itself (the user's
    slirp4netns), so the user's uid gets OUTPUT rules: the uplink, DNS to the server's resolvers
    and the server ports return, then everything else of that uid is dropped; over IPv6 all."""
    fw = firewall()
    rules = fw.user_rules(4, "iso", "alice", 1001, ["eth0"], ["3142/tcp"], ["10.255.255.53"])
    assert {c for c, _ in rules} == {fw.OUT}
    toks = [t for _, t in rules]
    assert all(fw.comment_of(t) == "labkit lab=iso user=alice" for t in toks)
    assert all(t[t.index("--uid-owner") + 1] == "1001" for t in toks)  # each rule is the user's only
    assert [t[-1] for t in toks] == ["RETURN"] * 4 + ["DROP"]
    assert toks[-1][:-2] == ["-m", "owner", "--uid-owner", "1001", "-m", "comment", "--comment",
                             "labkit lab=iso user=alice"]  # the drop: anything else of that uid
    assert ["-o", "eth0"] == toks[0][:2]
    assert any("-d" in t and "10.255.255.53/32" in t and "53" in t for t in toks)
    assert any("-o" in t and "lo" in t and "3142" in t for t in toks)
    v6 = fw.user_rules(6, "iso", "alice", 1001, ["eth0"], ["3142/tcp"], ["10.255.255.53"])
    assert [t[-1] for _, t in v6] == ["DROP"]
    printed = ('-A LABKIT-OUTPUT -o eth0 -m owner --uid-owner 1001 -m comment --comment "labkit lab=iso user=alice" '
               '-j RETURN')
    assert fw.norm(shlex.split(printed)[2:]) == fw.norm(toks[0])


def test_present_with_rootless_users_adds_the_output_chain_first_in_output():
    fw = firewall()
    empty = {"FORWARD": [], "INPUT": [], "OUTPUT": _rules("-j LIBVIRT_OUT")}
    decl, lines = fw.plan_present(FakeTable(4, dict(empty)), "iso", [S], ["eth0"], [], [("alice", 1001)], [])
    assert ":LABKIT-OUTPUT - [0:0]" in decl
    assert "-I OUTPUT 1 -m comment --comment labkit -j LABKIT-OUTPUT" in lines
    assert any(ln.startswith("-A LABKIT-OUTPUT") and "user=alice" in ln for ln in lines)
    # without rootless users (and no chain yet) OUTPUT is left alone
    decl, lines = fw.plan_present(FakeTable(4, dict(empty)), "iso", [S], ["eth0"], [])
    assert not any("OUTPUT" in x for x in decl + lines)
    # settled: nothing to do; libvirt's jump pushed above labkit's: moved back
    settled = {
        "FORWARD": _rules("-m comment --comment labkit -j LABKIT-FORWARD"),
        "INPUT": _rules("-m comment --comment labkit -j LABKIT-INPUT"),
        "OUTPUT": _rules("-m comment --comment labkit -j LABKIT-OUTPUT", "-j LIBVIRT_OUT"),
        "LABKIT-FORWARD": [fw.HEAD] + [t for c, t in fw.student_rules(4, "iso", S, ["eth0"], []) if c == fw.FWD],
        "LABKIT-INPUT": [fw.HEAD] + [t for c, t in fw.student_rules(4, "iso", S, ["eth0"], []) if c == fw.INP],
        "LABKIT-OUTPUT": [fw.HEAD] + [t for _, t in fw.user_rules(4, "iso", "alice", 1001, ["eth0"], [], [])],
    }
    assert fw.plan_present(FakeTable(4, settled), "iso", [S], ["eth0"], [], [("alice", 1001)], []) == ([], [])
    pushed = dict(settled, OUTPUT=_rules("-j LIBVIRT_OUT", "-m comment --comment labkit -j LABKIT-OUTPUT"))
    _, lines = fw.plan_present(FakeTable(4, pushed), "iso", [S], ["eth0"], [], [("alice", 1001)], [])
    assert lines == ["-D OUTPUT -m comment --comment labkit -j LABKIT-OUTPUT",
                     "-I OUTPUT 1 -m comment --comment labkit -j LABKIT-OUTPUT"]
    # the user's uid changed (the user made again): its rules are rewritten
    _, lines = fw.plan_present(FakeTable(4, settled), "iso", [S], ["eth0"], [], [("alice", 1002)], [])
    assert lines and all("user=alice" in ln for ln in lines)
    # absent: the user's rules go with the lab, and the chain and jump with the last lab
    gone = fw.plan_absent(FakeTable(4, settled), "iso", "")
    assert any(ln.startswith("-D LABKIT-OUTPUT") and "user=alice" in ln for ln in gone)
    assert "-D OUTPUT -m comment --comment labkit -j LABKIT-OUTPUT" in gone and "-X LABKIT-OUTPUT" in gone
    # one student's down keeps the lab's user rules
    one = fw.plan_absent(FakeTable(4, settled), "iso", "a")
    assert one and not any("user=alice" in ln for ln in one) and "-X LABKIT-OUTPUT" not in one


def test_nameservers_are_the_ipv4_resolvers_of_resolv_conf(tmp_path):
    f = tmp_path / "resolv.conf"
    f.write_text("# a comment\nnameserver 127.0.0.53\nnameserver fd00::1\nsearch lan\nnameserver 10.0.0.2\n"
                 "nameserver 127.0.0.53\n")
    assert firewall().nameservers(str(f)) == ["127.0.0.53", "10.0.0.2"]
    assert firewall().nameservers(str(tmp_path / "none")) == []


def _proc(tmp_path, inet6=True, **disable):
    root = tmp_path / "proc"
    (root / "net").mkdir(parents=True)
    if inet6:
        (root / "net" / "if_inet6").write_text("")
    for name, v in disable.items():
        d = root / "sys" / "net" / "ipv6" / "conf" / name
        d.mkdir(parents=True)
        (d / "disable_ipv6").write_text(f"{v}\n")
    return str(root)


def test_ipv6_counts_as_on_unless_every_interface_and_the_default_disable_it(tmp_path):
    """Item 8: IPv6 rules are needed wherever IPv6 works on an interface, or would on a new
    bridge (the default); only a kernel without IPv6 or everything disabled counts as off."""
    fw = firewall()
    assert fw.ipv6_on(_proc(tmp_path / "1", all=1, default=0, lo=1, eth0=1)) is True   # new bridges get it
    assert fw.ipv6_on(_proc(tmp_path / "2", all=1, default=1, lo=0, eth0=0)) is True   # eth0 has it
    assert fw.ipv6_on(_proc(tmp_path / "3", all=1, default=1, lo=0, eth0=1)) is False  # lo alone: off
    assert fw.ipv6_on(_proc(tmp_path / "4", inet6=False)) is False                     # ipv6.disable=1
    assert fw.ipv6_on(_proc(tmp_path / "5")) is True  # no sysctl to read: counted as on (fail closed)


def test_the_locks_folder_must_be_private(tmp_path):
    """Item 6: labkit's lock lives in a folder of its own - made 0700 when missing, refused
    when it is a symlink, someone else's, or writable by others."""
    import os

    fw = firewall()
    me = os.geteuid()
    d = tmp_path / "run" / "labkit"
    assert fw.unsafe_dir(str(d), me) == "" and (d.stat().st_mode & 0o777) == 0o700
    assert "owned by uid" in fw.unsafe_dir(str(d), me + 1)
    d.chmod(0o777)
    assert "writable by its group or others (mode 0777)" in fw.unsafe_dir(str(d), me)
    link = tmp_path / "link"
    link.symlink_to(d)
    assert fw.unsafe_dir(str(link), me).startswith(f"{link} is a symlink (to {d})")
    f = tmp_path / "file"
    f.write_text("")
    assert fw.unsafe_dir(str(f), me) == f"{f} is not a folder"
