"""Bring your own Ansible (issue 15) through the real CLI on the real engines.

- ``examples/webclass`` end to end: ``labkit test -f examples/webclass/lab.yml`` (up, prepare,
  converge, idempotence changed=0, verify with K1..K12 and the example's testinfra tests). It runs
  with ``--keep`` so that, while its containers and VM are up, plain ``ansible`` and testinfra
  over ``labkit inventory --path`` and the pytest plugin are checked against the same lab; then
  ``labkit down`` and nothing of it is left. (The only VM boot of this module.)
- On containers-only labs: a task that always changes gives exit 6 naming the host and task; a
  failing test of the user gives exit 1 and its JUnit case; a missing role gives exit 2 naming
  ``provision.roles[0]``. ``labkit test`` takes those labs down itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.labs import down_leftovers

from .conftest import content_parents, docker, run, virsh

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WEBCLASS = ROOT / "examples" / "webclass" / "lab.yml"
BIN = Path(sys.executable).parent
# the example's hosts with Python (BusyBox has none): what its plays and tests reach
PYTHON_HOSTS = {"labkit-webclass-s01-debian12", "labkit-webclass-s01-debian13", "labkit-webclass-s01-vm"}
USER_TESTS = {  # examples/webclass/tests: one case per host with Python, and one for the whole lab
    "test_nginx_installed_after_a_fresh_apt_update",
    "test_the_page_names_this_host",
    "test_service_manager_ansible_found",
    "test_site_config_from_the_template",
    "test_nginx_runs_and_starts_at_boot",
    "test_nginx_answers_with_the_lesson_page",
    "test_the_student_may_edit_the_site",
    "test_deployment_stamped",
}


def tool_env() -> dict:
    """A user's shell with labkit's venv on PATH (as the README says)."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")


def cases(junit: Path) -> list[dict]:
    """Every test case of a JUnit file: suite, name, classname and outcome."""
    out = []
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        for c in suite.iter("testcase"):
            outcome = next((t for t in ("failure", "error", "skipped") if c.find(t) is not None), "passed")
            out.append(
                {
                    "suite": suite.get("name"),
                    "name": c.get("name", ""),
                    "classname": c.get("classname", ""),
                    "outcome": outcome,
                    "message": next(
                        (c.find(t).get("message", "") for t in ("failure", "error") if c.find(t) is not None),
                        "",
                    ),
                }
            )
    return out


def leftovers(lab: str) -> list[str]:
    """What of the lab is still on this machine: containers, networks, domains, VM networks, rules."""
    left = [f"container {c}" for c in docker("ps", "-a", "--filter", f"label=labkit.lab={lab}", "-q").split()]
    left += [
        f"network {n}" for n in docker("network", "ls", "--filter", f"label=labkit.lab={lab}", "-q").split()
    ]
    left += [f"domain {d}" for d in virsh("list", "--all", "--name") if d.startswith(f"labkit-{lab}-")]
    left += [
        f"libvirt network {n}" for n in virsh("net-list", "--all", "--name") if n.startswith(f"labkit-{lab}-")
    ]
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    left += [f"rule {ln}" for ln in rules.splitlines() if f"lab={lab} " in ln]
    return left


# ------------------------------------------------------------------ the example, with its VM


@pytest.fixture(scope="module")
def webclass(tmp_path_factory):
    """`labkit test --keep` on the example; the lab stays up for this module's checks."""
    d = tmp_path_factory.mktemp("webclass")
    run("images", "build", "debian:12", "debian:13", "busybox")
    run("box", "build")
    down_leftovers("-f", str(WEBCLASS))
    junit = d / "webclass.xml"
    t0 = time.monotonic()
    p = run("test", "-f", str(WEBCLASS), "--keep", "--junit", str(junit), check=False, timeout=3600)
    info = {"proc": p, "junit": junit, "seconds": time.monotonic() - t0, "dir": d}
    print(f"labkit test -f examples/webclass/lab.yml --keep: exit {p.returncode} in {info['seconds']:.0f}s")
    print(
        "\n".join(
            ln for ln in (p.stdout + p.stderr).splitlines() if re.search(r"recap|^labkit test|passed", ln)
        )
    )
    yield info
    down = run("down", "-f", str(WEBCLASS), check=False)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers("webclass") == []


@pytest.mark.vm
def test_webclass_passes(webclass):
    """Every host converges, the second converge changes nothing, the facts and the example's
    tests pass, in one JUnit file."""
    p = webclass["proc"]
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "labkit test: passed" in out
    for step in ("step 1/4 up", "step 2/4 idempotence", "step 3/4 verify"):
        assert step in out, out
    conv = re.search(r"; your content: ok=\d+ changed=(\d+) failures=(\d+) dark=(\d+)", out)
    assert conv and int(conv.group(1)) > 0 and conv.group(2) == conv.group(3) == "0", out
    idem = re.search(r"^idempotence recap: ok=(\d+) changed=(\d+) failures=(\d+) dark=(\d+)", out, re.M)
    assert idem and int(idem.group(1)) > 0 and idem.group(2) == idem.group(3) == idem.group(4) == "0", out
    all_cases = cases(webclass["junit"])
    facts = [c for c in all_cases if c["suite"] == "labkit-verify"]
    assert {re.search(r"test_(K\d+)", c["name"]).group(1) for c in facts} == {f"K{i}" for i in range(1, 13)}
    assert all(c["outcome"] == "passed" for c in facts), [c for c in facts if c["outcome"] != "passed"]
    mine = [c for c in all_cases if c["suite"] == "labkit-user-tests"]
    ran = {(c["name"].split("[")[0], c["name"].partition("[ansible://")[2].rstrip("]")) for c in mine}
    assert ran == {(t, h) for t in USER_TESTS for h in PYTHON_HOSTS} | {
        ("test_containers_reach_the_vms_page", "")
    }
    assert all(c["outcome"] == "passed" for c in mine), mine


@pytest.mark.vm
def test_inventory_reaches_the_hosts_with_python(webclass):
    """`ansible -i "$(labkit inventory --path)" python -m ping` reaches both containers and the
    VM; BusyBox is in no_python; the file names key paths only."""
    assert webclass["proc"].returncode == 0, webclass["proc"].stdout + webclass["proc"].stderr
    path = Path(run("inventory", "-f", str(WEBCLASS), "--path").stdout.strip())
    assert path.is_file() and (path.stat().st_mode & 0o777) == 0o600
    text = path.read_text()
    assert "PRIVATE KEY" not in text
    p = subprocess.run(
        [str(BIN / "ansible"), "-i", str(path), "python", "-m", "ping"],
        capture_output=True,
        text=True,
        timeout=600,
        env=tool_env(),
    )
    assert p.returncode == 0, p.stdout + p.stderr
    pinged = set(re.findall(r'^(\S+) \| SUCCESS => \{[^}]*"ping": "pong"', p.stdout, re.M))
    assert pinged == PYTHON_HOSTS, p.stdout
    hosts = subprocess.run(
        [str(BIN / "ansible"), "-i", str(path), "no_python", "--list-hosts"],
        capture_output=True,
        text=True,
        timeout=120,
        env=tool_env(),
    )
    assert hosts.stdout.split()[-1:] == ["labkit-webclass-s01-busybox"], hosts.stdout


@pytest.mark.vm
def test_content_runs_with_mitogen_on_containers_and_the_vm(webclass, tmp_path):
    """The lab's content reaches both containers and the VM (SSH) through Mitogen's Python, one
    per host for the run (labkit.ansible.mitogen; `provision.mitogen` is on by default)."""
    assert webclass["proc"].returncode == 0, webclass["proc"].stdout + webclass["proc"].stderr
    got = content_parents(WEBCLASS, tmp_path)
    assert set(got) == PYTHON_HOSTS and all("(mitogen:" in cmd for cmd in got.values()), got


@pytest.mark.vm
def test_testinfra_over_the_inventory(webclass):
    """The example's tests under plain pytest + testinfra over `labkit inventory --path`,
    as its docstring shows: every case passes, on both containers and the VM."""
    assert webclass["proc"].returncode == 0, webclass["proc"].stdout + webclass["proc"].stderr
    path = run("inventory", "-f", str(WEBCLASS), "--path").stdout.strip()
    junit = webclass["dir"] / "testinfra.xml"
    p = subprocess.run(
        [
            str(BIN / "pytest"),
            str(WEBCLASS.parent / "tests"),
            "--hosts=ansible://python",
            f"--ansible-inventory={path}",
            f"--junitxml={junit}",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        env=tool_env(),
        cwd=webclass["dir"],
    )
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    got = cases(junit)
    assert all(c["outcome"] == "passed" for c in got), got
    assert {c["name"].partition("[ansible://")[2].rstrip("]") for c in got} == PYTHON_HOSTS | {""}
    assert len(got) == len(USER_TESTS) * len(PYTHON_HOSTS) + 1


PLUGIN_TEST = """
def test_nginx_serves_the_lesson(lab_host):
    assert lab_host.service("nginx").is_running
    assert "Lesson 3" in lab_host.file("/srv/webclass/index.html").content_string


def test_vm_and_containers_kernels(lab):
    vm, ct, bb = lab.host("vm"), lab.host("debian12"), lab.host("busybox")
    assert vm.check_output("uname -r") != ct.check_output("uname -r")
    assert bb.check_output("uname -r") == ct.check_output("uname -r")
    assert set(lab.hosts("python")) == PYTHON_HOSTS


def test_the_vm_is_reached_through_one_shared_connection(lab):
    import os
    text = open(lab.inventory).read()
    assert text.count("ControlPath=") == 1 and "ControlMaster=no" in text, text
    sock = text.split("ControlPath=")[1].split()[0].strip("'").strip('"')
    assert os.path.exists(sock), sock
    assert lab.host("vm").run("true").rc == 0
"""


@pytest.mark.vm
def test_pytest_plugin(webclass):
    """`pytest --labkit-file lab.yml`: lab_host runs once per host of provision.hosts, and the
    lab fixture gives hosts by the names `labkit shell` takes (BusyBox too)."""
    assert webclass["proc"].returncode == 0, webclass["proc"].stdout + webclass["proc"].stderr
    d = webclass["dir"] / "plugin"
    d.mkdir()
    (d / "test_with_plugin.py").write_text(f"PYTHON_HOSTS = {PYTHON_HOSTS!r}\n\n{PLUGIN_TEST}")
    junit = d / "plugin.xml"
    p = subprocess.run(
        [
            str(BIN / "pytest"),
            "--labkit-file",
            str(WEBCLASS),
            "test_with_plugin.py",
            f"--junitxml={junit}",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=tool_env(),
        cwd=d,
    )
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    got = cases(junit)
    assert all(c["outcome"] == "passed" for c in got), got
    per_host = {c["name"] for c in got if c["name"].startswith("test_nginx_serves_the_lesson[")}
    assert per_host == {f"test_nginx_serves_the_lesson[{h}]" for h in PYTHON_HOSTS}, got
    assert {"test_vm_and_containers_kernels", "test_the_vm_is_reached_through_one_shared_connection"} <= {
        c["name"] for c in got}


# ------------------------------------------------------------------ failures, on containers only


def small_lab(d: Path, name: str, provision: str, tests: str = "") -> Path:
    f = d / "lab.yml"
    f.write_text(
        f"name: {name}\nstudents: [s1]\ncontainers: [debian:12]\nvm: {{enabled: false}}\n"
        f"provision:\n  packages: []\n{provision}{tests}"
    )
    return f


def test_not_idempotent_is_exit_6(tmp_path):
    """A task that changes on every run: exit 6 naming the host and the task; the lab is
    taken down after the failed step."""
    (tmp_path / "site.yml").write_text(
        "- name: Converge\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Always report a change\n      ansible.builtin.command: 'true'\n"
        "    - name: Report nothing\n      ansible.builtin.command: 'true'\n      changed_when: false\n"
    )
    f = small_lab(tmp_path, "wc-idem", "  playbooks: [site.yml]\n")
    down_leftovers("-f", str(f))
    p = run("test", "-f", str(f), check=False, timeout=1200)
    assert p.returncode == 6, p.stdout + p.stderr
    err = p.stderr[p.stderr.index("error:") :]
    assert "step idempotence failed" in err and "not idempotent" in err, err
    assert "[labkit-wc-idem-s1-debian12] Always report a change" in err, err
    assert "Report nothing" not in err
    assert leftovers("wc-idem") == []


def test_failing_user_test_is_exit_1_with_its_junit_case(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_lesson.py").write_text(
        "def test_motd_names_debian(host):\n    assert 'Debian' in host.file('/etc/motd').content_string\n\n\n"
        "def test_motd_names_windows(host):\n    assert 'Windows' in host.file('/etc/motd').content_string\n"
    )
    f = small_lab(tmp_path, "wc-fail", "", "tests: [tests]\n")
    down_leftovers("-f", str(f))
    junit = tmp_path / "out.xml"
    p = run("test", "-f", str(f), "--junit", str(junit), check=False, timeout=1200)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "step verify failed" in p.stderr
    got = {c["name"]: c for c in cases(junit) if c["suite"] == "labkit-user-tests"}
    host = "labkit-wc-fail-s1-debian12"
    assert got[f"test_motd_names_windows[ansible://{host}]"]["outcome"] == "failure"
    assert got[f"test_motd_names_debian[ansible://{host}]"]["outcome"] == "passed"
    assert "test_motd_names_windows" in p.stderr  # named in verify's table
    assert any(c["suite"] == "labkit-verify" for c in cases(junit))  # the facts are in the same file
    assert leftovers("wc-fail") == []


def test_missing_role_is_exit_2_naming_the_key_path(tmp_path):
    """Said at load, before anything is made: the key path, its line and where it looked."""
    (tmp_path / "roles").mkdir()  # roles/ beside the lab file is on the roles path
    f = small_lab(tmp_path, "wc-norole", "  roles: [no_such_role]\n")
    p = run("test", "-f", str(f), check=False, timeout=300)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"{f}:7: provision.roles[0]: role 'no_such_role' not found" in p.stderr, p.stderr
    assert str(tmp_path / "roles" / "no_such_role") in p.stderr, p.stderr
    assert leftovers("wc-norole") == []
