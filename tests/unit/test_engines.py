"""The engine core (issue 17) as pure logic: the lab file's engine and user keys, the names of
each engine's containers, the plan's items and extravars, the inventory's groups and
connections. No engine is touched."""
from pathlib import Path

import pytest

from labkit import names
from labkit.ansible.inventory import build, host_vars
from labkit.errors import SpecError
from labkit.lab.spec import parse_lab
from labkit.plan.model import Context, ServerRef, make_plan

CTX = Context(servers=(ServerRef("localhost"),), lab_dir="/x")


def lab(containers, **more):
    return parse_lab({"name": "eng", "students": ["s01", "s02"], "containers": containers, "vm": {"enabled": False},
                      **more})


def test_docker_is_the_default_and_names_stay_as_before():
    p = make_plan(lab(["debian:12", "busybox"]), CTX)
    assert [(c.name, c.hostname, c.engine, c.user) for c in p.containers if c.student == "s01"] == [
        ("labkit-eng-s01-debian12", "s01-debian12", "docker", ""),
        ("labkit-eng-s01-busybox", "s01-busybox", "docker", "")]
    ev = p.extravars()
    assert ev["labkit_engines"] == ["docker"] and ev["labkit_engine_networks"] == []
    assert [n["name"] for n in ev["labkit_networks"]] == ["labkit-eng-s01", "labkit-eng-s02"]


def test_one_distro_on_every_engine_gets_names_that_never_collide():
    p = make_plan(lab(["debian:12", {"distro": "debian:12", "engine": "podman"},
                       {"distro": "debian:12", "engine": "podman", "user": "alice"},
                       {"distro": "debian:12", "engine": "lxc"}]), CTX)
    mine = [c for c in p.containers if c.student == "s02"]
    assert [c.name for c in mine] == ["labkit-eng-s02-debian12", "labkit-eng-s02-debian12-podman",
                                      "labkit-eng-s02-debian12-podman-alice", "labkit-eng-s02-debian12-lxc"]
    assert [c.hostname for c in mine] == ["s02-debian12", "s02-debian12-podman", "s02-debian12-podman-alice",
                                          "s02-debian12-lxc"]
    assert [(c.engine, c.user) for c in mine] == [("docker", ""), ("podman", ""), ("podman", "alice"), ("lxc", "")]
    assert len({c.name for c in p.containers}) == len(p.containers)
    # every one of them is the lab's (and the student's), none another lab's
    assert all(names.owned_by(c.name, "eng", c.student) for c in p.containers)
    assert not any(names.owned_by(c.name, "eng", "s01") for c in mine)
    assert not names.owned_by("labkit-eng-x-s02-debian12-podman", "eng", None, ["eng-x"])
    ev = p.extravars()
    assert ev["labkit_engines"] == ["docker", "podman", "lxc"]
    assert {(n["student"], n["engine"], n["user"]) for n in ev["labkit_engine_networks"]} == {
        (s, e, u) for s in ("s01", "s02") for e, u in (("podman", ""), ("podman", "alice"), ("lxc", ""))}
    assert all(c["engine"] and "user" in c for c in ev["labkit_containers"])


def test_the_lab_wide_engine_is_the_default_of_each_entry():
    lb = lab(["debian:12", {"distro": "busybox", "engine": "docker"}], engine="podman")
    assert [(c.distro, c.engine) for c in lb.containers] == [("debian:12", "podman"), ("busybox", "docker")]


@pytest.mark.parametrize("containers, more, want", [
    ([{"distro": "debian:12", "engine": "lcx"}], {},
     "containers[0].engine: unknown engine 'lcx'; did you mean 'lxc'? engines: docker, podman, lxc"),
    (["debian:12"], {"engine": "rocket"}, "unknown engine 'rocket'"),
    ([{"distro": "debian:12", "engine": "docker", "user": "alice"}], {},
     "containers[0]: user: rootless containers are Podman's"),
    ([{"distro": "debian:12", "user": "alice"}], {}, "containers[0]: user: rootless containers are Podman's"),
    ([{"distro": "debian:12", "engine": "podman", "user": "root"}], {}, "user: root is rootful Podman"),
    ([{"distro": "debian:12", "engine": "podman", "user": "Bad User"}], {}, "containers[0].user: 'Bad User' is not"),
    (["debian:12", {"distro": "debian:12", "engine": "podman"}, {"distro": "debian:12", "engine": "podman"}], {},
     "distro 'debian:12' on engine podman is listed twice (containers[1] and containers[2])"),
    (["debian:12", "debian:12"], {}, "distro 'debian:12' is listed twice"),
])
def test_bad_engine_input_is_an_error_naming_the_key(containers, more, want):
    with pytest.raises(SpecError) as e:
        lab(containers, **more)
    assert want in e.value.message, e.value.message
    assert e.value.exit_code == 2


def test_the_inventory_groups_hosts_by_engine_and_reaches_each_its_own_way():
    rows = [{"name": "labkit-eng-s01-debian12", "role": "container", "student": "s01", "distro": "debian:12"},
            {"name": "labkit-eng-s01-debian12-podman", "role": "container", "student": "s01", "distro": "debian:12",
             "engine": "podman", "user": ""},
            {"name": "labkit-eng-s01-debian12-podman-alice", "role": "container", "student": "s01",
             "distro": "debian:12", "engine": "podman", "user": "alice"}]
    children = build(rows)["all"]["children"]
    assert set(children["docker"]["hosts"]) == {rows[0]["name"]}
    assert set(children["podman"]["hosts"]) == {rows[1]["name"], rows[2]["name"]}
    assert set(children["debian12_podman_alice"]["hosts"]) == {rows[2]["name"]}
    assert host_vars(rows[0])["ansible_connection"] == "community.docker.docker"
    assert host_vars(rows[1])["ansible_connection"] == "containers.podman.podman"
    assert "ansible_podman_executable" not in host_vars(rows[1])
    assert host_vars(rows[2])["ansible_podman_executable"].endswith("/alice/podman")


def test_uid_maps_read_in_a_few_words():
    from labkit.cli.main import uid_map_words

    assert uid_map_words("0 0 4294967295; ") == "none (host ids)"
    assert uid_map_words("0 1001 1; 1 100000 65536; ") == "0->1001, 1->100000 (65536)"
    assert uid_map_words("") == "-"


def test_podman_on_a_remote_lab_server_gets_a_wrapper_per_store(tmp_path, monkeypatch):
    from types import SimpleNamespace as NS

    from labkit.engines.podman import PodmanEngine
    from labkit.servers.base import Server

    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    far = Server("server-2", False, {"ansible_host": "10.0.0.2", "ansible_port": 2200, "ansible_user": "ops",
                                     "ansible_become": True})
    servers = [Server("localhost", True), far]
    items = [NS(name="labkit-p-a-debian12-podman", engine="podman", server="localhost", user=""),
             NS(name="labkit-p-b-debian12", engine="docker", server="server-2", user=""),
             NS(name="labkit-p-b-debian12-podman", engine="podman", server="server-2", user=""),
             NS(name="labkit-p-b-debian12-podman-alice", engine="podman", server="server-2", user="alice")]
    remote = PodmanEngine().playbook_vars("p", items, servers)["labkit_podman_remote"]
    assert list(remote) == ["server-2"] and sorted(remote["server-2"]) == ["", "alice"]
    root, alice = (Path(remote["server-2"][k]).read_text() for k in ("", "alice"))
    assert "'ops@10.0.0.2'], ['sudo', '-n', 'podman']" in root and "'-p', '2200'" in root
    assert "['sudo', '-n', '/usr/local/libexec/labkit/podman-as/alice/podman']" in alice
    assert Path(remote["server-2"][""]).stat().st_mode & 0o111


def test_the_ssh_wrapper_copies_through_exec_and_refuses_mount():
    from labkit.engines import podman_ssh as ps

    assert ps.split_cp(["/tmp/a b", "c1:/root/.ansible/tmp/x.py"]) == ("c1", "/root/.ansible/tmp/x.py", "/tmp/a b", True)
    assert ps.split_cp(["--pause=false", "/tmp/src", "c1:/etc/x"]) == ("c1", "/etc/x", "/tmp/src", True)
    assert ps.split_cp(["c1:/etc/hostname", "/tmp/out"]) == ("c1", "/etc/hostname", "/tmp/out", False)
    assert ps.split_cp(["c1:/a", "c2:/b"]) is None and ps.split_cp(["/a"]) is None
    # every word reaches the server's podman as it was given (the remote shell sees it quoted)
    line = ps.remote(["podman"], ["exec", "c1", "/bin/sh", "-c", "echo $HOME; it's"])
    assert line == "podman exec c1 /bin/sh -c 'echo $HOME; it'\"'\"'s'"
    assert ps.tty_wanted(["exec", "-it", "-u", "student", "c1", "/bin/sh"])
    assert not ps.tty_wanted(["exec", "-i", "c1", "sh", "-t"]) and not ps.tty_wanted(["ps", "-t"])
    assert ps.main(["ssh", "nowhere.invalid"], ["podman"], ["mount", "c1"]) == 125


def test_podman_sizes_and_remote_rows_in_the_inventory():
    from labkit.ansible import inventory
    from labkit.engines.podman import parse_size

    assert parse_size("606.2kB") == 606200 and parse_size("512B") == 512 and parse_size("2GiB") == 2 << 30
    assert parse_size("1.5MB ") == 1500000
    row = {"name": "labkit-p-b-debian12-podman", "role": "container", "engine": "podman", "user": "", "local": False,
           "distro": "debian:12", "podman_executable": "/x/podman-ssh/server-2/_root/podman"}
    hv = inventory.host_vars(row)
    assert hv["ansible_connection"] == "containers.podman.podman"
    assert hv["ansible_podman_executable"] == "/x/podman-ssh/server-2/_root/podman"


def test_k7_says_when_a_container_has_a_user_namespace_of_its_own():
    from labkit.observe import checks
    from labkit.observe.facts import HostFacts

    server = HostFacts("lab-server", "server", ns_pid="pid:[1]", ns_mnt="mnt:[1]", ns_uts="uts:[1]",
                       ns_net="net:[1]", hostname="srv", kernel_release="6.1")

    def host(name: str, n: int, uid_map: str) -> HostFacts:
        return HostFacts(name, "container", ns_pid=f"pid:[{n}]", ns_mnt=f"mnt:[{n}]", ns_uts=f"uts:[{n}]",
                         ns_net=f"net:[{n}]", hostname=name, kernel_release="6.1", uid_map=uid_map)

    rootless = host("rl", 2, "0 1001 1; 1 100000 65536; ")
    rootful = host("rf", 3, "0 0 4294967295; ")
    assert "own user namespace (uid 0 is uid 1001 outside)" in checks.k7(rootless, server, [rootful])
    assert "user namespace" not in checks.k7(rootful, server, [rootless])


def test_a_rootful_podman_bridge_gets_the_rules_of_a_docker_bridge():
    """lab_firewall keeps a student's rootful Podman bridge to itself and the uplink, as it keeps
    the Docker bridge; a student without one gets exactly the rules as before."""
    from tests.conftest import role_module

    fw = role_module("lab_firewall", "labkit_firewall")
    base = {"student": "a", "vm_bridge": "", "vm_gateway": "", "docker_bridge": "br-0123456789ab"}
    before = fw.student_rules(4, "eng", base, ["eth0"], [])
    assert fw.student_rules(4, "eng", {**base, "podman_bridge": ""}, ["eth0"], []) == before
    both = fw.student_rules(4, "eng", {**base, "podman_bridge": "cni-podman1"}, ["eth0"], [])
    podman = [(c, t) for c, t in both if "cni-podman1" in t]
    assert [t for _, t in podman if t[-1] == "RETURN"] == [
        ["-i", "cni-podman1", "-o", "cni-podman1", "-m", "comment", "--comment", "labkit lab=eng student=a", "-j",
         "RETURN"],
        ["-i", "cni-podman1", "-o", "eth0", "-m", "comment", "--comment", "labkit lab=eng student=a", "-j", "RETURN"]]
    assert {(c, t[0]) for c, t in podman if t[-1] == "DROP"} == {
        ("LABKIT-FORWARD", "-i"), ("LABKIT-FORWARD", "-o"), ("LABKIT-INPUT", "-i")}
    assert not any(t[-1] == "ACCEPT" for _, t in podman)  # not joined to the Docker bridge or the VM


def test_down_names_a_remote_servers_podman_networks(tmp_path, monkeypatch):
    """`down`'s list of networks (api.network_names: what it prints and counts) holds each server's
    Docker networks and the other engines' in every store the lab used, on a remote lab server
    too for the engines labkit drives there (their ``read_remote`` capability), as down.yml
    removes them."""
    from dataclasses import replace
    from types import SimpleNamespace as NS

    from labkit import api
    from labkit.api import discover
    from labkit.engines import capabilities, registry
    from labkit.engines import docker as engine
    from labkit.servers.base import Server

    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    here, far = Server("localhost", True), Server("server-2", False, {"ansible_host": "10.0.0.2"})
    far.docker_host = "unix:///tmp/tunnel-to-server-2.sock"
    monkeypatch.setattr(discover, "engine_scopes", lambda lab, spec=None: {"podman": ["", "alice"], "lxc": [""]})
    docker_nets = {here.docker_host: ["labkit-p-a"], far.docker_host: ["labkit-p-b"]}
    monkeypatch.setattr(engine, "client_for", lambda host: NS(networks=NS(
        list=lambda filters: [NS(name=n, attrs={}) for n in docker_nets[host]])))
    asked = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def networks(self, lab, sv, users):
            asked.append((self.name, sv.name, tuple(users)))
            if self.name != "podman":
                return []
            return [{"name": f"labkit-{lab}-{'a' if sv.local else 'b'}{'-' + u if u else ''}", "student": "",
                     "server": sv.name, "engine": self.name, "user": u} for u in users]

    for name in ("podman", "lxc"):
        monkeypatch.setitem(registry.ENGINES, name, Fake(name))
    monkeypatch.setitem(capabilities.ENGINES, "lxc", replace(capabilities.ENGINES["lxc"], read_remote=False))
    got = api.network_names("p", [here, far])
    assert got == ["labkit-p-a", "labkit-p-a (podman)", "labkit-p-a-alice (podman)",
                   "labkit-p-b", "labkit-p-b (podman)", "labkit-p-b-alice (podman)"]
    # LXC's (none of its own) read here only, as long as it is not an engine labkit reads remotely
    assert ("lxc", "localhost", ("",)) in asked and ("lxc", "server-2", ("",)) not in asked
