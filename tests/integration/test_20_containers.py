"""The container half of the default lab, on the real dockerd: up, facts, second up, down."""
import json
import time

import pytest

from labkit import paths

from .conftest import docker, recap, run

pytestmark = pytest.mark.integration


def containers(facts):
    return [f for f in facts if f["role"] == "container"]


def test_first_up_ends_with_the_facts_table(default_lab):
    out = default_lab["first"].stdout
    assert "kernel-sharing facts" in out
    r = recap(out)
    assert r["failures"] == 0 and r["dark"] == 0 and r["changed"] > 0


def test_four_distinct_distros_share_the_servers_kernel_and_boot(default_facts):
    server = default_facts[0]
    assert server["role"] == "server"
    cs = containers(default_facts)
    assert len(cs) >= 4
    releases = {(c["os_id"], c["os_version"]) for c in cs}
    assert len(releases) >= 4, releases
    for c in cs:
        assert not c["error"], c
        assert c["kernel_release"] == server["kernel_release"], c["host"]
        assert c["boot_id"] == server["boot_id"], c["host"]
        assert c["same_kernel"] is True and c["same_boot"] is True


def test_each_container_has_its_own_os_release_busybox_none(default_facts):
    by_distro = {c["distro"]: c for c in containers(default_facts)}
    assert by_distro["debian:11"]["os_version"] == "11"
    assert by_distro["debian:12"]["os_version"] == "12"
    assert by_distro["debian:13"]["os_version"] == "13"
    assert by_distro["busybox"]["os_id"] == "" and by_distro["busybox"]["os_pretty"] == ""
    assert by_distro["busybox"]["pkg_mgr"] == "none"
    for ref in ("debian:11", "debian:12", "debian:13"):
        assert by_distro[ref]["pkg_mgr"] == "apt-get"
        # the default init, tini (Docker's --init): it reaps and passes signals on; no init system
        assert by_distro[ref]["pid1"] == "docker-init"


def test_containers_are_labelled_and_hardened(default_lab):
    names = docker("ps", "--filter", "label=labkit.lab=demo", "--format", "{{.Names}}").split()
    assert len(names) == 4
    for n in names:
        info = json.loads(docker("inspect", n))[0]
        labels = info["Config"]["Labels"]
        assert labels["labkit.lab"] == "demo" and labels["labkit.student"] == "s01"
        assert labels["labkit.role"] == "container"
        hc = info["HostConfig"]
        assert hc["Privileged"] is False
        assert "ALL" in hc["CapDrop"]
        assert "no-new-privileges" in hc["SecurityOpt"]
        assert hc["Memory"] == 256 * 1024 * 1024 and hc["PidsLimit"] == 256
        assert not any("docker.sock" in (b or "") for b in (hc.get("Binds") or []))
    nets = docker("network", "ls", "--filter", "label=labkit.lab=demo", "--format", "{{.Name}}").split()
    assert nets == ["labkit-demo-s01"]   # one network per student


@pytest.mark.parametrize("distro", ["debian11", "debian12", "debian13", "busybox"])
def test_student_env_is_provisioned_on_every_distro(default_lab, default_facts, distro):
    name = f"labkit-demo-s01-{distro}"
    motd = docker("exec", name, "cat", "/etc/motd")
    kernel = default_facts[0]["kernel_release"]
    assert kernel in motd and "student s01" in motd
    if distro == "busybox":
        assert "BusyBox" in motd
    else:
        assert f"Debian GNU/Linux {distro[-2:]}" in motd
        docker("exec", name, "dpkg", "-s", "less")   # installed through apt
    assert "student:" in docker("exec", name, "cat", "/etc/passwd")


def test_status_lists_every_host_running(default_lab):
    st = json.loads(run("status", "--json").stdout)
    assert len(st["hosts"]) == 5 and st["missing"] == []   # 4 containers and the VM
    assert {h["state"] for h in st["hosts"]} == {"running"}


def test_second_up_changes_nothing(default_lab):
    """The playbook itself is idempotent: run in full again, no task changes anything."""
    second = run("up", "--no-facts", "--full")
    r = recap(second.stdout)
    assert r["changed"] == 0, second.stdout
    assert r["failures"] == 0


def test_up_with_nothing_changed_skips_the_playbook(default_lab):
    """After a full run, a plain `up` finds nothing changed (containers, VM domain, firewall,
    the lab and labkit itself) and runs no playbook; the runner records no new run."""
    runs = paths.lab_dir("demo") / "runner" / "artifacts"
    before = sorted(runs.iterdir()) if runs.is_dir() else []
    t = time.monotonic()
    out = run("up", "--no-facts").stdout
    took = time.monotonic() - t
    assert recap(out) == {"up_to_date": 1}, out
    assert "playbook skipped" in out and "labkit up --full" in out
    assert (sorted(runs.iterdir()) if runs.is_dir() else []) == before, "a playbook ran"
    print(f"no-op up: {took:.1f}s")  # measured in bench/ (d), never asserted here


def test_a_container_removed_behind_labkits_back_is_recreated(default_lab):
    docker("rm", "-f", "labkit-demo-s01-debian12")
    st = json.loads(run("status", "--json").stdout)
    assert st["missing"] == ["labkit-demo-s01-debian12"]
    out = run("up", "--no-facts").stdout
    assert recap(out)["failures"] == 0
    assert "labkit-demo-s01-debian12" in docker("ps", "--format", "{{.Names}}")


def test_shell_runs_as_the_student_in_a_container(default_lab):
    out = run("shell", "debian12", "sh", "-c", "id -un; cat /etc/motd").stdout
    assert out.startswith("student\n") and "Debian GNU/Linux 12" in out
    root = run("shell", "busybox", "--root", "id", "-u").stdout
    assert root.strip() == "0"
    bad = run("shell", "debain12", check=False)
    assert bad.returncode == 2 and "hosts: busybox, debian11, debian12, debian13, vm" in bad.stderr
