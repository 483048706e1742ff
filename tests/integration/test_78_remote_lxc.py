"""LXC on a remote lab server (issue 17): a lab with a Debian 12 container on Docker and one on
LXC, both on a lab server of an inventory reached over SSH. `labkit prepare --lxc` sets LXC up
there; `labkit up` makes the LXC container there (role lab_lxc as root on the server, from that
server's Docker image) and Ansible provisions it, the lesson's own playbook too (a module, a
file copied in and fetched back), with labkit's connection plugin labkit_lxc, whose
lxc-attach is labkit's wrapper that runs it on the server over SSH; status, facts,
verify (engine shown), shell and `up --plan` read it there; a second `up` changes nothing;
`down` leaves nothing, and no SSH connection behind.

The remote server is this machine reached over SSH (its own sshd on a loopback port of this
module's, root's key for this test only): the remote code path runs for real. No VM."""
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from labkit import paths
from labkit.engines import lxc_layout, lxc_server
from tests.labs import down_leftovers

from .conftest import docker, loopback_server, recap, run, ssh_masters

pytestmark = [pytest.mark.integration]
LAB, PORT, SERVER = "rlxc78", 2224, "far78"
DOCKER, LXC = f"labkit-{LAB}-s01-debian12", f"labkit-{LAB}-s01-debian12-lxc"
LXC_PATH = Path("/var/lib/lxc")
# the lesson's own content on the LXC host: modules (pipelined), a file in (put_file) and out
# (fetch_file) through labkit_lxc over SSH
CONTENT = """\
- name: Lesson content on the LXC host
  hosts: lxc
  gather_facts: false
  tasks:
    - name: Ensure the exercise file is there
      ansible.builtin.copy:
        content: "lesson for {{ inventory_hostname }}\\n"
        dest: /root/lesson.txt
        mode: "0600"
    - name: Read it back
      ansible.builtin.stat:
        path: /root/lesson.txt
      register: lesson
    - name: Check it
      ansible.builtin.assert:
        that: lesson.stat.exists and lesson.stat.size > 0
    - name: Fetch it
      ansible.builtin.fetch:
        src: /root/lesson.txt
        dest: FETCHED/
"""


def lxc_state(name: str) -> str:
    return subprocess.run(["lxc-info", "-n", name, "-sH"], capture_output=True, text=True).stdout.strip()


def mine_in_lxc_path() -> list[str]:
    return sorted(d.name for d in LXC_PATH.iterdir() if d.name.startswith(f"labkit-{LAB}-"))


@pytest.fixture(scope="module")
def far(tmp_path_factory):
    d = tmp_path_factory.mktemp("far78")
    lab = d / f"{LAB}.yml"
    with loopback_server(d, PORT, SERVER) as server:
        inv = server["inv"]
        try:
            run("images", "build", "debian:12")
            lab.write_text(f"name: {LAB}\nstudents: [s01]\nvm: {{enabled: false}}\n"
                           "provision: {packages: [], playbooks: [content.yml]}\n"
                           "containers:\n  - debian:12\n  - {distro: debian:12, engine: lxc}\n")
            (d / "content.yml").write_text(CONTENT.replace("FETCHED", str(d / "fetched")))
            t0 = time.monotonic()
            prepared = run("prepare", "-i", str(inv), "--lxc")
            t_prepare = time.monotonic() - t0
            if mine_in_lxc_path() or docker("ps", "-aq", "--filter", f"label=labkit.lab={LAB}").strip():
                down_leftovers("-f", str(lab), "-i", str(inv))  # an earlier run's leftovers
            t_up = time.monotonic()
            up = run("up", "-f", str(lab), "-i", str(inv))
            yield {"lab": str(lab), "inv": str(inv), "up": up, "prepared": prepared, "t0": t0,
                   "seconds": {"prepare": t_prepare, "up": time.monotonic() - t_up}}
        finally:
            if mine_in_lxc_path() or docker("ps", "-aq", "--filter", f"label=labkit.lab={LAB}").strip():
                down_leftovers("-f", str(lab), "-i", str(inv))  # a test failed half-way


def test_prepare_sets_lxc_up_on_the_server(far):
    assert recap(far["prepared"].stdout)["failures"] == 0
    for f in ("/etc/subuid", "/etc/subgid"):  # every container's own range (one line or several)
        assert lxc_server.subids_cover(f, lxc_layout.IDMAP), f


def test_up_makes_the_lxc_container_on_the_remote_server(far):
    out = far["up"].stdout
    assert recap(out)["failures"] == 0, out
    assert mine_in_lxc_path() == [LXC] and lxc_state(LXC) == "RUNNING"
    # the lesson's content reached it: a module run, a file copied in and fetched back
    want = f"lesson for {LXC}\n"
    assert (LXC_PATH / LXC / "rootfs" / "root" / "lesson.txt").read_text() == want
    assert (Path(far["lab"]).parent / "fetched" / LXC / "root" / "lesson.txt").read_text() == want
    assert DOCKER in docker("ps", "--filter", f"label=labkit.lab={LAB}", "--format", "{{.Names}}").split()
    # Ansible reached it through labkit's wrapper, which runs lxc-attach over SSH
    wrapper = paths.lab_dir(LAB) / "lxc-ssh" / SERVER / "lxc-attach"
    assert f"-p', '{PORT}'" in wrapper.read_text() and "'attach'" in wrapper.read_text()
    st = json.loads(run("status", "-f", far["lab"], "--json").stdout)
    rows = {h["name"]: h for h in st["hosts"]}
    assert rows[LXC]["server"] == SERVER and rows[LXC]["engine"] == "lxc" and rows[LXC]["state"] == "running"
    assert rows[LXC]["local"] is False and rows[LXC]["lxc_attach"] == str(wrapper)
    assert rows[DOCKER]["server"] == SERVER and st["missing"] == []
    inv = json.loads(run("inventory", "-f", far["lab"], "--format", "json").stdout)
    assert inv["_meta"]["hostvars"][LXC]["ansible_connection"] == "labkit_lxc"
    assert ssh_masters(PORT) == [], "the shared SSH connection outlived labkit up"


def test_verify_passes_with_the_engine_of_each_host(far):
    results = json.loads(run("verify", "-f", far["lab"], "--json").stdout)
    bad = [r for r in results if r["outcome"] != "passed" and not r["detail"].startswith("not applicable: the lab has no VM")]
    assert results and bad == [], bad
    engines = {r["host"]: r["engine"] for r in results if r["host"] in (DOCKER, LXC)}
    assert engines == {DOCKER: "docker", LXC: "lxc"}
    mine = {r["fact"]: r for r in results if r["host"] == LXC}
    assert all(mine[k]["outcome"] == "passed" for k in ("K1", "K2", "K4", "K5", "K6", "K7")), mine
    assert "PID 1 init" in mine["K6"]["detail"], mine["K6"]
    rows = {r["host"]: r for r in json.loads(run("facts", "-f", far["lab"], "--json").stdout)}
    assert rows[LXC]["server"] == SERVER and not rows[LXC]["error"] and rows[LXC]["pid1"] == "init"
    assert rows[LXC]["same_kernel"] is True  # this "remote" server is this machine
    assert rows[LXC]["boot_id_engine"] and rows[LXC]["boot_id_engine"] != rows[LXC]["boot_id"]


def test_a_server_without_lxc_is_refused_naming_what_it_lacks(far, tmp_path):
    """A server whose Python has no `lxc` binding (run with -S here: no dist-packages): `up`
    stops before anything is made, exit 3, naming the server, the piece and the fix."""
    py = tmp_path / "python-without-lxc"
    py.write_text('#!/bin/sh\nexec /usr/bin/python3 -I -S "$@"\n')
    py.chmod(0o755)
    inv = json.loads(Path(far["inv"]).read_text())
    inv["all"]["children"]["lab_servers"]["hosts"][SERVER]["ansible_python_interpreter"] = str(py)
    (tmp_path / "hosts.yml").write_text(json.dumps(inv))
    bad = tmp_path / "bad.yml"
    bad.write_text(f"name: {LAB}b\nstudents: [s01]\nvm: {{enabled: false}}\nprovision: {{packages: []}}\n"
                   "containers:\n  - debian:12\n  - {distro: debian:12, engine: lxc}\n")
    try:
        p = run("up", "-f", str(bad), "-i", str(tmp_path / "hosts.yml"), check=False)
        assert p.returncode == 3, p.stdout + p.stderr
        assert f"engine lxc: lab server {SERVER} lacks the lxc Python binding" in p.stderr, p.stderr
        assert f"labkit-{LAB}b-s01-debian12-lxc" in p.stderr and "labkit prepare -i INVENTORY --lxc" in p.stderr
        assert not [d for d in LXC_PATH.iterdir() if d.name.startswith(f"labkit-{LAB}b-")]
        assert docker("ps", "-aq", "--filter", f"label=labkit.lab={LAB}b").strip() == ""
    finally:
        shutil.rmtree(paths.lab_dir(f"{LAB}b"), ignore_errors=True)  # its inventory, nothing else was made


def test_shell_reaches_it_as_the_student_and_as_root(far):
    p = run("shell", "-f", far["lab"], "debian12-lxc", "sh", "-c", 'id -un; echo "$HOME"; cat /etc/hostname; echo "$0 it\'s"')
    assert p.stdout.split() == ["student", "/home/student", "s01-debian12-lxc", "sh", "it's"], p.stdout
    root = run("shell", "-f", far["lab"], "--root", "debian12-lxc", "sh", "-c", "id -u; exit 7", check=False)
    assert (root.stdout.split(), root.returncode) == (["0"], 7)  # the command's own exit code, through SSH


def test_second_up_changes_nothing_and_plan_sees_it_all(far):
    again = run("up", "-f", far["lab"], "--no-facts")
    assert recap(again.stdout)["changed"] == 0, again.stdout
    up_plan = json.loads(run("up", "-f", far["lab"], "--plan", "--json").stdout)
    assert up_plan["changes"] == [], up_plan
    down_plan = json.loads(run("down", "-f", far["lab"], "--plan", "--json").stdout)
    assert {(c["name"], c["server"]) for c in down_plan["changes"]} >= {(DOCKER, SERVER), (LXC, SERVER)}, down_plan


def test_down_leaves_nothing_on_the_server_from_any_state(far):
    subprocess.run(["lxc-stop", "-k", "-n", LXC], check=True)  # a stopped one, and a half-made folder
    half = LXC_PATH / f"labkit-{LAB}-s01-debian13-lxc"
    half.mkdir()
    (half / "labkit.json").write_text(json.dumps({"lab": LAB, "student": "s01", "distro": "debian:13"}))
    down = run("down", "-f", far["lab"])
    assert "removed 3 containers" in down.stdout + down.stderr, down.stdout + down.stderr
    assert mine_in_lxc_path() == []
    assert docker("ps", "-aq", "--filter", f"label=labkit.lab={LAB}").strip() == ""
    assert docker("network", "ls", "-q", "--filter", f"label=labkit.lab={LAB}").strip() == ""
    assert ssh_masters(PORT) == []
    sec = far["seconds"]
    print(f"test_78: prepare + up + checks + down in {time.monotonic() - far['t0']:.1f} s "
          f"(prepare {sec['prepare']:.1f} s, up {sec['up']:.1f} s)")
