"""What a new instructor meets on the command line, through the real CLI on the real
engines: the same one-liner gives the same output on a container and in the VM, commands
act on the lab the user means (and say which), and every exit code of the docs' table
(docs/reference/commands.md)."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import labkit_cmd
from tests.labs import down_leftovers

from .conftest import docker, run

pytestmark = pytest.mark.integration

CODES = ("name: codes\nstudents: [a, b]\ncontainers: [busybox]\nvm: {enabled: false}\n"
         "provision: {packages: [less, curl]}\n")
CODES2 = "name: codes2\nstudents: [x]\ncontainers: [busybox]\nvm: {enabled: false}\nprovision: {packages: []}\n"


def bare(*args, cwd, env_extra=None, check=False):
    """`labkit ARGS` as a user types it: no -f, no --lab, no $LABKIT_LAB, in folder ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k != "LABKIT_LAB"} | (env_extra or {})
    p = subprocess.run(labkit_cmd() + list(args), capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def codes(tmp_path_factory):
    d = tmp_path_factory.mktemp("codes")
    f, f2 = d / "codes.yml", d / "codes2.yml"
    f.write_text(CODES)
    f2.write_text(CODES2)
    run("images", "build", "busybox")
    down_leftovers("-f", str(f))
    before = run("up", "-f", str(f), "--plan", "--json")
    before_table = run("up", "-f", str(f), "--plan")
    up = run("up", "-f", str(f), "--no-facts")
    run("up", "-f", str(f2), "--no-facts")
    yield {"file": f, "file2": f2, "up": up, "dir": d, "plan_before": json.loads(before.stdout),
           "plan_table": before_table.stdout}
    down_leftovers("-f", str(f))
    down_leftovers("-f", str(f2))


# ------------------------------------------------------------------ the VM shell's quoting

ONE_LINERS = [
    ["sh", "-c", 'x=hello; echo "x=$x"'],
    ["echo", "$HOME", "a  b", "c'd", '"q"'],
    ["sh", "-c", "for p in sh ls; do command -v $p; done"],
    ["sh", "-c", "echo $0; pwd; id -un"],
    ["printf", "%s|", "*", "$(id)", "`id`", "a;b"],
]


@pytest.mark.vm
@pytest.mark.parametrize("argv", ONE_LINERS, ids=[" ".join(a) for a in ONE_LINERS])
def test_vm_shell_runs_a_command_as_typed_like_a_container(default_lab, argv):
    """`labkit shell vm CMD` and `labkit shell debian12 CMD` (both Debian 12) print the same."""
    vm = run("shell", "vm", *argv)
    ct = run("shell", "debian12", *argv)
    assert vm.stdout == ct.stdout, (argv, vm.stdout, ct.stdout)
    assert vm.stdout.strip()


@pytest.mark.vm
def test_vm_shell_root_and_exit_code(default_lab):
    assert run("shell", "vm", "--root", "sh", "-c", "id -u; pwd").stdout.split() == ["0", "/root"]
    assert run("shell", "debian12", "--root", "sh", "-c", "id -u; pwd").stdout.split() == ["0", "/root"]
    p = run("shell", "vm", "sh", "-c", "exit 3", check=False)
    assert p.returncode == 3  # the command's own code


# ------------------------------------------------------------------ which lab, said every time

def test_two_labs_up_bare_commands_refuse_naming_both(codes, tmp_path):
    p = bare("shell", "busybox", "uname", "-r", cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "codes, codes2" in p.stderr and "--lab" in p.stderr
    p = bare("down", cwd=tmp_path)
    assert p.returncode == 2 and "which one?" in p.stderr
    assert docker("ps", "-q", "--filter", "label=labkit.lab=codes2").strip()  # nothing was removed


def test_a_lab_file_in_the_folder_picks_the_lab_and_is_named(codes, tmp_path):
    (tmp_path / "lab.yml").write_text(CODES2)
    p = bare("shell", "busybox", "hostname", cwd=tmp_path, check=True)
    assert p.stdout.strip() == "x-busybox"
    assert "lab 'codes2' (from ./lab.yml in this folder)" in p.stderr
    p = bare("status", "--json", cwd=tmp_path, env_extra={"LABKIT_LAB": "codes"}, check=True)
    assert '"lab": "codes"' in p.stdout and "$LABKIT_LAB=codes" in p.stderr


def test_busybox_hosts_name_the_packages_they_could_not_get(codes):
    err = codes["up"].stderr
    for s in ("a", "b"):
        assert f"labkit-codes-{s}-busybox: not installed: curl (no package manager on this host; " \
               "less: BusyBox's own applet)" in err, err


# ------------------------------------------------------------------ one table of exit codes

def test_exit_0_success_names_the_lab(codes):
    p = run("status", "-f", str(codes["file"]))
    assert p.returncode == 0 and f"lab 'codes' (from {codes['file']})" in p.stderr


@pytest.mark.parametrize("args, words", [
    (["up", "--student", "zz"], "--student zz: not a student of lab 'codes'"),
    (["shell", "nosuch", "id"], "no host 'nosuch' in lab 'codes' for student a"),
    (["shell", "labkit-codes-a-busybox", "--student", "b", "id"], "is student a's host, not b's"),
    (["verify", "--fact", "K13"], "--fact K13: unknown fact"),
    (["up", "--no-such-flag"], "No such option"),
])
def test_exit_2_bad_input(codes, args, words):
    p = run(*args, "-f", str(codes["file"]), check=False)
    assert p.returncode == 2 and words in p.stderr, p.stdout + p.stderr


def test_exit_2_a_lab_taken_down_is_not_known(codes):
    run("down", "-f", str(codes["file2"]))
    p = run("status", "--lab", "codes2", check=False)
    assert p.returncode == 2 and "no lab named 'codes2' is up" in p.stderr
    assert "codes2" not in p.stderr.split("hint:")[-1]  # not offered among the labs up
    run("up", "-f", str(codes["file2"]), "--no-facts")


def test_exit_7_busy_lab(codes):
    hold = ("import sys; from labkit import api\n"
            "with api.lab_lock('codes', 'up'):\n    print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = run("up", "-f", str(codes["file"]), check=False)
        assert p.returncode == 7 and "lab 'codes' is busy" in p.stderr, p.stderr
    finally:
        holder.communicate("")


def test_exit_8_not_up(codes, tmp_path):
    p = bare("status", cwd=tmp_path, env_extra={"LABKIT_HOME": str(tmp_path / "empty-home")})
    assert p.returncode == 8 and "no lab is up" in p.stderr
    p = bare("down", cwd=tmp_path, env_extra={"LABKIT_HOME": str(tmp_path / "empty-home")})
    assert p.returncode == 0 and "nothing to take down" in p.stdout
    docker("stop", "-t", "0", "labkit-codes-b-busybox")
    try:
        p = run("shell", "-f", str(codes["file"]), "--student", "b", "busybox", "id", check=False)
        assert p.returncode == 8 and "labkit-codes-b-busybox is exited" in p.stderr
    finally:
        run("up", "-f", str(codes["file"]), "--no-facts")


def test_exit_1_a_fact_fails(codes):
    """A container started by hand into the lab with the server's network and hostname:
    K7 (own namespaces) fails for it, and verify exits 1 naming it."""
    docker("run", "-d", "--name", "labkit-codes-b-rogue", "--network", "host", "--uts", "host",
           "--label", "labkit.lab=codes", "--label", "labkit.student=b", "--label", "labkit.role=container",
           "--label", "labkit.distro=busybox", "labkit/busybox:1.35", "sleep", "600")
    try:
        p = run("verify", "-f", str(codes["file"]), "--fact", "K7", "--json", check=False)
        assert p.returncode == 1, p.stdout + p.stderr
        failed = {r["host"]: r["detail"] for r in json.loads(p.stdout) if r["outcome"] == "failed"}
        assert list(failed) == ["labkit-codes-b-rogue"], failed
        assert "the server's" in failed["labkit-codes-b-rogue"]  # its namespace or hostname
    finally:
        docker("rm", "-f", "labkit-codes-b-rogue")
    assert run("verify", "-f", str(codes["file"]), "--fact", "K7").returncode == 0


def test_missing_command_in_busybox_hints_at_sh(codes):
    p = run("shell", "-f", str(codes["file"]), "busybox", "bash", "-c", "true", check=False)
    assert p.returncode in (126, 127) and "BusyBox has sh" in p.stderr, p.stderr


# ------------------------------------------------------------------ plan, then apply

def _changes(p):
    return sorted((c["action"], c["kind"], c["name"], c["student"], c["server"]) for c in json.loads(p.stdout)["changes"])


def test_up_plan_shows_the_whole_lab_before_up_nothing_after_and_a_deleted_container(codes):
    before = sorted((c["action"], c["kind"], c["name"]) for c in codes["plan_before"]["changes"])
    assert before == [("create", "container", "labkit-codes-a-busybox"), ("create", "container", "labkit-codes-b-busybox"),
                      ("create", "network", "labkit-codes-a"), ("create", "network", "labkit-codes-b")]
    assert "labkit-codes-a-busybox" in codes["plan_table"] and "nothing was changed" in codes["plan_table"]
    f = str(codes["file"])
    assert _changes(run("up", "-f", f, "--plan", "--json")) == []
    assert "nothing to do" in run("up", "-f", f, "--plan").stdout
    docker("rm", "-f", "labkit-codes-b-busybox")
    try:
        assert _changes(run("up", "-f", f, "--plan", "--json")) == [
            ("create", "container", "labkit-codes-b-busybox", "b", "localhost")]
        table = run("up", "-f", f, "--plan").stdout
        assert "labkit-codes-b-busybox" in table and "labkit-codes-a-busybox" not in table
    finally:
        run("up", "-f", f, "--no-facts")


def test_down_plan_lists_what_would_go_and_removes_nothing(codes):
    f = str(codes["file"])
    got = _changes(run("down", "-f", f, "--plan", "--json", "--student", "a"))
    assert got == [("remove", "container", "labkit-codes-a-busybox", "a", "localhost"),
                   ("remove", "network", "labkit-codes-a", "a", "localhost")]
    assert "labkit-codes-a-busybox" in docker("ps", "--format", "{{.Names}}")


# ------------------------------------------------------------------ CI details (issue 29)

CI = ("name: cidetails\nstudents: [a]\ncontainers: [busybox]\nvm: {enabled: false}\n"
      "provision: {packages: [], hosts: lab, playbooks: [fail.yml]}\n")
# raw tasks: BusyBox runs them without Python; the first changes something and notifies a handler
FAIL = """\
- name: Notify, then fail
  hosts: all
  gather_facts: false
  tasks:
    - name: Change something
      ansible.builtin.raw: touch /tmp/changed
      notify: Mark the handler ran
    - name: Fail on purpose
      ansible.builtin.raw: exit 3
  handlers:
    - name: Mark the handler ran
      ansible.builtin.raw: touch /tmp/handler-ran
"""
CI_HOST = "labkit-cidetails-a-busybox"


@pytest.fixture(scope="module")
def failing_test(tmp_path_factory):
    """`labkit test --keep --junit` of a lab whose converge fails (kept up for the tests below)."""
    d = tmp_path_factory.mktemp("cidetails")
    (d / "lab.yml").write_text(CI)
    (d / "fail.yml").write_text(FAIL)
    run("images", "build", "busybox")
    down_leftovers("-f", str(d / "lab.yml"))
    p = run("test", "-f", str(d / "lab.yml"), "--keep", "--junit", str(d / "out" / "results.xml"), check=False)
    state = {"dir": d, "file": str(d / "lab.yml"), "test": p, "junit": d / "out" / "results.xml", "down": False}
    yield state
    if not state["down"]:  # the last test's `down` did not end well: whatever it left
        down_leftovers("-f", str(d / "lab.yml"))


def _handler_ran(f: str) -> bool:
    return run("shell", "-f", f, "--root", "busybox", "test", "-e", "/tmp/handler-ran", check=False).returncode == 0


def test_test_junit_after_a_failing_converge_names_the_step_host_and_task(failing_test):
    import xml.etree.ElementTree as ET

    p = failing_test["test"]
    assert p.returncode == 5 and "labkit test: step converge failed" in p.stderr, p.stdout + p.stderr
    suite = next(s for s in ET.parse(failing_test["junit"]).getroot().iter("testsuite")
                 if s.get("name") == "labkit-test")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["up", "prepare", "converge", "idempotence", "verify"]
    assert cases["up"].find("failure") is None and cases["up"].find("skipped") is None
    fail = cases["converge"].find("failure")
    assert fail is not None, ET.tostring(cases["converge"])
    assert fail.get("message").startswith(f"converge: [{CI_HOST}] Fail on purpose: failed"), fail.get("message")
    assert all(cases[s].find("skipped") is not None for s in ("prepare", "idempotence", "verify"))
    # the handler the first task notified did not run, and the hint says so and how
    assert not _handler_ran(failing_test["file"])
    assert "--force-handlers" in p.stderr and f"{CI_HOST} changed something before failing" in p.stderr


def test_run_force_handlers_runs_the_notified_handler_after_the_failure(failing_test):
    p = run("run", "-f", failing_test["file"], "--force-handlers", check=False)
    assert p.returncode == 5 and "Fail on purpose" in p.stderr
    assert _handler_ran(failing_test["file"])
    assert "--force-handlers" not in p.stderr.split("hint:")[-1]  # no advice to do what was done


def test_inventory_env_is_what_plain_pytest_and_molecule_tests_read(failing_test):
    env = run("inventory", "-f", failing_test["file"], "--env").stdout
    got = subprocess.run(["sh", "-c", env + '\ncat "$MOLECULE_INVENTORY_FILE"; echo "lab=$LABKIT_LAB"'],
                         capture_output=True, text=True, check=True).stdout
    assert CI_HOST in got and "ansible_connection: community.docker.docker" in got
    assert got.rstrip().endswith("lab=cidetails")


def test_status_after_down_says_not_up_with_exit_8(failing_test):
    f = failing_test["file"]
    assert run("status", "-f", f).returncode == 0
    run("down", "-f", f)
    failing_test["down"] = True  # it exited 0: nothing for the fixture's own `down` to do
    p = run("status", "-f", f, check=False)
    assert p.returncode == 8, p.stdout + p.stderr
    assert "lab 'cidetails' is not up: none of its 1 host(s) exists" in p.stderr and "labkit up -f" in p.stderr
    assert CI_HOST not in p.stdout  # no table of hosts that are all missing
