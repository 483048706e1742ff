"""A remote lab server hosts the students' VMs: `labkit prepare` installs the VM stack there
and adds the box from the offline bundle; `labkit up` has Vagrant boot the VM on that server
and reaches it through the server (an SSH ProxyCommand); facts, verify and status see it;
`labkit down` removes it there.

The remote server is this machine reached over SSH (its own sshd on a loopback port, root's
key for this test only): the remote code path runs for real without a VM inside a VM, which
emulation makes far too slow."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from labkit import paths
from tests.conftest import process_cmdlines
from tests.labs import down_leftovers

from .conftest import bundle_digest, loopback_server, recap, run, virsh

pytestmark = [pytest.mark.integration, pytest.mark.vm]
VM = "labkit-far1-s01-vm"
SERVER_HOME = Path("/var/lib/labkit")
PORT = 2222


@pytest.fixture(scope="module")
def far(tmp_path_factory):
    d = tmp_path_factory.mktemp("far")
    with loopback_server(d, PORT, "far") as server:
        inv = server["inv"]
        run("images", "build", "busybox")
        run("box", "build")
        lab = d / "far1.yml"
        lab.write_text("name: far1\nstudents: [s01]\ncontainers: [busybox]\nvm: {enabled: true}\n")
        created = run("bundle", "create", "-f", str(lab), "--no-debs", "--no-wheels", str(d / "bundle"))  # test_58
        prepared = [run("prepare", "-i", str(inv), "--bundle", str(d / "bundle"), "--bundle-digest",
                        bundle_digest(created)) for _ in range(2)]
        down_leftovers("-f", str(lab), "-i", str(inv))
        up = run("up", "-f", str(lab), "-i", str(inv), "--no-facts")  # the facts: read by a test below
        state = {"lab": str(lab), "inv": str(inv), "up": up, "prepared": prepared, "dir": d, "down": False}
        yield state
        if not state["down"]:  # the last test's `down` did not end well: whatever it left
            down_leftovers("-f", str(lab), "-i", str(inv))


def test_prepare_installs_the_vm_stack_and_the_box_once(far):
    first, second = far["prepared"]
    assert recap(first.stdout)["failures"] == 0
    assert recap(second.stdout)["changed"] == 0, second.stdout
    rec = json.loads((SERVER_HOME / "server.json").read_text())
    assert rec["box"] == "labkit/debian12" and rec["accel"] in ("kvm", "qemu")
    assert rec["vagrant_home"] == f"{SERVER_HOME}/vagrant.d"
    boxes = subprocess.run(["vagrant", "box", "list"], env=dict(os.environ, VAGRANT_HOME=rec["vagrant_home"]),
                           capture_output=True, text=True, check=True).stdout
    assert "labkit/debian12" in boxes


def test_up_boots_the_vm_on_the_remote_server_and_reaches_it_through_it(far):
    out = far["up"].stdout
    assert recap(out)["failures"] == 0
    assert "VM on far: QEMU emulation (TCG)" in out or "VM on far: KVM" in out
    assert VM in virsh("list", "--name")
    assert (SERVER_HOME / "labs/far1/vagrant/s01/Vagrantfile").is_file(), "Vagrant did not run on the server"
    mine = paths.lab_dir("far1") / "vagrant/s01"
    assert "ProxyCommand ssh " in (mine / "ssh_config").read_text() and f"-p {PORT}" in (mine / "ssh_config").read_text()
    assert (mine / "private_key").stat().st_mode & 0o077 == 0
    st = json.loads(run("status", "-f", far["lab"], "--json").stdout)
    vm = next(h for h in st["hosts"] if h["role"] == "vm")
    assert vm["server"] == "far" and vm["state"] == "running"


def test_facts_and_verify_see_the_remote_vm_on_its_own_kernel(far):
    rows = json.loads(run("facts", "-f", far["lab"], "--json").stdout)
    server = next(r for r in rows if r["role"] == "server")
    vm = next(r for r in rows if r["role"] == "vm")
    box = next(r for r in rows if r["role"] == "container")
    assert server["host"] == "far" and vm["server"] == "far" and box["server"] == "far"
    assert not vm["error"] and vm["pid1"] == "systemd"
    assert vm["boot_id"] != server["boot_id"] and vm["same_kernel"] is False
    assert box["boot_id"] == server["boot_id"] and box["same_kernel"] is True
    p = run("verify", "-f", far["lab"], "--json")
    results = json.loads(p.stdout)
    assert results and all(r["outcome"] == "passed" for r in results), [r for r in results if r["outcome"] != "passed"]


def test_second_up_changes_nothing_and_shell_reaches_its_hosts(far):
    again = run("up", "-f", far["lab"], "--no-facts")
    assert recap(again.stdout)["changed"] == 0, again.stdout
    assert run("shell", "-f", far["lab"], "vm", "cat", "/proc/1/comm").stdout.split() == ["systemd"]
    # a container of a remote server: `docker exec` on that server, over SSH
    assert run("shell", "-f", far["lab"], "busybox", "id", "-un").stdout.split() == ["student"]


def test_down_removes_the_vm_from_the_remote_server(far):
    from labkit.vm import vms

    addresses = vms.proxied_addresses("far1")
    assert len(addresses) == 1
    down = run("down", "-f", far["lab"])
    far["down"] = True  # it exited 0: nothing for the fixture's own `down` to do
    # nothing said on stderr but the line naming the lab (no warning or error about the VM)
    assert [ln for ln in down.stderr.splitlines() if not ln.startswith("lab 'far1' (")] == [], down.stderr
    assert VM not in virsh("list", "--all", "--name")
    vols = subprocess.run(["virsh", "-q", "-c", "qemu:///system", "vol-list", "default"], capture_output=True,
                          text=True, check=True).stdout
    assert "labkit-far1-" not in vols
    assert not (SERVER_HOME / "labs/far1/vagrant").exists()
    assert not (paths.lab_dir("far1") / "vagrant").exists()
    st = run("status", "-f", far["lab"], "--json", check=False)
    assert st.returncode == 8 and json.loads(st.stdout)["hosts"] == [], st.stdout + st.stderr  # not up
    deadline = time.monotonic() + 30  # a ProxyCommand ends once its master has closed: give it that time
    while (left := [cmd for _, cmd in process_cmdlines() if f"-W {addresses[0]}" in cmd]) and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], "an ssh ProxyCommand to the removed VM is still running"
