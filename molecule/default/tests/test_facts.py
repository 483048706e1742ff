"""The Molecule instances against the lab server, with labkit's own kernel-sharing checks.

testinfra's ``host`` fixture is each instance of the inventory Molecule wrote (docker
connection, so ``host.run`` is a ``docker exec ... /bin/sh -c``: BusyBox needs no Python);
the lab server is ``local://``. The checks are the functions ``labkit verify`` runs
(``labkit.observe.checks``), so a failure names the fact, the hosts and the values that differed.
"""
from __future__ import annotations

import os

import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

from labkit.observe import checks
from labkit.observe.facts import HostFacts, inventory_host_facts, local_server_facts

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = AnsibleRunner(INVENTORY).get_hosts("all")

facts_of = inventory_host_facts


@pytest.fixture(scope="module")
def server() -> HostFacts:
    return local_server_facts()


@pytest.fixture(scope="module")
def everyone() -> list[HostFacts]:
    """Every instance (K7 compares each one's namespaces with all the others')."""
    return [facts_of(testinfra.get_host(f"ansible://{n}", ansible_inventory=INVENTORY))
            for n in testinfra_hosts]


@pytest.mark.parametrize("check", [checks.k1, checks.k2, checks.k4, checks.k5, checks.k6],
                         ids=["K1", "K2", "K4", "K5", "K6"])
def test_fact(host, server, check):
    check(facts_of(host), server)


def test_k7_isolated(host, server, everyone):
    checks.k7(facts_of(host), server, everyone)


def test_student_env(host):
    """What the role promised: the student account and a motd naming the shared kernel."""
    v = host.ansible.get_variables()
    user = v["labkit_provision"]["user"]
    passwd = host.run("cat /etc/passwd").stdout
    assert any(line.startswith(f"{user}:") for line in passwd.splitlines()), f"no {user} in /etc/passwd"
    motd = host.file("/etc/motd")
    assert motd.exists
    kernel = host.run("uname -r").stdout.strip()
    assert kernel in motd.content_string and "lab server's kernel" in motd.content_string
