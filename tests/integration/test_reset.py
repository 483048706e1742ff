"""`labkit reset` and `labkit checkpoint` on real labs, with the lesson's content (a file on
every host): two students with a Debian 12 container each, and one student with a VM alone
(two VM boots for the module: the VM, then the VM reset makes):

- reset gives s02's container (and the VM) a new id and the lesson's content again, while
  every other host keeps its id;
- a file made, a checkpoint saved, the file deleted and a package removed: restore brings both
  back in the container and in the VM, and a later `up` keeps the restored state;
- what reset and checkpoint refuse, and that `down` takes the checkpoints along.
"""
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.labs import down_leftovers

from .conftest import docker, run

pytestmark = pytest.mark.integration

LAB = """\
name: cls
students: [s01, s02]
containers: [debian:12]
vm: {enabled: false}
provision:
  playbooks: [site.yml]
"""
VM_LAB = """\
name: clsvm
students: [s01]
containers: [debian:12]
vm: {enabled: true}
provision:
  playbooks: [site.yml]
"""
SITE = """\
- name: The lesson's content (become, as server playbooks say, on containers and the VM alike)
  hosts: all
  become: true
  tasks:
    - name: The lesson's file
      ansible.builtin.copy: {content: "lesson\\n", dest: /srv/lesson.txt, mode: "0644"}
"""


TAKEN_DOWN: set[str] = set()  # the lab files whose `down` a test saw exit 0


@pytest.fixture(scope="module")
def labs(tmp_path_factory):
    """Both labs' files, brought up at once: the containers-only lab while the VM boots."""
    files = []
    for text in (LAB, VM_LAB):
        d = tmp_path_factory.mktemp("lab")
        (d / "site.yml").write_text(SITE)
        (d / "lab.yml").write_text(text)
        files.append(str(d / "lab.yml"))
    # built once before the two ups (two builds of one image at once would each tag their own)
    run("images", "build", "debian:12")
    run("box", "build")
    for lab in files:
        down_leftovers("-f", lab)
    try:
        with ThreadPoolExecutor(2) as ex:
            list(ex.map(lambda lab: run("up", "-f", lab, "--build", "--no-facts"), files))
        yield files
    finally:
        for lab in files:
            if lab not in TAKEN_DOWN:  # the last test's `down` did not end well: whatever it left
                down_leftovers("-f", lab)


@pytest.fixture(scope="module")
def cls(labs):
    return labs[0]


@pytest.fixture(scope="module")
def clsvm(labs):
    return labs[1]


def ids() -> dict[str, str]:
    """Every host of both labs and its id: the container's, the VM domain's UUID."""
    out = {}
    for line in docker("ps", "-a", "--no-trunc", "--filter", "label=labkit.lab", "--format",
                       '{{.Label "labkit.lab"}} {{.Names}} {{.ID}}').splitlines():
        lab, name, cid = line.split()
        if lab in ("cls", "clsvm"):
            out[name] = cid
    dom = "labkit-clsvm-s01-vm"
    p = subprocess.run(["virsh", "-q", "-c", "qemu:///system", "domuuid", dom], capture_output=True, text=True)
    if p.returncode == 0:
        out[dom] = p.stdout.strip()
    return out


def sh(lab: str, student: str, host: str, command: str, root: bool = False) -> subprocess.CompletedProcess:
    return run("shell", "-f", lab, "--student", student, *(["--root"] if root else []), host, "--", "sh", "-c",
               command, check=False)


def test_reset_makes_one_container_again_and_nothing_else(cls, clsvm):
    before = ids()
    assert len(before) == 4, before  # cls: two containers; clsvm: a container and the VM
    assert sh(cls, "s02", "debian12", "echo mine > ~/work.txt").returncode == 0
    assert sh(cls, "s02", "debian12", "rm /srv/lesson.txt", root=True).returncode == 0
    p = run("reset", "-f", cls, "--student", "s02", "debian12", "--yes")
    assert "debian12: docker container labkit-cls-s02-debian12 (running) is removed" in p.stdout, p.stdout
    after = ids()
    assert after["labkit-cls-s02-debian12"] != before["labkit-cls-s02-debian12"]
    assert {k: v for k, v in after.items() if k != "labkit-cls-s02-debian12"} == \
        {k: v for k, v in before.items() if k != "labkit-cls-s02-debian12"}
    assert sh(cls, "s02", "debian12", "cat /srv/lesson.txt").stdout == "lesson\n"  # the lesson's content again
    assert sh(cls, "s02", "debian12", "ls ~/work.txt").returncode != 0  # the student's work is gone


def test_reset_makes_one_vm_again_and_nothing_else(cls, clsvm):
    before = ids()
    assert sh(clsvm, "s01", "vm", "rm /srv/lesson.txt", root=True).returncode == 0
    p = run("reset", "-f", clsvm, "--student", "s01", "vm", "--yes")
    assert "vm: VM labkit-clsvm-s01-vm (running) is destroyed with its disk" in p.stdout, p.stdout
    after = ids()
    assert after["labkit-clsvm-s01-vm"] != before["labkit-clsvm-s01-vm"]
    assert {k: v for k, v in after.items() if k != "labkit-clsvm-s01-vm"} == \
        {k: v for k, v in before.items() if k != "labkit-clsvm-s01-vm"}
    assert sh(clsvm, "s01", "vm", "cat /srv/lesson.txt").stdout == "lesson\n"


def test_reset_says_what_it_would_lose_and_asks(cls, clsvm):
    before = ids()
    # no terminal and no --yes: it says what would be lost, then refuses (usage, exit 2)
    p = run("reset", "-f", clsvm, "--student", "s01", check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "debian12: docker container labkit-clsvm-s01-debian12 (running) is removed" in p.stdout
    assert "vm: VM labkit-clsvm-s01-vm (running) is destroyed with its disk" in p.stdout
    assert "add --yes" in p.stderr
    p = run("reset", "-f", clsvm, "--student", "s01", "ubuntu24", "--yes", check=False)
    assert p.returncode != 0 and "no host ubuntu24" in p.stderr and "debian12, vm" in p.stderr, p.stderr
    p = run("reset", "-f", cls, "--student", "s09", "--yes", check=False)
    assert p.returncode != 0 and "s09: not a student" in p.stderr, p.stderr
    assert ids() == before  # nothing was touched


def _work_and_less(lab: str, host: str) -> tuple[bool, bool]:
    """(~/work.txt holds exactly "mine", less is installed): one shell for both (a VM's costs seconds)."""
    said = sh(lab, "s01", host, "printf 'mine\\n' | cmp -s - ~/work.txt && echo work; "
                                "command -v less >/dev/null && echo less").stdout.split()
    return "work" in said, "less" in said


def test_checkpoint_restore_brings_back_files_and_packages(cls, clsvm):
    for host in ("debian12", "vm"):
        assert sh(clsvm, "s01", host, "echo mine > ~/work.txt").returncode == 0
        assert _work_and_less(clsvm, host) == (True, True)
    run("checkpoint", "save", "-f", clsvm, "--student", "s01", "stage1")
    listed = json.loads(run("checkpoint", "list", "-f", clsvm, "--json").stdout)
    assert [(c["student"], c["name"], c["hosts"]) for c in listed] == [("s01", "stage1", ["debian12", "vm"])]
    assert all(k["bytes"] > 0 for k in listed[0]["kept"]), listed  # the disk it uses, per host
    for host in ("debian12", "vm"):
        sh(clsvm, "s01", host, "rm ~/work.txt")
        assert sh(clsvm, "s01", host, "dpkg -r less", root=True).returncode == 0
        assert _work_and_less(clsvm, host) == (False, False)
    others = {k: v for k, v in ids().items() if "-cls-" in k}
    run("checkpoint", "restore", "-f", clsvm, "--student", "s01", "stage1", "--yes")
    for host in ("debian12", "vm"):
        assert _work_and_less(clsvm, host) == (True, True), host
    assert {k: v for k, v in ids().items() if "-cls-" in k} == others  # the other lab untouched
    # a later `up` keeps the restored container (it starts from the checkpoint's image now)
    kept = docker("inspect", "-f", "{{.Id}}", "labkit-clsvm-s01-debian12").strip()
    run("up", "-f", clsvm, "--no-facts")
    assert docker("inspect", "-f", "{{.Id}}", "labkit-clsvm-s01-debian12").strip() == kept
    assert _work_and_less(clsvm, "debian12") == (True, True)


def test_checkpoint_refusals(cls, clsvm):
    p = run("checkpoint", "save", "-f", clsvm, "--student", "s01", "stage1", check=False)
    assert p.returncode != 0 and "s01 has a checkpoint stage1 already" in p.stderr, p.stderr
    p = run("checkpoint", "save", "-f", cls, "--student", "s01", "Bad/Name", check=False)
    assert p.returncode != 0 and "checkpoint name 'Bad/Name'" in p.stderr, p.stderr
    p = run("checkpoint", "restore", "-f", cls, "--student", "s02", "stage1", "--yes", check=False)
    assert p.returncode != 0 and "s02 has no checkpoint stage1" in p.stderr, p.stderr
    p = run("checkpoint", "save", "-f", cls, "stage1", check=False)
    assert p.returncode != 0 and "--all-students" in p.stderr, p.stderr
    # s01's container runs from stage1: deleting it would strand the next `up`
    p = run("checkpoint", "delete", "-f", clsvm, "--student", "s01", "stage1", check=False)
    assert p.returncode != 0 and "run from checkpoint stage1" in p.stderr and "labkit reset" in p.stderr, p.stderr


def checkpoint_images(lab: str) -> list[str]:
    """The lab's checkpoint images (its other images, e.g. a content cache's, left out)."""
    return [i for i in docker("images", "--filter", f"label=labkit.lab={lab}", "--format",
                              "{{.Repository}}:{{.Tag}}").split() if i.startswith("labkit-checkpoint/")]


def test_down_takes_the_checkpoints_along(cls, clsvm):
    run("checkpoint", "save", "-f", cls, "--all-students", "stage2")
    images = checkpoint_images("cls")
    assert sorted(images) == sorted(["labkit-checkpoint/labkit-cls-s01-debian12:stage2",
                                     "labkit-checkpoint/labkit-cls-s02-debian12:stage2"])
    run("down", "-f", cls, "--student", "s02")
    assert checkpoint_images("cls") == ["labkit-checkpoint/labkit-cls-s01-debian12:stage2"]
    assert [c["student"] for c in json.loads(run("checkpoint", "list", "-f", cls, "--json").stdout)] == ["s01"]
    run("down", "-f", cls)
    TAKEN_DOWN.add(cls)
    assert docker("images", "--filter", "label=labkit.lab=cls", "-q").split() == []
    assert json.loads(run("checkpoint", "list", "-f", cls, "--json").stdout) == []
    # the VM's snapshot goes with its disk, the container's checkpoint image with its label
    assert checkpoint_images("clsvm") == ["labkit-checkpoint/labkit-clsvm-s01-debian12:stage1"]
    run("down", "-f", clsvm)
    TAKEN_DOWN.add(clsvm)
    assert docker("images", "--filter", "label=labkit.lab=clsvm", "-q").split() == []
    assert "labkit-clsvm-s01-vm" not in subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                                                      capture_output=True, text=True).stdout
    assert json.loads(run("checkpoint", "list", "-f", clsvm, "--json").stdout) == []
