"""Podman on a remote lab server (issue 17): a lab with a Debian 12 container on Docker, one on
rootful Podman and one on rootless Podman as a non-root user of the server (made by this
module), all on a lab server of an inventory reached over SSH. `labkit prepare --podman` sets
Podman up there; `labkit up` makes the Podman containers there (image loaded from that
server's Docker store into root's and the user's store) and Ansible provisions them through
labkit's wrappers, which run that server's Podman (root's, or the user's through role
lab_podman's podman-as) over SSH; status, verify (engine shown; K1/K2 hold rootless too),
facts (the rootless uid map), shell and `up --plan` read them there; a second `up` changes
nothing; `down` leaves nothing in either store (and names the networks it removed there), and
no SSH connection behind.

The remote server is this machine reached over SSH (its own sshd on a loopback port of this
module's, root's key for this test only): the remote code path runs for real. No VM."""
import json
import pwd
import time
from pathlib import Path

import pytest

from labkit import paths
from tests.labs import down_leftovers

from .conftest import docker, loopback_server, podman_user, recap, run, ssh_masters
from .conftest import podman as podman_cli

pytestmark = [pytest.mark.integration]
LAB, PORT, SERVER, USER = "rpod77", 2223, "far77", "rpod77"
DOCKER, PODMAN = f"labkit-{LAB}-s01-debian12", f"labkit-{LAB}-s01-debian12-podman"
ROOTLESS = f"{PODMAN}-{USER}"


def podman(*args: str, user: str = "") -> list[str]:
    """The server's Podman (it is this machine) as root, or as the rootless user."""
    p = podman_cli(*args, user=user)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


@pytest.fixture(scope="module")
def far(tmp_path_factory):
    d = tmp_path_factory.mktemp("far77")
    lab = d / f"{LAB}.yml"
    with loopback_server(d, PORT, SERVER) as server, podman_user(USER, 400000):
        inv = server["inv"]
        state: dict = {}
        try:
            run("images", "build", "debian:12")
            lab.write_text(f"name: {LAB}\nstudents: [s01]\nvm: {{enabled: false}}\n"
                           "containers:\n  - debian:12\n  - {distro: debian:12, engine: podman}\n"
                           f"  - {{distro: debian:12, engine: podman, user: {USER}}}\n")
            t0 = time.monotonic()
            prepared = run("prepare", "-i", str(inv), "--podman")
            down_leftovers("-f", str(lab), "-i", str(inv))
            up = run("up", "-f", str(lab), "-i", str(inv))
            state = {"lab": str(lab), "inv": str(inv), "up": up, "prepared": prepared, "t0": t0, "down": False}
            yield state
        finally:
            if lab.exists() and not state.get("down"):  # not taken down by the last test (it failed before)
                down_leftovers("-f", str(lab), "-i", str(inv))


def test_prepare_sets_podman_up_on_the_server(far):
    assert recap(far["prepared"].stdout)["failures"] == 0
    conf = Path("/etc/containers/containers.conf.d/50-labkit.conf").read_text()
    assert 'cgroup_manager = "cgroupfs"' in conf and "default_ulimits" in conf


def test_up_makes_both_engines_containers_on_the_remote_server(far):
    out = far["up"].stdout
    assert recap(out)["failures"] == 0, out
    assert podman("ps", "--filter", f"label=labkit.lab={LAB}", "--format", "{{.Names}}") == [PODMAN]
    assert podman("ps", "--filter", f"label=labkit.lab={LAB}", "--format", "{{.Names}}", user=USER) == [ROOTLESS]
    assert DOCKER in docker("ps", "--filter", f"label=labkit.lab={LAB}", "--format", "{{.Names}}").split()
    # Ansible reached the Podman containers through labkit's wrappers, which run Podman over SSH:
    # root's, and the user's through role lab_podman's podman-as on the server
    wrapper = paths.lab_dir(LAB) / "podman-ssh" / SERVER / "_root" / "podman"
    assert f"-p', '{PORT}'" in wrapper.read_text()
    user_wrapper = (paths.lab_dir(LAB) / "podman-ssh" / SERVER / USER / "podman").read_text()
    assert f"-p', '{PORT}'" in user_wrapper and f"'/usr/local/libexec/labkit/podman-as/{USER}/podman'" in user_wrapper
    st = json.loads(run("status", "-f", far["lab"], "--json").stdout)
    rows = {h["name"]: h for h in st["hosts"]}
    assert rows[PODMAN]["server"] == SERVER and rows[PODMAN]["engine"] == "podman" and rows[PODMAN]["state"] == "running"
    assert rows[PODMAN]["local"] is False and rows[DOCKER]["server"] == SERVER
    assert (rows[ROOTLESS]["server"], rows[ROOTLESS]["engine"], rows[ROOTLESS]["user"], rows[ROOTLESS]["state"]) == (
        SERVER, "podman", USER, "running")
    assert st["missing"] == []
    assert ssh_masters(PORT) == [], "the shared SSH connection outlived labkit up"


def test_verify_passes_with_the_engine_of_each_host(far):
    results = json.loads(run("verify", "-f", far["lab"], "--json").stdout)
    bad = [r for r in results if r["outcome"] != "passed" and not r["detail"].startswith("not applicable: the lab has no VM")]
    assert results and bad == [], bad
    engines = {r["host"]: r["engine"] for r in results if r["host"] in (DOCKER, PODMAN, ROOTLESS)}
    assert engines == {DOCKER: "docker", PODMAN: "podman", ROOTLESS: f"podman (rootless, {USER})"}
    held = {(r["fact"], r["host"]) for r in results if r["outcome"] == "passed"}
    assert {("K1", ROOTLESS), ("K2", ROOTLESS)} <= held
    rows = {r["host"]: r for r in json.loads(run("facts", "-f", far["lab"], "--json").stdout)}
    assert rows[PODMAN]["server"] == SERVER and not rows[PODMAN]["error"] and rows[PODMAN]["virt"] == "podman"
    assert rows[PODMAN]["same_kernel"] is True  # this "remote" server is this machine
    # rootless: on the server's kernel and boot, in a user namespace whose root is the user there
    rl, server = rows[ROOTLESS], next(r for r in rows.values() if r["role"] == "server" and r["host"] == SERVER)
    assert rl["server"] == SERVER and not rl["error"] and rl["engine_user"] == USER
    assert rl["boot_id"] == server["boot_id"] and rl["same_kernel"] is True and rl["same_boot"] is True
    assert rl["uid_map"].split(";")[0].split() == ["0", str(pwd.getpwnam(USER).pw_uid), "1"], rl["uid_map"]
    assert rows[PODMAN]["uid_map"].split(";")[0].split() == ["0", "0", "4294967295"]


def test_shell_reaches_both_as_the_student(far):
    for short in ("debian12", "debian12-podman", f"debian12-podman-{USER}"):
        assert run("shell", "-f", far["lab"], short, "sh", "-c", 'id -un; echo "$HOME"').stdout.split() == [
            "student", "/home/student"], short
    assert run("shell", "-f", far["lab"], "--root", "debian12-podman", "id", "-un").stdout.split() == ["root"]
    assert run("shell", "-f", far["lab"], "--root", f"debian12-podman-{USER}", "id", "-un").stdout.split() == ["root"]


def test_second_up_changes_nothing_and_plan_sees_it_all(far):
    again = run("up", "-f", far["lab"], "--no-facts")
    assert recap(again.stdout)["changed"] == 0, again.stdout
    up_plan = json.loads(run("up", "-f", far["lab"], "--plan", "--json").stdout)
    assert up_plan["changes"] == [], up_plan
    down_plan = json.loads(run("down", "-f", far["lab"], "--plan", "--json").stdout)
    assert {(c["name"], c["server"]) for c in down_plan["changes"]} >= {
        (DOCKER, SERVER), (PODMAN, SERVER), (ROOTLESS, SERVER)}, down_plan


def test_down_leaves_nothing_on_the_server(far):
    down = run("down", "-f", far["lab"])
    far["down"] = True  # it exited 0: nothing for the fixture's own `down` to do
    # the networks counted are the server's: Docker's, root's Podman's and the user's Podman's
    assert "removed 3 containers, 3 networks" in down.stdout + down.stderr, down.stdout + down.stderr
    for user in ("", USER):
        assert podman("ps", "-a", "--filter", f"label=labkit.lab={LAB}", "--format", "{{.Names}}", user=user) == []
        assert podman("network", "ls", "--filter", f"label=labkit.lab={LAB}", "--format", "{{.Name}}", user=user) == []
    assert docker("ps", "-a", "--filter", f"label=labkit.lab={LAB}", "--format", "{{.Names}}").split() == []
    assert ssh_masters(PORT) == []
    print(f"test_77: prepare + up + checks + down in {time.monotonic() - far['t0']:.1f} s")
