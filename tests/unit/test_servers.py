"""Pure logic of many lab servers: spreading students, ssh settings, inventory reading, bundles."""
import hashlib
import json
from pathlib import Path

import pytest

from labkit.errors import LabkitError, SpecError
from labkit.images import bundle
from labkit.servers.base import Server, assign, close_podman_ssh, from_inventory, open_podman_ssh
from tests.conftest import child_holding


def servers(*names):
    return [Server(n, n == "localhost") for n in names]


def test_students_are_spread_evenly_and_keep_their_server():
    a = assign(["a", "b", "c", "d", "e"], servers("localhost", "s2"))
    assert a == {"a": "localhost", "b": "s2", "c": "localhost", "d": "s2", "e": "localhost"}
    # a new student goes to the least loaded server; the others stay where they are
    again = assign(["a", "b", "c", "d", "e", "f"], servers("localhost", "s2"), a)
    assert {k: again[k] for k in a} == a and again["f"] == "s2"
    # a server that left the inventory gives its students to the others
    moved = assign(["a", "b"], servers("localhost"), {"a": "localhost", "b": "gone"})
    assert moved == {"a": "localhost", "b": "localhost"}


def test_ssh_settings_come_from_the_inventory():
    s = Server("s2", False, {"ansible_host": "10.0.0.2", "ansible_user": "lab", "ansible_port": 2222,
                             "ansible_ssh_private_key_file": "/k", "ansible_ssh_common_args": "-o Foo=bar"})
    argv = s.ssh_argv()
    assert argv[-1] == "lab@10.0.0.2" and "-p" in argv and "2222" in argv and "/k" in argv and "Foo=bar" in argv
    spec, kw = s.testinfra_spec()
    assert spec == "ssh://lab@10.0.0.2:2222" and kw["ssh_identity_file"] == "/k"
    assert Server("localhost", True).testinfra_spec() == ("local://", {})


def test_vms_reach_a_remote_server_through_a_proxy_command_and_run_its_commands_with_sudo():
    import shlex

    s = Server("s2", False, {"ansible_host": "10.0.0.2", "ansible_user": "lab", "ansible_become": True,
                             "ansible_ssh_private_key_file": "/my keys/k"})
    proxy = shlex.split(s.proxy_command())
    assert proxy[0] == "ssh" and proxy[-3:] == ["-W", "%h:%p", "lab@10.0.0.2"] and "/my keys/k" in proxy
    assert s.become() and not Server("s3", False, {"ansible_user": "root", "ansible_become": True}).become()
    assert not Server("s4", False, {"ansible_user": "lab"}).become()


def test_each_students_vm_goes_to_the_students_server():
    from labkit import api
    from labkit.lab.spec import parse_lab

    lab = parse_lab({"name": "c", "students": ["a", "b", "c"], "containers": ["busybox"], "vm": {"enabled": True}})
    plan = api.vm_plan(lab, None, {"a": "localhost", "b": "s2", "c": "localhost"})
    assert [(v["name"], v["server"]) for v in plan] == [("labkit-c-a-vm", "localhost"), ("labkit-c-b-vm", "s2"),
                                                        ("labkit-c-c-vm", "localhost")]
    assert {v["server"] for v in api.vm_plan(lab)} == {"localhost"}  # the only server, named in the plan
    assert [v["student"] for v in api.vm_plan(lab, ["b"])] == ["b"]


def test_inventory_lab_servers_in_order_with_their_vars(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    lab_servers:\n      hosts:\n        localhost: {ansible_connection: local}\n"
                   "        s2: {ansible_host: 10.0.0.2}\n")
    got = from_inventory(inv)
    assert [(s.name, s.local) for s in got] == [("localhost", True), ("s2", False)]
    assert got[1].hostvars["ansible_host"] == "10.0.0.2"
    empty = tmp_path / "empty.yml"
    empty.write_text("all:\n  hosts:\n    x: {}\n")
    with pytest.raises(SpecError, match="no hosts in group lab_servers"):
        from_inventory(empty)
    with pytest.raises(SpecError, match="inventory not found"):
        from_inventory(tmp_path / "nope.yml")


def test_bundle_checksums_name_the_bad_file(tmp_path):
    (tmp_path / "images").mkdir()
    f = tmp_path / "images" / "x.tar"
    f.write_bytes(b"image bytes")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 1, "images": [], "box": None}))
    sums = "".join(f"{hashlib.sha256((tmp_path / n).read_bytes()).hexdigest()}  {n}\n"
                   for n in ("images/x.tar", "manifest.json"))
    (tmp_path / "SHA256SUMS").write_text(sums)
    assert bundle.verify(tmp_path)["format"] == 1
    f.write_bytes(b"image bytez")
    with pytest.raises(LabkitError, match="images/x.tar does not match its checksum"):
        bundle.verify(tmp_path)
    f.unlink()
    with pytest.raises(LabkitError, match="images/x.tar is listed in SHA256SUMS but missing"):
        bundle.verify(tmp_path)
    with pytest.raises(LabkitError, match="not a labkit bundle"):
        bundle.verify(tmp_path / "images")


def test_the_shared_ssh_connection_stays_while_any_command_on_the_lab_uses_it(labkit_home):
    """Podman's and LXC's wrappers share one SSH connection to a remote server while a labkit
    command runs (its marker exists). A second command on the same lab ending (a second
    `labkit shell`; `labkit status` beside `labkit serve`) must not end it under the first; a
    command killed before its clean-up does not hold it forever."""
    s = Server("far", False, {"ansible_host": "192.0.2.7"})
    marker = Path(s.control_path("lab1") + ".on")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("")  # an older labkit's marker, a file
    code = ("import sys, time\nfrom labkit.servers.base import Server, open_podman_ssh\n"
            "open_podman_ssh('lab1', Server('far', False, {'ansible_host': '192.0.2.7'}))\n"
            "print('in', flush=True); time.sleep(60)\n")
    with child_holding(code):
        assert marker.is_dir()
        open_podman_ssh("lab1", s)
        open_podman_ssh("lab1", s)  # nested in one command
        close_podman_ssh("lab1", s)
        close_podman_ssh("lab1", s)
        assert marker.is_dir(), "the other command still uses the connection"
    open_podman_ssh("lab1", s)
    close_podman_ssh("lab1", s)
    assert not marker.exists(), "the killed command's claim is not counted"


def test_a_wrappers_call_keeps_the_shared_connection_until_its_ssh_ends(labkit_home, tmp_path):
    """A wrapper's call that joined the shared connection while a labkit command ran (a `labkit
    shell` on a remote Podman container, beside `labkit status`) is a user of its own: the
    command ending must not end the connection under it (test_58's probes once got ssh's 255);
    the call, ending last, ends it."""
    s = Server("far", False, {"ansible_host": "192.0.2.7"})
    path = s.control_path("lab1")
    log, go = tmp_path / "ssh.log", tmp_path / "go"
    fake = tmp_path / "ssh"  # records its arguments; a session says so, then waits for `go`
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\ncase "$*" in *"-O exit"*) exit 0;; esac\n'
                    f'echo in\nwhile [ ! -e {go} ]; do sleep 0.05; done\n')
    fake.chmod(0o755)
    open_podman_ssh("lab1", s)  # the labkit command
    Path(path).touch()  # its connection's socket
    code = (f"import sys\nfrom labkit.engines.podman_ssh import main\n"
            f"sys.exit(main([{str(fake)!r}, 'far'], ['podman'], ['ps'], {path!r}))\n")
    with child_holding(code) as child:
        assert f"ControlPath={path}" in log.read_text(), "the call shares the command's connection"
        close_podman_ssh("lab1", s)  # the command ends first (its own ssh is the fake too)
        assert Path(path + ".on").is_dir() and "-O exit" not in log.read_text(), "ended under the call"
        go.touch()
        assert child.wait(10) == 0
    assert not Path(path + ".on").exists()
    assert [ln for ln in log.read_text().splitlines() if "-O exit" in ln] == [f"-o ControlPath={path} -O exit far"]
