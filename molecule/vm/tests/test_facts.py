"""The Molecule VM against the lab server, with labkit's own kernel-sharing checks.

testinfra's ``host`` fixture is the VM of the inventory Molecule wrote from create.yml's
instance config (ssh backend); the lab server is ``local://``. The checks are the functions
``labkit verify`` runs (``labkit.observe.checks``): K3 (own kernel and boot), K5 (kernel files
present), K6 (PID 1 is systemd).
"""
from __future__ import annotations

import os

import pytest
from testinfra.utils.ansible_runner import AnsibleRunner

from labkit.observe import checks
from labkit.observe.facts import HostFacts, inventory_host_facts, local_server_facts

testinfra_hosts = AnsibleRunner(os.environ["MOLECULE_INVENTORY_FILE"]).get_hosts("lab_vms")

facts_of = inventory_host_facts


@pytest.fixture(scope="module")
def server() -> HostFacts:
    return local_server_facts()


@pytest.mark.parametrize("check", [checks.k3, checks.k5, checks.k6], ids=["K3", "K5", "K6"])
def test_fact(host, server, check):
    check(facts_of(host), server)


def test_student_env(host):
    """What the role promised: the student account and a motd naming the VM's own kernel."""
    v = host.ansible.get_variables()
    assert host.user(v["labkit_provision"]["user"]).exists
    kernel = host.run("uname -r").stdout.strip()
    motd = host.file("/etc/motd").content_string
    assert kernel in motd and "its own kernel" in motd
