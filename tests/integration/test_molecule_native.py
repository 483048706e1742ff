"""`molecule test` through the scenario `labkit init --molecule` writes (issue 29), with the
Molecule labkit installs, on labkit's real containers and VM.

The role is tests/data/roles/webnote, written as roles for servers are: a scenario `default` of
the docker-driver kind and testinfra tests that read ``MOLECULE_INVENTORY_FILE``. A copy of it
gets the ansible-native scenario `labkit` (create and destroy through labkit, the lab's
inventory), which reuses that converge and those tests unchanged. One `molecule test`, one VM
boot: everything below reads its output.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.labs import down_leftovers

from .conftest import docker, run, virsh

pytestmark = [pytest.mark.integration, pytest.mark.vm]

ROOT = Path(__file__).resolve().parents[2]
LAB = "webnote-labkit"
HOSTS = [f"labkit-{LAB}-s01-debian12", f"labkit-{LAB}-s01-debian13", f"labkit-{LAB}-s01-vm"]
TESTS = ["test_the_note_belongs_to_the_system_user", "test_the_user_cannot_log_in",
         "test_the_handler_ran_once_the_note_was_written", "test_the_note_names_the_hosts_own_kernel"]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    role = tmp_path_factory.mktemp("roles") / "webnote"
    shutil.copytree(ROOT / "tests" / "data" / "roles" / "webnote", role)
    lab_file = role / "molecule" / "labkit" / "lab.yml"
    run("images", "build", "debian:12", "debian:13")
    run("box", "build")
    init = run("init", "--molecule", "labkit", "--role", str(role))
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", NO_COLOR="1",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", COLUMNS="200")
    env.pop("LABKIT_LAB", None)
    t0 = time.monotonic()
    try:
        p = subprocess.run([str(bindir / "molecule"), "test", "-s", "labkit"], cwd=role, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=2400)
        out, rc = _ANSI.sub("", p.stdout), p.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = _ANSI.sub("", (e.stdout or b"").decode(errors="replace")), -1
    took = time.monotonic() - t0
    print(f"molecule test -s labkit: {took:.0f}s")
    yield {"role": role, "lab_file": lab_file, "init": init, "out": out, "rc": rc, "seconds": took}
    down_leftovers("-f", str(lab_file))  # whatever the test left


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _step(out: str, step: str) -> str:
    m = re.search(rf"labkit\W+{step}\W+Executing\b(.*?)labkit\W+{step}\W+Executed", out, re.S)
    return m.group(1) if m else ""


def test_init_wrote_an_ansible_native_scenario_reusing_the_roles_converge_and_tests(scenario):
    said = scenario["init"].stdout
    assert "reused: molecule/default/converge.yml (converge)" in said
    assert "reused: molecule/default/tests/ (testinfra tests, unchanged)" in said
    text = (scenario["role"] / "molecule" / "labkit" / "molecule.yml").read_text()
    assert "driver:" not in text and "platforms:" not in text


def test_molecule_test_passes_every_step(scenario):
    out = scenario["out"]
    assert scenario["rc"] == 0, f"molecule test exited {scenario['rc']}:\n{_tail(out)}"
    for step in ("destroy", "syntax", "create", "converge", "idempotence", "verify"):
        assert re.search(rf"labkit\W+{step}\W+Executed: Successful", out), f"{step}:\n{_tail(out)}"


def test_the_role_converged_on_the_containers_and_the_vm_and_is_idempotent(scenario):
    out = scenario["out"]
    first = dict(re.findall(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", _step(out, "converge"), re.M))
    assert sorted(first) == HOSTS and all(int(n) > 0 for n in first.values()), first
    again = dict(re.findall(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", _step(out, "idempotence"), re.M))
    # the task tagged molecule-idempotence-notest (it changes every time) is skipped by Molecule
    assert again == dict.fromkeys(HOSTS, "0"), again


def test_the_roles_own_testinfra_tests_ran_unchanged_on_every_host(scenario):
    verify = _step(scenario["out"], "verify")
    passed = set(re.findall(r"::(test_\w+)\[ansible://([^\]]+)\] PASSED", verify))
    assert passed == {(t, h) for t in TESTS for h in HOSTS}, _tail(verify)
    assert re.search(rf"{len(TESTS) * len(HOSTS)} passed", verify)


def test_destroy_took_the_lab_down(scenario):
    assert not (scenario["role"] / "molecule" / "labkit" / "inventory" / "labkit.yml").exists()
    assert docker("ps", "-aq", "--filter", f"label=labkit.lab={LAB}").strip() == ""
    assert HOSTS[-1] not in virsh("list", "--all", "--name")
    p = run("status", "-f", str(scenario["lab_file"]), check=False)
    assert p.returncode == 8 and f"lab '{LAB}' is not up" in p.stderr, p.stderr
