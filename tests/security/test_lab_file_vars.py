"""Item 2 of issue 26: a lab file's variables are data, never code on the lab server.

One containers-only lab (one Debian 12 container) with a role that writes a file whose path
and content are role variables. Each test runs that role through `labkit run -f` with a lab
file that tries to turn its variables into code on the lab server, and checks the server: the
file the attack aims at is not there. `--trust` shows each refusal is what stops it (the same
lab file then does reach the server, as every lab file could before).
"""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.labs import docker, run

pytestmark = pytest.mark.integration

LAB = "secvars"
CONTAINER = f"labkit-{LAB}-s01-debian12"
ROLE = """\
- name: Write the file the variables name
  ansible.builtin.copy:
    content: "{{ drop_content }}\\n"
    dest: "{{ drop_dest }}"
    mode: "0644"
"""


def lab_file(d: Path, name: str, **provision) -> Path:
    (d / "roles" / "drop" / "tasks").mkdir(parents=True, exist_ok=True)
    (d / "roles" / "drop" / "tasks" / "main.yml").write_text(ROLE)
    (d / "roles" / "drop" / "defaults").mkdir(exist_ok=True)
    (d / "roles" / "drop" / "defaults" / "main.yml").write_text(
        "drop_dest: /tmp/labkit-drop\ndrop_content: hello\n")
    data = {"name": LAB, "students": ["s01"], "containers": ["debian:12"], "vm": {"enabled": False},
            "provision": {"packages": [], "roles_path": ["roles"], "roles": ["drop"], **provision}}
    p = d / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def in_container(path: str) -> str | None:
    p = subprocess.run(["docker", "exec", CONTAINER, "cat", path], capture_output=True, text=True)
    return p.stdout if p.returncode == 0 else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("secvars")
    base = lab_file(d, "lab.yml")
    run("down", "--lab", LAB, check=False)
    run("up", "-f", str(base), "--no-facts", "-q")
    assert in_container("/tmp/labkit-drop") == "hello\n"  # the role works: the attacks below can be seen
    yield d
    run("down", "--lab", LAB, check=False)


@pytest.fixture
def target():
    """A path on the lab server an attack tries to create (removed afterwards)."""
    p = Path(f"/tmp/labkit-attack-{uuid.uuid4().hex[:12]}")
    yield p
    p.unlink(missing_ok=True)


def test_connection_local_in_extra_vars_is_refused(lab, target):
    """`extra_vars: {ansible_connection: local}` would send the role to the lab server (as root)."""
    f = lab_file(lab, "local.yml", extra_vars={"ansible_connection": "local", "drop_dest": str(target)})
    p = run("run", "-f", str(f), check=False)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "provision.extra_vars.ansible_connection" in p.stderr and "--trust" in p.stderr, p.stderr
    assert not target.exists()
    assert in_container(str(target)) is None  # refused before anything ran

    # --trust: the instructor's explicit decision; then the lab file is code, as a playbook is
    p = run("run", "-f", str(f), "--trust", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert target.read_text() == "hello\n"


@pytest.mark.parametrize("where", ["group_vars", "ssh_args", "role_vars"])
def test_steering_variables_are_refused_wherever_they_are(lab, target, where):
    """The same names in provision.group_vars and a role's vars: refused, naming the key."""
    if where == "group_vars":
        f = lab_file(lab, "gv.yml", group_vars={"python": {"ansible_connection": "local", "drop_dest": str(target)}})
        key = "provision.group_vars.python.ansible_connection"
    elif where == "ssh_args":
        f = lab_file(lab, "ssh.yml", group_vars={"lab": {"ansible_docker_extra_args": f"--config {target}"}})
        key = "provision.group_vars.lab.ansible_docker_extra_args"
    else:
        f = lab_file(lab, "rv.yml", roles=[{"role": "drop", "vars": {"ansible_connection": "local",
                                                                      "drop_dest": str(target)}}])
        key = "provision.roles[0].vars.ansible_connection"
    p = run("run", "-f", str(f), check=False)
    assert p.returncode == 2 and key in p.stderr, p.stdout + p.stderr
    assert not target.exists()


def test_jinja_in_values_is_not_run(lab, target):
    """A value with a `lookup('pipe', ...)` would run its command on the lab server: it stays text."""
    attack = "{{ lookup('pipe', 'touch " + str(target) + "') }}"
    f = lab_file(lab, "jinja.yml", extra_vars={"drop_dest": "/tmp/jinja-ev", "drop_content": attack},
                 group_vars={"python": {"unused": attack}})
    p = run("run", "-f", str(f), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not target.exists()
    assert in_container("/tmp/jinja-ev") == attack + "\n"  # the student sees the text, nothing ran

    g = lab_file(lab, "jinja-gv.yml", group_vars={"python": {"drop_dest": "/tmp/jinja-gv", "drop_content": attack}})
    assert run("run", "-f", str(g), check=False).returncode == 0
    assert not target.exists() and in_container("/tmp/jinja-gv") == attack + "\n"

    # through an allowed ansible_* variable too: the interpreter's name is not templated either
    r = lab_file(lab, "jinja-rv.yml", roles=[{"role": "drop", "vars": {"ansible_python_interpreter": attack}}])
    run("run", "-f", str(r), check=False)
    assert not target.exists()


def test_conftest_beside_the_tests_does_not_run(lab, target):
    """A `conftest.py` beside vetted test files runs first, as root: without --trust it is not loaded."""
    tests = lab / "tests"
    tests.mkdir(exist_ok=True)
    (tests / "conftest.py").write_text(f"from pathlib import Path\nPath({str(target)!r}).touch()\n")
    (tests / "pytest.ini").write_text("[pytest]\naddopts = -p no:this_plugin_does_not_exist_xyz\n")
    (tests / "test_drop.py").write_text(
        "def test_drop(host):\n    assert host.file('/tmp/labkit-drop').content_string == 'hello\\n'\n")
    f = lab_file(lab, "tests.yml")
    data = yaml.safe_load(f.read_text())
    data["tests"] = ["tests"]
    f.write_text(yaml.safe_dump(data))
    p = run("verify", "-f", str(f), "--json", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    mine = [r for r in yaml.safe_load(p.stdout) if "test_drop" in r["detail"]]
    assert mine and all(r["outcome"] == "passed" for r in mine), p.stdout
    assert not target.exists()

    p = run("verify", "-f", str(f), "--trust", "--json", check=False)
    assert target.exists(), p.stdout + p.stderr  # trusted: pytest finds conftest.py as it would alone


def test_box_name_is_validated(tmp_path):
    """`vm.box` reaches a shell command and a Ruby string: anything but a box name is refused."""
    bad = tmp_path / "box.yml"
    bad.write_text(yaml.safe_dump({"name": "secbox", "students": 1, "vm": {"box": 'x"; system("id") #'}}))
    p = run("up", "-f", str(bad), "--plan", check=False)
    assert p.returncode == 2 and "vm.box" in p.stderr, p.stdout + p.stderr
    assert docker("ps", "-aq", "--filter", "label=labkit.lab=secbox") == ""
