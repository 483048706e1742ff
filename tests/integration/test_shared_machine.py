"""A classroom machine shared by students without root (issue 30), on the real engines.

Two ordinary accounts are made here (no sudo, in neither the docker nor the libvirt group); the
instructor's one-time preparation runs as root (`labkit prepare --classroom`); then each
account, as itself, runs `labkit doctor`, `up`, `verify`, `facts`, `shell`, `report` and
`down` on its own lab file: the same lab name, `cls30`, in both, so every name (container,
network, VM, state folder) would collide if anything were shared. Their containers are rootless
Podman in each account's own store; their images come from the shared, read-only copy the
preparation wrote (no Docker on their path at all). Their VMs boot at the same time, each in its
account's own libvirt session instance with user-mode networking, from the box the preparation
published read-only (each VM's disk an overlay of the account's own); K1..K12 hold for both.

Proven with real clients: each account's `podman`, `virsh` (its session instance) and
`labkit status` list its own hosts only; a marker written in one account's container and VM is
not what the other's `labkit shell` reads; one account's `podman` cannot read the other's
store, nor its labkit state folder, nor its VM's disk; `ssh` to the other's VM (its forwarded
loopback port) is refused with the account's own VM key and with Vagrant's insecure key; the
first account's `down` leaves the second's container and VM running; the first account's lab on
Docker fails with the permission error that names the account, the socket's group and the
instructor's `usermod`, never a daemon to start; libvirt's system instance, when an account asks
for it, refuses it with the same kind of message. At the end nothing of either account is left
(containers, networks, VMs, processes), and the accounts are removed.

The same lab file as root, at the same time: root's `up` (rootful Podman, the VM in libvirt's
system instance on a network of its own), `verify` and `down` pass beside the accounts', and
neither side's `down` touches the other's hosts.
"""
import contextlib
import json
import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.labs import down_leftovers

from .conftest import run

pytestmark = [pytest.mark.integration]
ACCOUNTS = ("lk30a", "lk30b")
LAB = "cls30"
VENV_BIN = str(Path(sys.executable).parent)


def as_account(user: str, *args: str, check: bool = True, timeout: int = 900, env_extra: tuple[str, ...] = (),
               ) -> subprocess.CompletedProcess:
    """Run a command as ``user`` the way a student's login shell would: its HOME, PATH with
    labkit, no XDG_RUNTIME_DIR (no systemd-logind here), nothing of root's environment."""
    home = pwd.getpwnam(user).pw_dir
    # PYTHONPATH, when the run has one: the accounts run the same labkit as the test
    keep = [f"PYTHONPATH={os.environ['PYTHONPATH']}"] if os.environ.get("PYTHONPATH") else []
    env = ["env", "-i", *keep, f"HOME={home}", f"USER={user}", f"LOGNAME={user}", "LANG=C.UTF-8", "COLUMNS=200",
           f"PATH={VENV_BIN}:/usr/local/bin:/usr/bin:/bin", *env_extra]
    p = subprocess.run(["runuser", "-u", user, "--", *env, *args], capture_output=True, text=True, cwd=home,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError(f"as {user}: {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def doctor_checks(text: str) -> list[dict]:
    data = json.loads(text)
    return data["checks"] if isinstance(data, dict) else data


def processes_of(uid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid == uid and (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def remove_account(user: str) -> None:
    """The account with everything of it: its processes (rootless Podman's pause process,
    conmon, slirp4netns: all started by this test, as this account), found by uid and ended
    by pid, then the account with its home (store, state, runtime folder)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_of(uid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while processes_of(uid) and time.monotonic() < deadline:
            time.sleep(0.2)
    subprocess.run(["usermod", "--del-subuids", "1-4294967294", "--del-subgids", "1-4294967294", user],
                   capture_output=True)  # its id ranges (the preparation gave them)
    subprocess.run(["userdel", "-r", user], capture_output=True)


LAB_FILE = textwrap.dedent(f"""\
    name: {LAB}
    students: [s01]
    engine: podman
    containers: [debian:12]
    vm: {{enabled: true}}
    provision: {{packages: []}}
    """)
VM = f"labkit-{LAB}-s01-vm"


def session_virsh(user: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """virsh on the account's own session instance, the one labkit uses (its runtime folder)."""
    home = pwd.getpwnam(user).pw_dir
    return as_account(user, "virsh", "-q", "-c", "qemu:///session", *args, check=check,
                      env_extra=(f"XDG_RUNTIME_DIR={home}/.cache/labkit/xdg-run",))


def vm_dir(user: str) -> Path:
    return Path(pwd.getpwnam(user).pw_dir) / f".local/share/labkit/labs/{LAB}/vagrant/s01"


@pytest.fixture(scope="module")
def accounts(tmp_path_factory):
    """Two ordinary accounts (made here, removed at the end with all of theirs), each with its
    lab file in its home; the instructor's preparation run once for both, as root."""
    for u in ACCOUNTS:
        remove_account(u)
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", u], check=True)
        home = Path(pwd.getpwnam(u).pw_dir)
        for name, text in (("lab.yml", LAB_FILE), ("docker.yml", LAB_FILE.replace("engine: podman\n", "")
                                                                   .replace("vm: {enabled: true}", "vm: {enabled: false}")
                                                                   .replace(f"name: {LAB}", f"name: {LAB}d")),
                           ("vm.yml", f"name: {LAB}v\nstudents: [s01]\ncontainers: []\nvm: {{enabled: true}}\n")):
            (home / name).write_text(text)
            os.chown(home / name, pwd.getpwnam(u).pw_uid, pwd.getpwnam(u).pw_gid)
    try:
        lab = Path(pwd.getpwnam(ACCOUNTS[0]).pw_dir) / "lab.yml"
        t0 = time.monotonic()
        prep = run("prepare", "--classroom", *[a for u in ACCOUNTS for a in ("--account", u)], "-f", str(lab))
        root_lab = tmp_path_factory.mktemp("cls30-root") / "lab.yml"  # the same lab file, root's
        root_lab.write_text(LAB_FILE)
        yield {"prepare": prep, "prepare_seconds": time.monotonic() - t0, "root_lab": root_lab}
    finally:
        down_leftovers("--lab", LAB)  # root's lab, when a test failed before its down
        for u in ACCOUNTS:  # after a failure: whatever is still up (the last test removed them otherwise)
            if u in {p.pw_name for p in pwd.getpwall()}:
                as_account(u, "labkit", "down", "-f", "lab.yml", check=False, timeout=300)
                remove_account(u)


def test_preparation_gives_each_account_its_ids_and_shares_the_images(accounts):
    out = accounts["prepare"].stdout
    assert "classroom machine prepared for 2 account(s)" in out, out
    ranges = {}
    for u in ACCOUNTS:
        [line] = [ln for ln in Path("/etc/subuid").read_text().splitlines() if ln.startswith(f"{u}:")]
        _, first, count = line.split(":")
        ranges[u] = range(int(first), int(first) + int(count))
        assert int(count) >= 65536
    a, b = ranges.values()
    assert not set(a) & set(b), ranges  # no uid of one account's containers is the other's
    shared = Path("/var/lib/labkit/images")
    for f in ("labkit_debian_12.tar", "labkit_debian_12.id"):
        st = (shared / f).stat()
        assert st.st_uid == 0 and oct(st.st_mode & 0o777) == "0o644", (f, oct(st.st_mode))
    assert oct(shared.stat().st_mode & 0o777) == "0o755"
    assert (shared / "labkit_busybox_1_35.tar").is_file()  # K11's image, carried into the VMs
    box = Path("/var/lib/labkit/vagrant-boxes/labkit-VAGRANTSLASH-debian12")
    [version] = box.glob("*/libvirt")
    for f in ("box.img", "metadata.json", "Vagrantfile"):
        st = (version / f).stat()
        assert st.st_uid == 0 and oct(st.st_mode & 0o777) == "0o644", (f, oct(st.st_mode))
    for d in (box.parent, box, version.parent, version):
        assert d.stat().st_uid == 0 and oct(d.stat().st_mode & 0o777) == "0o755", d
    # a second run changes nothing
    again = run("prepare", "--classroom", *[a for u in ACCOUNTS for a in ("--account", u)], "-f",
                str(Path(pwd.getpwnam(ACCOUNTS[0]).pw_dir) / "lab.yml"))
    assert "every account already had its own range" in again.stdout and "(all there)" in again.stdout
    assert f"shared box: {version} (there)" in again.stdout, again.stdout


def test_permission_errors_name_the_account_and_who_grants_it(accounts):
    u = ACCOUNTS[0]
    groups = subprocess.run(["id", "-nG", u], capture_output=True, text=True, check=True).stdout.split()
    assert not {"docker", "libvirt", "sudo", "root"} & set(groups), groups
    p = as_account(u, "labkit", "up", "-f", "docker.yml", check=False)
    assert p.returncode == 3, p.stdout + p.stderr
    assert f"this account ({u}) may not use the Docker engine: /var/run/docker.sock" in p.stderr, p.stderr
    assert f"`usermod -aG docker {u}`" in p.stderr and "root in all but name" in p.stderr
    assert "dockerd" not in p.stderr and "setup.sh" not in p.stderr, p.stderr
    # an account that asks for libvirt's system instance (the default is its own session instance)
    d = as_account(u, "labkit", "doctor", "-f", "vm.yml", "--json", check=False,
                   env_extra=("LABKIT_LIBVIRT_URI=qemu:///system",))
    assert d.returncode == 1
    [lv] = [c for c in doctor_checks(d.stdout) if c["name"] == "libvirt"]
    assert lv["status"] == "fail" and lv["detail"].startswith(f"this account ({u}) may not use libvirt's system"), lv
    assert f"`usermod -aG libvirt {u}`" in lv["fix"] and "libvirtd -d" not in lv["fix"], lv
    # the rootless Podman lab needs no Docker: doctor says so and blocks nothing
    ok = as_account(u, "labkit", "doctor", "-f", "lab.yml", "--json")
    [dk] = [c for c in doctor_checks(ok.stdout) if c["name"] == "docker engine"]
    assert dk["status"] == "skipped" and "not needed: this lab's containers are rootless Podman" in dk["detail"], dk
    [lv] = [c for c in doctor_checks(ok.stdout) if c["name"] == "libvirt"]
    assert lv["status"] == "ok", lv  # its own session instance answers, with no preparation of libvirt


@pytest.fixture(scope="module")
def both_up(accounts):
    """Both accounts' `labkit up` and root's of the same lab file, at the same time (their VMs
    boot side by side)."""
    def one(u: str) -> tuple[float, subprocess.CompletedProcess]:
        t0 = time.monotonic()
        # no facts table: the facts are read (and checked) by the test, once
        p = (run("up", "-f", str(accounts["root_lab"]), "--no-facts", check=False) if u == "root"
             else as_account(u, "labkit", "up", "-f", "lab.yml", "--no-facts", check=False))
        return time.monotonic() - t0, p

    with ThreadPoolExecutor(len(ACCOUNTS) + 1) as pool:
        done = dict(zip((*ACCOUNTS, "root"), pool.map(one, (*ACCOUNTS, "root")), strict=True))
    for u, (secs, p) in done.items():
        assert p.returncode == 0 and "failures=0" in p.stdout, (u, p.stdout, p.stderr)
        print(f"{u}: labkit up (a container and the VM) in {secs:.0f}s")
    # the disk an account's VM costs: its overlays (the box is shared, read-only)
    for u in ACCOUNTS:
        images = Path(pwd.getpwnam(u).pw_dir) / ".local/share/libvirt/images"
        sizes = {f.name: f.stat().st_blocks * 512 for f in images.iterdir()}
        print(f"{u}: VM disks in its session pool: "
              + ", ".join(f"{n} {b / 2**20:.0f} MiB" for n, b in sorted(sizes.items())))
    return {u: secs for u, (secs, _) in done.items()}


def test_each_account_brings_up_and_verifies_its_own_lab(both_up):
    def checks(u: str) -> None:
        if u == "root":  # the same lab as root: every fact, K10 and K12 too (root has Docker)
            v = run("verify", "--lab", LAB)
            assert "16 passed, 0 failed" in v.stdout and "n/a" not in v.stdout, v.stdout
            return
        v = as_account(u, "labkit", "verify", "--lab", LAB)
        assert "0 failed" in v.stdout, v.stdout
        assert "K11" in v.stdout and "16 passed" in v.stdout, v.stdout  # every fact, the VM's too
        f = as_account(u, "labkit", "facts", "--lab", LAB)
        uid = pwd.getpwnam(u).pw_uid
        assert f"0->{uid}" in f.stdout, f.stdout  # the container's root is the account, not the machine's
        assert "│ vm " in f.stdout and "qemu" in f.stdout, f.stdout
        # the report without running K1..K12 again: `verify` ran them just before, as the account
        r = as_account(u, "labkit", "report", "--lab", LAB, "-o", "report", "--no-checks")
        assert "report.html" in r.stdout
        again = as_account(u, "labkit", "up", "-f", "lab.yml", "--no-facts")
        assert "changed=0" in again.stdout, again.stdout

    with ThreadPoolExecutor(len(ACCOUNTS) + 1) as pool:  # the two accounts and root at once
        list(pool.map(checks, (*ACCOUNTS, "root")))  # (re-raises the first failure)


def test_neither_account_sees_or_reaches_the_others(both_up):
    a, b = ACCOUNTS
    name = f"labkit-{LAB}-s01-debian12-podman"
    for u in (a, b):
        # each writes its own marker in its container and its VM, through labkit's own shell
        as_account(u, "labkit", "shell", "--lab", LAB, "--root", "debian12-podman", "--", "sh", "-c",
                   f"echo {u} > /owner")
        as_account(u, "labkit", "shell", "--lab", LAB, "vm", "--", "sh", "-c", f"echo {u} > /tmp/owner")
    for u, other in ((a, b), (b, a)):
        ps = as_account(u, "podman", "ps", "-a", "--format", "{{.Names}} {{.Labels}}")
        assert ps.stdout.count(name) == 1, ps.stdout  # its own, by the same name as the other's
        got = as_account(u, "labkit", "shell", "--lab", LAB, "debian12-podman", "--", "cat", "/owner")
        assert got.stdout.strip().splitlines()[-1] == u, got.stdout
        got = as_account(u, "labkit", "shell", "--lab", LAB, "vm", "--", "cat", "/tmp/owner")
        assert got.stdout.strip().splitlines()[-1] == u, got.stdout
        st = json.loads(as_account(u, "labkit", "status", "--lab", LAB, "--json").stdout)
        assert sorted(h["name"] for h in st["hosts"]) == sorted([name, VM]), st
        # its libvirt session instance: its own VM, by the same name as the other's
        assert session_virsh(u, "list", "--all", "--name").stdout.split() == [VM]
        # the other's VM: its disk not readable; its SSH port (on 127.0.0.1) refuses this
        # account's own VM key and Vagrant's published insecure key
        disk = Path(pwd.getpwnam(other).pw_dir) / f".local/share/libvirt/images/{VM}.img"
        assert disk.is_file()
        read = as_account(u, "head", "-c", "512", str(disk), check=False)
        assert read.returncode != 0 and "ermission denied" in read.stderr, read.stderr
        port = (vm_dir(other) / "ssh_port").read_text().strip()
        own_key = vm_dir(u) / "id_ed25519"
        insecure = Path(pwd.getpwnam(u).pw_dir) / ".local/share/labkit/vagrant.d/insecure_private_key"
        for key in (own_key, insecure):
            assert key.is_file(), key
            ssh = as_account(u, "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
                             "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=20",
                             "-i", str(key), "-p", port, "vagrant@127.0.0.1", "cat /tmp/owner", check=False)
            assert ssh.returncode == 255 and "Permission denied (publickey)" in ssh.stderr, (key, ssh.stderr)
            assert other not in ssh.stdout
        # the other's store and labkit state: not readable
        other_home = pwd.getpwnam(other).pw_dir
        store = as_account(u, "podman", "--root", f"{other_home}/.local/share/containers/storage", "ps", "-a",
                           check=False)
        assert store.returncode != 0 and name not in store.stdout, store.stdout
        state = as_account(u, "ls", f"{other_home}/.local/share/labkit/labs", check=False)
        assert state.returncode != 0 and "ermission denied" in state.stderr, state.stdout + state.stderr


def test_one_accounts_down_leaves_the_others_lab_and_nothing_of_its_own(both_up):
    a, b = ACCOUNTS
    d = as_account(a, "labkit", "down", "--lab", LAB)
    assert "removed 1 container" in d.stdout and "1 VM" in d.stdout, d.stdout
    assert as_account(a, "podman", "ps", "-a", "-q").stdout.strip() == ""
    assert "labkit" not in as_account(a, "podman", "network", "ls", "--format", "{{.Name}}").stdout
    assert session_virsh(a, "list", "--all", "--name").stdout.split() == []
    assert not (Path(pwd.getpwnam(a).pw_dir) / f".local/share/libvirt/images/{VM}.img").exists()
    st = json.loads(as_account(b, "labkit", "status", "--lab", LAB, "--json").stdout)
    assert sorted((h["name"], h["state"]) for h in st["hosts"]) == [
        (f"labkit-{LAB}-s01-debian12-podman", "running"), (VM, "running")], st
    assert as_account(b, "labkit", "shell", "--lab", LAB, "vm", "--", "cat", "/tmp/owner").stdout.split()[-1] == b
    # root's lab of the same name: untouched by A's down; its down leaves B's lab running
    st = json.loads(run("status", "--lab", LAB, "--json").stdout)
    assert sorted((h["name"], h["state"]) for h in st["hosts"]) == [
        (f"labkit-{LAB}-s01-debian12-podman", "running"), (VM, "running")], st
    d = run("down", "--lab", LAB)
    assert "removed 1 container" in d.stdout and "1 VM" in d.stdout, d.stdout
    assert VM not in subprocess.run(["virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name"],
                                    capture_output=True, text=True).stdout
    assert session_virsh(b, "list", "--all", "--name").stdout.split() == [VM]
    as_account(b, "labkit", "down", "--lab", LAB)
    assert as_account(b, "podman", "ps", "-a", "-q").stdout.strip() == ""
    assert session_virsh(b, "list", "--all", "--name").stdout.split() == []


def comms(pids) -> set[str]:
    """The command names of the processes ``pids`` still running."""
    names = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            names.add(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


def test_nothing_of_either_account_is_left(accounts, both_up):
    # (after the module's tests; this one runs last) the accounts' processes end when removed
    for u in ACCOUNTS:
        assert as_account(u, "podman", "ps", "-a", "-q").stdout.strip() == ""
    uids = [pwd.getpwnam(u).pw_uid for u in ACCOUNTS]
    for u, uid in zip(ACCOUNTS, uids, strict=True):
        # after `down`: no container process, conmon, slirp4netns or QEMU of the account; only
        # rootless Podman's pause process (it keeps the account's user namespace) may stay until
        # logout, and the session instance's libvirtd and virtlogd, which end by themselves two
        # minutes after their last client (--timeout=120)
        allowed, deadline = {"podman pause", "catatonit", "libvirtd", "virtlogd"}, time.monotonic() + 30
        while not (left := comms(processes_of(uid))) <= allowed and time.monotonic() < deadline:
            time.sleep(0.5)  # what `down` stopped may still be exiting
        assert left <= allowed, (u, left)
    for u in ACCOUNTS:
        remove_account(u)
    for u, uid in zip(ACCOUNTS, uids, strict=True):
        assert processes_of(uid) == [], u
        with pytest.raises(KeyError):
            pwd.getpwnam(u)
        assert not Path(f"/home/{u}").exists()
