"""A two-server classroom from one inventory, on this machine: this machine and the default
lab's VM (prepared by `labkit prepare` with its own engine) as the second lab server. Each
server's containers run on that server's kernel; one command brings it up, one report merges
the facts of both servers, `labkit down` cleans both."""
import json

import pytest

from tests.labs import down_leftovers, openssh, serving

from .conftest import recap, run, vm_as_lab_server, write_inventory

pytestmark = [pytest.mark.integration, pytest.mark.vm]


@pytest.fixture(scope="module")
def classroom(tmp_path_factory, vm_server):  # the default lab's VM, prepared as server-2
    d = tmp_path_factory.mktemp("duo")
    inv = d / "hosts.yml"
    write_inventory(inv, {"localhost": {"ansible_connection": "local",
                                        "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
                          **vm_as_lab_server("server-2")})
    lab = d / "lab.yml"
    lab.write_text("name: duo\nstudents: [a1, a2, a3]\ncontainers: [busybox]\nvm: {enabled: false}\n"
                   "provision: {packages: []}\n")
    down_leftovers("-f", str(lab), "-i", str(inv))
    up = run("up", "-f", str(lab), "-i", str(inv), "--no-facts")  # the facts: read once, just below
    # `labkit facts` of both servers, read once for the tests below (a pass over the VM server
    # costs tens of seconds under emulation)
    facts = json.loads(run("facts", "-f", str(lab), "--json").stdout)
    state = {"lab": lab, "inv": inv, "up": up, "facts": facts, "down": False}
    yield state
    if not state["down"]:  # the last test's `down` did not end well: whatever it left
        down_leftovers("-f", str(lab), "-i", str(inv))


def test_one_command_brings_up_both_servers(classroom):
    r = recap(classroom["up"].stdout)
    assert r["failures"] == 0 and r["dark"] == 0
    st = json.loads(run("status", "-f", str(classroom["lab"]), "--json").stdout)
    by_server = {}
    for h in st["hosts"]:
        by_server.setdefault(h["server"], []).append(h["student"])
    assert sorted(by_server) == ["localhost", "server-2"]
    assert sorted(by_server["localhost"] + by_server["server-2"]) == ["a1", "a2", "a3"]


def test_merged_facts_show_each_servers_containers_on_that_servers_kernel(classroom):
    rows = classroom["facts"]
    servers = {r["host"]: r for r in rows if r["role"] == "server"}
    assert set(servers) == {"lab-server", "server-2"}
    assert servers["lab-server"]["boot_id"] != servers["server-2"]["boot_id"]
    for c in (r for r in rows if r["role"] == "container"):
        own = servers["lab-server" if c["server"] == "localhost" else c["server"]]
        assert c["boot_id"] == own["boot_id"] and c["kernel_release"] == own["kernel_release"], c
        assert c["same_kernel"] is True and c["same_boot"] is True
    assert {c["server"] for c in rows if c["role"] == "container"} == {"localhost", "server-2"}


def test_verify_passes_per_server(classroom):
    p = run("verify", "-f", str(classroom["lab"]), "--fact", "K1", "--fact", "K2", "--json")
    results = json.loads(p.stdout)
    assert len(results) == 6 and all(r["outcome"] == "passed" for r in results), results


def test_the_door_of_one_server_serves_its_students(classroom, tmp_path):
    """`labkit access` names each student's server; `labkit serve --server server-2` lets the
    students placed there into their containers on that server (its kernel), and tells the
    others their hosts are elsewhere."""
    lab = str(classroom["lab"])
    slips = {s["student"]: s for s in json.loads(run("access", "-f", lab, "--format", "json").stdout)["students"]}
    far = [s for s in slips.values() if s["server"] == "server-2"]
    near = [s for s in slips.values() if s["server"] == "localhost"]
    assert far and near, slips
    assert far[0]["address"] == vm_as_lab_server("server-2")["server-2"]["ansible_host"]
    vm_kernel = next(r["kernel_release"] for r in classroom["facts"] if r["role"] == "server" and r["host"] == "server-2")
    with serving(["-f", lab, "--server", "server-2"], tmp_path / "serve.log") as srv:
        p = openssh(srv, far[0]["student"], "busybox", "uname -r; id -un", password=far[0]["password"])
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == [vm_kernel, "student"]
        p = openssh(srv, near[0]["student"], "busybox", "true", password=near[0]["password"])
        assert p.returncode == 1 and "lab server localhost" in p.stderr, p.stderr


def test_second_up_changes_nothing_and_down_cleans_both(classroom):
    again = run("up", "-f", str(classroom["lab"]), "-i", str(classroom["inv"]), "--no-facts")
    assert recap(again.stdout)["changed"] == 0, again.stdout
    out = run("down", "-f", str(classroom["lab"]), "-i", str(classroom["inv"])).stdout
    classroom["down"] = True  # it exited 0: nothing for the fixture's own `down` to do
    assert "removed 3 containers, 3 networks" in out
    p = run("status", "-f", str(classroom["lab"]), "--json", check=False)
    assert p.returncode == 8, p.stdout + p.stderr  # not up
    st = json.loads(p.stdout)
    assert st["hosts"] == [] and st["networks"] == []
