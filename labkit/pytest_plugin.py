"""A pytest plugin for CI users who test their roles on a labkit lab (entry point ``pytest11``).

Inactive unless a lab is named (``--labkit-file lab.yml`` or ``--labkit-lab NAME``)::

    def test_nginx_listens(lab_host):            # once per host of --labkit-hosts (default:
        assert lab_host.socket("tcp://0.0.0.0:80").is_listening   # the lab file's provision.hosts)

    def test_the_vm_has_its_own_kernel(lab):
        vm, ct = lab.host("vm"), lab.host("debian12")   # by the names `labkit shell` takes
        assert vm.check_output("uname -r") != ct.check_output("uname -r")

``--labkit-up`` brings the lab up for the session (and converges the lab file's content)
and takes it down at the end; ``lab.run("site.yml")`` runs a playbook on the live lab;
``lab.inventory`` is the inventory file (for ``ansible``/testinfra of your own); for the
session its VMs are reached through one shared SSH connection each.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from labkit import names

if TYPE_CHECKING:
    from testinfra.host import Host

    from labkit.api import ConvergeResult
    from labkit.lab.spec import Lab as LabSpec

# Every pytest run of this Python loads this plugin (entry point pytest11), and it stays
# inactive unless a lab is named: labkit's API (and with it Ansible's and the engines' modules)
# is imported in the functions that need it, when a lab is named, not with the plugin.


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("labkit", "labkit lab (matched containers and VM)")
    g.addoption("--labkit-file", help="The lab file to test against (activates the plugin).")
    g.addoption("--labkit-lab", help="The name of a lab that is up (activates the plugin).")
    g.addoption("--labkit-up", action="store_true", help="Bring the lab up for the session and down at the end.")
    g.addoption("--labkit-hosts", help="Host pattern lab_host runs over (default: the lab's provision.hosts).")


def _active(config: pytest.Config) -> bool:
    return bool(config.getoption("labkit_file") or config.getoption("labkit_lab"))


def pytest_configure(config: pytest.Config) -> None:
    if not _active(config):
        return
    # testinfra's ansible backend runs ansible-inventory: labkit's own, also from an unactivated venv
    if shutil.which("ansible-inventory") is None:
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")


class Lab:
    """The live lab of the session: its spec, inventory, hosts and a way to run playbooks."""

    def __init__(self, lab: LabSpec, inventory: Path) -> None:
        self.spec = lab
        self.name = lab.name
        self.inventory = inventory

    def hosts(self, pattern: str = "lab") -> list[str]:
        """Host names matching an inventory pattern (groups: see `labkit inventory`)."""
        from testinfra.utils.ansible_runner import AnsibleRunner

        return sorted(AnsibleRunner(str(self.inventory)).get_hosts(pattern))

    def host(self, name: str, student: str | None = None) -> Host:
        """A testinfra host by full name or by the short name `labkit shell` takes."""
        import testinfra

        full = name if name.startswith(names.lab_prefix(self.name)) else names.container(
            self.name, student or self.spec.students[0], name) if name != "vm" else names.vm(
            self.name, student or self.spec.students[0])
        if full not in self.hosts("lab"):
            raise LookupError(f"no host {full} in lab {self.name}: {', '.join(self.hosts('lab'))}")
        return testinfra.get_host(f"ansible://{full}", ansible_inventory=str(self.inventory))

    def run(self, *playbooks: str, **opts: Any) -> ConvergeResult:
        """Run playbooks on the live lab (``labkit run``); returns labkit's ConvergeResult."""
        from labkit import api

        return api.converge(self.spec, [str(Path(p).resolve()) for p in playbooks] or None, **opts)


def _select(config: pytest.Config) -> LabSpec:
    from labkit import api

    return api.select_lab(config.getoption("labkit_file"), config.getoption("labkit_lab"), default_ok=True).lab


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The session's lab (brought up with --labkit-up, and taken down after the session)."""
    from labkit import api

    if not _active(request.config):
        pytest.skip("no lab named: pass --labkit-file LAB.yml or --labkit-lab NAME")
    spec = _select(request.config)
    up = request.config.getoption("labkit_up")
    if up:
        api.up(spec, with_facts=False)
    try:
        # one SSH login per VM for the session: each testinfra command would log in anew
        with api.shared_inventory(spec) as path:
            yield Lab(spec, path)
    finally:
        if up:
            api.down(spec)


def planned_hosts(spec: LabSpec, pattern: str, work: Path) -> list[str]:
    """The lab's hosts matching ``pattern``, from the plan (known before the lab is up)."""
    from testinfra.utils.ansible_runner import AnsibleRunner

    from labkit.ansible import inventory as inv_mod
    from labkit.plan.model import Context, ServerRef, make_plan

    plan = make_plan(spec, Context((ServerRef("localhost"),), str(work)))
    rows = [{"name": h.name, "role": h.role, "distro": h.distro, "student": h.student, "server": h.server}
            for h in plan.hosts]
    path = inv_mod.write_to(work / "planned-hosts.yml", inv_mod.build(rows))
    return sorted(AnsibleRunner(str(path)).get_hosts(pattern))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lab_host" not in metafunc.fixturenames or not _active(metafunc.config):
        return
    spec = _select(metafunc.config)
    pattern = metafunc.config.getoption("labkit_hosts") or spec.provision.hosts
    hosts = planned_hosts(spec, pattern, Path(tempfile.mkdtemp(prefix="labkit-plan-")))
    metafunc.parametrize("lab_host", hosts, indirect=True, ids=hosts)


@pytest.fixture
def lab_host(request: pytest.FixtureRequest, lab: Lab) -> Host:
    """A testinfra host of the lab, once per host matching --labkit-hosts."""
    return lab.host(request.param)
