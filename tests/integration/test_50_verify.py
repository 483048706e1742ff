"""`labkit verify` on the live default lab: every fact K1..K12 holds; the checks can fail."""
import json
import xml.etree.ElementTree as ET

import pytest

from labkit import paths
from labkit.observe.facts import collect
from labkit.observe.verify import build_view, run_checks
from tests.conftest import process_cmdlines

from .conftest import run

pytestmark = [pytest.mark.integration, pytest.mark.vm]
FACT_IDS = [f"K{i}" for i in range(1, 13)]


def vm_logins() -> int:
    """How many times the default lab's VM has let someone in over SSH (its sshd's journal);
    this count's own login included."""
    p = run("shell", "--root", "vm", "--", "sh", "-c",
            "journalctl -t sshd --no-pager -o cat | grep -c 'Accepted publickey'")
    return int(p.stdout.split()[-1])


@pytest.fixture(scope="module")
def verified(default_lab, tmp_path_factory):
    junit = tmp_path_factory.mktemp("verify") / "verify.xml"
    before = vm_logins()
    p = run("verify", "--junit", str(junit), check=False)
    return p, junit, vm_logins() - before - 1  # verify's logins (the second count's own is not)


def test_every_fact_passes_on_the_default_lab(verified):
    p, _, _ = verified
    assert p.returncode == 0, p.stdout + p.stderr
    for k in FACT_IDS:
        assert f"│ {k} " in p.stdout, k
    assert " 0 failed" in p.stdout


def test_junit_has_one_case_per_fact_and_host(verified):
    _, junit, _ = verified
    cases = ET.parse(junit).getroot().iter("testcase")
    names = [c.get("name") for c in cases]
    assert "test_K1[labkit-demo-s01-debian12]" in names
    assert "test_K3[labkit-demo-s01-vm]" in names
    assert "test_K10" in names and "test_K12" in names
    assert len([n for n in names if n.startswith("test_K1[")]) == 4   # one per container


def test_verify_logs_in_to_the_vm_once_and_leaves_no_connection(verified):
    """Every fact's check and K11's image hand-off go through one shared SSH connection
    (labkit.vm.sshmux): an emulated VM spends most of a second on each login. Nothing of it
    stays after the command."""
    p, _, logins = verified
    assert p.returncode == 0, p.stdout + p.stderr
    assert logins == 1, logins
    cfg = str(paths.lab_dir("demo") / "ssh_config")
    assert not [cmd for _, cmd in process_cmdlines() if f"-F {cfg} -M -N" in cmd]


def test_one_fact_as_json(default_lab):
    rows = json.loads(run("verify", "--fact", "K3", "--json").stdout)
    assert [(r["fact"], r["host"], r["outcome"]) for r in rows] == [("K3", "labkit-demo-s01-vm", "passed")]


def test_the_vm_listed_among_the_containers_fails_k1_and_k2(default_lab):
    """Feed the checks an inventory that lists the VM as a container: K1 and K2 must fail,
    naming the VM and both kernels."""
    from dataclasses import replace

    from labkit import api
    from labkit.lab import spec

    lab = spec.load_lab(None)
    # host rows are frozen: a copy of the VM's that says container (reached as before, over SSH)
    hosts = [replace(h, role="container") if h.role == "vm" else h
             for h in api.hosts("demo") if h.state == "running"]
    view = build_view(collect(hosts, api.ssh_config("demo")), "demo", api.ssh_config("demo"))
    results = run_checks(view, only=["K1", "K2"])
    bad = {(r.fact, r.host): r.detail for r in results if r.outcome == "failed"}
    assert set(bad) == {("K1", "labkit-demo-s01-vm"), ("K2", "labkit-demo-s01-vm")}
    server_kernel = view.server.kernel_release
    vm_kernel = view.hosts["labkit-demo-s01-vm"].kernel_release
    assert f"kernel {vm_kernel} != server {server_kernel}" in bad[("K1", "labkit-demo-s01-vm")]
    assert "boot_id" in bad[("K2", "labkit-demo-s01-vm")]
    assert lab.name == "demo"
