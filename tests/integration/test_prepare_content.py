"""``provision.prepare`` and the content in one ansible-playbook run (labkit.ansible.parts), on
real BusyBox containers of two students through the real CLI: each step keeps its recap (with
Ansible's own recap of the run as the check), a failure in prepare on one student's host stops
the run before the content on every host and is named prepare's, and a failure in the content
is named converge's with prepare done. Raw tasks: BusyBox runs them without Python.
"""
from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit import paths
from tests.labs import down_leftovers

from .conftest import run

pytestmark = pytest.mark.integration

LAB = ("name: prepc\nstudents: [a, b]\ncontainers: [busybox]\nvm: {enabled: false}\n"
       "provision: {packages: [], hosts: lab, prepare: [prepare.yml], playbooks: [site.yml]}\n")
# per host: ok=2 changed=2 (raw reports changed), skipped=1, and a failure its block's rescue takes
PREPARE = """\
- name: Prepare the hosts
  hosts: all
  gather_facts: false
  tasks:
    - name: Mark prepared
      ansible.builtin.raw: touch /tmp/prepared
    - name: Fail where asked
      ansible.builtin.raw: exit 3
      when: inventory_hostname is search('{fail_on}')
    - name: A failure its rescue takes
      block:
        - name: Fail in a block
          ansible.builtin.raw: exit 4
      rescue:
        - name: Rescue it
          ansible.builtin.raw: "true"
"""
SITE = """\
- name: The content
  hosts: all
  gather_facts: false
  tasks:
    - name: Mark the content ran
      ansible.builtin.raw: touch /tmp/content-ran
    - name: Fail where asked
      ansible.builtin.raw: exit 5
      when: inventory_hostname is search('{fail_on}')
"""
NOWHERE = "^nowhere$"


def _write(d: Path, prepare_fails_on: str = NOWHERE, content_fails_on: str = NOWHERE) -> None:
    (d / "prepare.yml").write_text(PREPARE.format(fail_on=prepare_fails_on))
    (d / "site.yml").write_text(SITE.format(fail_on=content_fails_on))


HOSTS = ("labkit-prepc-a-busybox", "labkit-prepc-b-busybox")


def _has(host: str, path: str) -> bool:
    return subprocess.run(["docker", "exec", host, "test", "-e", path]).returncode == 0


def _clear(path: str) -> None:
    for h in HOSTS:
        subprocess.run(["docker", "exec", h, "rm", "-f", path], check=True)


def _counts(line: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def _recap(stdout: str, step: str) -> dict[str, int]:
    m = re.search(rf"^{step} recap: (.*)$", stdout, re.M)
    assert m, stdout
    return _counts(m.group(1))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    d = tmp_path_factory.mktemp("prepc")
    (d / "lab.yml").write_text(LAB)
    _write(d)
    run("images", "build", "busybox")
    down_leftovers("-f", str(d / "lab.yml"), "-q")
    first = run("up", "-f", str(d / "lab.yml"), "--no-facts", "--no-content-cache")
    yield {"dir": d, "file": str(d / "lab.yml"), "first": first}
    down_leftovers("-f", str(d / "lab.yml"), "-q")


def test_one_run_for_both_steps_and_a_recap_each_that_adds_up_to_ansibles(lab: dict) -> None:
    out = lab["first"].stdout
    assert _recap(out, "prepare") == {"ok": 4, "changed": 4, "failures": 0, "dark": 0, "skipped": 2}, out
    assert _recap(out, "your content") == {"ok": 2, "changed": 2, "failures": 0, "dark": 0, "skipped": 2}, out
    # the run: one ansible-playbook of prepare, labkit's mark and the content (the last of the lab's runs)
    arts = paths.lab_dir("prepc") / "runner" / "artifacts"
    last = max(arts.iterdir(), key=lambda p: p.stat().st_mtime)
    assert any(a.endswith("prepare-site.yml") for a in json.loads((last / "command").read_text())["command"])
    # Ansible's own recap of that run: both steps' counts, plus the mark's one skipped task
    stdout = re.sub(r"\x1b\[[0-9;]*m", "", (last / "stdout").read_text())
    hosts = {m.group(1): _counts(m.group(2)) for m in re.finditer(r"^(labkit-prepc-\S+)\s*: (.*)$", stdout, re.M)}
    assert sorted(hosts) == list(HOSTS), stdout[-2000:]
    assert sum(h["ok"] for h in hosts.values()) == 4 + 2
    assert sum(h["rescued"] for h in hosts.values()) == 2 and sum(h["failed"] for h in hosts.values()) == 0
    assert sum(h["skipped"] for h in hosts.values()) == 2 + 2 + 1
    assert all(_has(h, "/tmp/prepared") and _has(h, "/tmp/content-ran") for h in HOSTS)


def test_a_failure_in_prepare_on_one_host_stops_the_content_on_every_host(lab: dict) -> None:
    _write(lab["dir"], prepare_fails_on="-b-")
    _clear("/tmp/content-ran")
    try:
        p = run("up", "-f", lab["file"], "--no-facts", "--no-content-cache", check=False)
        assert p.returncode == 5, p.stdout + p.stderr
        err = p.stderr
        assert re.search(r"prepare\.yml failed on labkit-prepc-b-busybox \(status failed, rc 2\)", err), err
        assert "[labkit-prepc-b-busybox] Fail where asked: failed" in err
        # only the failure that stopped a host: not the rescued one, not labkit's mark
        assert "Fail in a block" not in err and "labkit: stop here" not in err, err
        assert "your content recap" not in p.stdout
        assert not any(_has(h, "/tmp/content-ran") for h in HOSTS)  # a prepared the same, and waited
    finally:
        _write(lab["dir"])


def test_a_failure_in_the_content_is_converges_with_prepare_done(lab: dict) -> None:
    _write(lab["dir"], content_fails_on="-a-")
    try:
        junit = lab["dir"] / "out" / "results.xml"
        p = run("test", "-f", lab["file"], "--keep", "--junit", str(junit), check=False)
        assert p.returncode == 5, p.stdout + p.stderr
        assert "labkit test: step converge failed" in p.stderr, p.stderr
        assert re.search(r"site\.yml failed on labkit-prepc-a-busybox ", p.stderr), p.stderr
        suite = next(s for s in ET.parse(junit).getroot().iter("testsuite") if s.get("name") == "labkit-test")
        cases = {c.get("name"): c for c in suite.iter("testcase")}
        assert not list(cases["prepare"]) and float(cases["prepare"].get("time")) > 0  # passed, and timed
        fail = cases["converge"].find("failure")
        assert fail is not None and "[labkit-prepc-a-busybox] Fail where asked: failed" in fail.get("message")
    finally:
        _write(lab["dir"])
