"""init: none, tini and systemd (issue 29), on the real engines: a lab whose containers run
each init (Docker and Podman). PID 1 is what the lab file chose and K1..K12 hold for each
(K6 worded per init); with tini, orphans of restarted daemons are reaped, with none they pile
up as zombies; with systemd, a role written for servers (a packaged daemon, a template unit,
handlers through ansible.builtin.systemd) converges and is idempotent in a container that is
not privileged and has no capability beyond labkit's but SETPCAP; every play here says
`become: true`, as server playbooks do, and no lab-file key makes it work."""
import json
import shutil
from pathlib import Path

import pytest

from tests.labs import down_leftovers

from .conftest import docker, podman, run

pytestmark = pytest.mark.integration
ROLES = Path(__file__).parent / "init_roles"
LAB = """\
name: inits
students: [s01]
containers:
  - {distro: debian:11, init: none}
  - debian:12                                    # the lab's default init: tini
  - {distro: debian:13, init: systemd}
  - {distro: debian:12, engine: podman, init: systemd}
vm: {enabled: false}
provision: {packages: []}
"""
NONE, TINI, SYSD, SYSD_PODMAN = (f"labkit-inits-s01-{h}" for h in ("debian11", "debian12", "debian13",
                                                                    "debian12-podman"))
# labkit's hardened set (role lab_container): SETPCAP is the one systemd adds
LABKIT_CAPS = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE",
               "SYS_CHROOT"}
ZOMBIES = """\
- name: Restart a daemon ten times, as a role's handler on a server does
  hosts: labkit-inits-s01-debian11:labkit-inits-s01-debian12
  become: true
  tasks:
    - name: The daemon's role, converged ten times
      ansible.builtin.include_role:
        name: toy_sysv
      loop: "{{ range(10) | list }}"
"""
SYSTEMD = """\
- name: A role written for Debian servers
  hosts: labkit-inits-s01-debian13:labkit-inits-s01-debian12-podman
  become: true
  roles: [toy_unit]

- name: What Ansible sees of the service manager
  hosts: labkit-inits-s01-debian13:labkit-inits-s01-debian12-podman
  become: true
  gather_facts: true
  tasks:
    - name: Check that Ansible sees systemd
      ansible.builtin.assert:
        that: ansible_facts.service_mgr == 'systemd'
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("inits")
    (d / "lab.yml").write_text(LAB)
    (d / "zombies.yml").write_text(ZOMBIES)
    (d / "systemd.yml").write_text(SYSTEMD)
    shutil.copytree(ROLES, d / "roles")  # roles/ beside the lab file is on the roles path
    f = str(d / "lab.yml")
    down_leftovers("-f", f)
    run("up", "-f", f, "--build", "--no-facts")
    yield {"lab": f, "dir": d}
    down_leftovers("-f", f)


def test_pid1_is_the_init_the_lab_chose_and_the_facts_hold(lab):
    rows = {r["host"]: r for r in json.loads(run("facts", "-f", lab["lab"], "--json").stdout)}
    assert rows[NONE]["pid1"] == "sleep"
    assert rows[TINI]["pid1"] == "docker-init"
    assert rows[SYSD]["pid1"] == rows[SYSD_PODMAN]["pid1"] == "systemd"
    server = next(r for r in rows.values() if r["role"] == "server")
    for name in (NONE, TINI, SYSD, SYSD_PODMAN):  # every container on the server's running kernel
        assert rows[name]["boot_id"] == server["boot_id"], name
    p = run("verify", "-f", lab["lab"], "--json", check=False)
    results = json.loads(p.stdout)
    failed = [r for r in results if r["outcome"] == "failed"]
    assert p.returncode == 0 and not failed, failed
    k6 = {r["host"]: r["detail"] for r in results if r["fact"] == "K6" and r["outcome"] == "passed"}
    assert set(k6) >= {NONE, TINI, SYSD, SYSD_PODMAN}, k6
    assert "init: systemd" in k6[SYSD] and "no kernel booted" in k6[SYSD]
    assert "init: tini" in k6[TINI]


def test_systemd_runs_unprivileged_with_labkits_capabilities(lab):
    for name in (SYSD,):
        hc = json.loads(docker("inspect", name))[0]["HostConfig"]
        assert hc["Privileged"] is False
        assert set(hc["CapAdd"]) - LABKIT_CAPS == {"SETPCAP"} and hc["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in hc["SecurityOpt"]
    hc = json.loads(podman("inspect", SYSD_PODMAN).stdout)[0]["HostConfig"]
    assert hc["Privileged"] is False and "CAP_SYS_ADMIN" not in hc["CapAdd"]
    for name, cli in ((SYSD, docker), (SYSD_PODMAN, None)):
        argv = ["exec", name, "systemctl", "is-system-running", "--wait"]
        state = (cli(*argv) if cli else podman(*argv).stdout).strip()
        assert state == "running", (name, state)
    # its memory, CPU and PID limits stay: root inside cannot leave its memory cgroup (read-only)
    p = run("shell", "-f", lab["lab"], "--root", "debian13", "--", "sh", "-c",
            "echo $$ > /sys/fs/cgroup/memory/cgroup.procs", check=False)
    assert p.returncode != 0 and "Read-only file system" in p.stderr, p.stdout + p.stderr


def zombies(name: str) -> int:
    return sum(1 for s in docker("exec", name, "ps", "-eo", "stat=").split() if s.startswith("Z"))


def test_tini_reaps_the_orphans_that_none_leaves_as_zombies(lab):
    run("run", "-f", lab["lab"], str(lab["dir"] / "zombies.yml"))
    assert zombies(TINI) == 0
    assert zombies(NONE) >= 9  # each restart's old daemon, never reaped by `sleep`


def test_a_servers_role_converges_and_is_idempotent_with_systemd(lab):
    p = run("run", "-f", lab["lab"], str(lab["dir"] / "systemd.yml"), "--idempotence", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert all(f"[{h}]" in p.stdout for h in (SYSD, SYSD_PODMAN)), p.stdout  # both ran it
    # systemd says the unit started before its Python binds the port: ask for up to 30 s
    fetch = ("import time, urllib.request\nfor i in range(60):\n    try:\n"
             "        print(urllib.request.urlopen('http://127.0.0.1:8080/').read().decode()); break\n"
             "    except OSError:\n        time.sleep(0.5)\n")
    for name, cli in ((SYSD, ["docker"]), (SYSD_PODMAN, ["podman"])):
        page = docker("exec", name, "python3", "-c", fetch) if cli == ["docker"] else podman(
            "exec", name, "python3", "-c", fetch).stdout
        assert "hello from a systemd unit" in page, name
