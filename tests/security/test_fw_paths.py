"""Issue 26, item 6 (the firewall's lock and the Podman image hand-off): fixed, guessable paths
another local user could take first.

Another local user of the lab server (made here) prepares the old paths before labkit runs:

- it holds `/run/lock/labkit-firewall.lock` (any user may create files in /run/lock): the
  old firewall module waited on that lock for ever, so every `labkit up` on the server hung;
  now the lock is in `/run/labkit` (0700, root's), and a lock folder the user could have
  made (theirs, or a symlink) is refused, naming it;
- it owns `/var/tmp/labkit-podman-images` and, whenever an image tar appears there, swaps it
  for a symlink to a root-only file standing for /etc/shadow: the old role then made that
  file world-readable (its `mode: 0644` task follows symlinks) and would have loaded
  whatever tar the user left there into root's Podman; now the tar goes through a folder of
  a fresh random name that only root can enter.
"""
from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from labkit import paths
from tests.labs import down_leftovers, local_user, podman_user, run

pytestmark = pytest.mark.integration

ATTACKER = "lkfwatk"
OLD_LOCK = "/run/lock/labkit-firewall.lock"
OLD_IMAGES = "/var/tmp/labkit-podman-images"


@pytest.fixture(scope="module")
def attacker():
    """An ordinary local user of the lab server, removed at the end."""
    with local_user(ATTACKER) as name:
        yield name


def as_user(user: str, *argv: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(["runuser", "-u", user, "--", *argv], start_new_session=True, **kw)


def firewall(args: dict, timeout: int = 60) -> tuple[int, dict]:
    """The real labkit_firewall module, through Ansible on this machine: (rc, its result);
    rc 124 when it did not finish within ``timeout`` seconds (then it is ended)."""
    cmd = [str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-M",
           str(paths.roles_dir() / "lab_firewall" / "library"), "-m", "labkit_firewall", "-a", json.dumps(args)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env={**os.environ, "ANSIBLE_CONFIG": str(paths.roles_dir().parent / "ansible.cfg")})
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return 124, {}
    body = out[out.find("=> {") + 3:] if "=> {" in out else "{}"
    return p.returncode, json.loads(body)


STUDENT = {"student": "a", "docker_bridge": "br-fwlock00000"}  # rules name a bridge; it need not exist


def test_a_lock_held_by_another_user_blocks_nothing(attacker):
    """The other user creates and holds the old lock file: the module neither waits for it nor
    uses it; its rules are made and removed as usual."""
    Path(OLD_LOCK).unlink(missing_ok=True)
    holder = as_user(attacker, "flock", OLD_LOCK, "sleep", "300")
    try:
        deadline = time.monotonic() + 10
        while not Path(OLD_LOCK).exists():
            assert time.monotonic() < deadline, "the other user could not create the old lock"
            time.sleep(0.1)
        assert Path(OLD_LOCK).stat().st_uid == pwd.getpwnam(attacker).pw_uid
        t0 = time.monotonic()
        rc, res = firewall({"lab": "fwlock", "students": [STUDENT], "uplinks": ["lo"]})
        took = time.monotonic() - t0
        assert rc == 0, f"the firewall module did not finish (rc {rc}) while {attacker} held {OLD_LOCK}"
        assert res["changed"] and any("lab=fwlock student=a" in a for a in res["actions"])
        assert took < 30, took
        rc, res = firewall({"lab": "fwlock", "state": "absent"})
        assert rc == 0 and res["changed"]
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        Path(OLD_LOCK).unlink(missing_ok=True)
        firewall({"lab": "fwlock", "state": "absent"})
    own = Path("/run/labkit")
    st = own.lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) & 0o022 == 0
    # /run is root's: the other user cannot make labkit's folder first
    p = subprocess.run(["runuser", "-u", attacker, "--", "mkdir", "/run/labkit-x"], capture_output=True, text=True)
    assert p.returncode != 0 and "Permission denied" in p.stderr


def test_a_lock_folder_another_user_could_have_made_is_refused(attacker, tmp_path):
    """A lock folder of the other user's, or a symlink, fails the module naming it; nothing changes."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, pwd.getpwnam(attacker).pw_uid, -1)
    link = tmp_path / "link"
    link.symlink_to(theirs)
    try:
        for folder, why in ((theirs, "is owned by uid"), (link, "is a symlink")):
            rc, res = firewall({"lab": "fwlock", "students": [STUDENT], "lock_file": f"{folder}/firewall.lock"})
            assert rc != 0 and why in res.get("msg", ""), res
            assert str(folder) in res["msg"] and "remove" in res.get("hint", "")
            assert not (theirs / "firewall.lock").exists()
        save = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
        assert "lab=fwlock" not in save
    finally:
        firewall({"lab": "fwlock", "state": "absent"})


SWAPPER = textwrap.dedent(r"""
    import os, sys, time
    d, standin, log = sys.argv[1:4]
    def note(s):
        with open(log, "a") as f:
            f.write(s + "\n")
    end = time.time() + 600
    while time.time() < end:
        for n in os.listdir(d):
            p = os.path.join(d, n)
            if n.endswith(".tar") and not os.path.islink(p):
                try:
                    os.rename(p, p + ".stolen")
                    os.symlink(standin, p)
                    note("swapped " + n)
                except OSError as e:
                    note("failed %s: %s" % (n, e))
        for n in os.listdir("/var/tmp"):  # labkit's private folders: can the user get in?
            if n.startswith("labkit-podman-images.") and ("tried " + n) not in open(log).read():
                try:
                    os.listdir(os.path.join("/var/tmp", n))
                    note("entered " + n)
                except OSError as e:
                    note("tried %s: %s" % (n, e.strerror))
        time.sleep(0.005)
    """)


def test_the_image_hand_off_cannot_be_swapped_or_redirected(attacker, tmp_path):
    """A lab with a rootless Podman container whose user's store lacks the image: `labkit up`
    hands the image from Docker's store to Podman's. The other user owns the old hand-off
    folder and swaps any tar in it for a symlink to a root-only file: that file stays as it
    was, nothing ever appears in the user's folder, and labkit's own folder keeps them out."""
    standin = Path("/var/lib/labkit-fwpaths-shadow")  # stands for /etc/shadow: root's, 0600
    standin.write_text("root:$y$secret:19000:0:99999:7:::\n")
    standin.chmod(0o600)
    old = Path(OLD_IMAGES)
    if old.is_symlink() or old.is_file():
        old.unlink()
    elif old.is_dir():
        subprocess.run(["rm", "-rf", str(old)], check=True)
    subprocess.run(["runuser", "-u", attacker, "--", "mkdir", "-m", "0777", str(old)], check=True)
    log = Path(f"/tmp/labkit-fwpaths-{attacker}.log")
    log.unlink(missing_ok=True)
    subprocess.run(["runuser", "-u", attacker, "--", "touch", str(log)], check=True)
    swapper = as_user(attacker, "python3", "-c", SWAPPER, str(old), str(standin), str(log))
    lab = tmp_path / "lab.yml"
    try:
        with podman_user("lkfwpl", 410000) as user:
            lab.write_text(f"name: fwpaths\nstudents: [a]\ncontainers: [{{distro: busybox, engine: podman, "
                           f"user: {user}}}]\nvm: {{enabled: false}}\nprovision: {{packages: []}}\n")
            run("images", "build", "busybox")
            down_leftovers("-f", str(lab))
            try:
                up = run("up", "-f", str(lab), "--no-facts", check=False)
            finally:
                down_leftovers("-f", str(lab))
    finally:
        os.killpg(swapper.pid, signal.SIGKILL)
        swapper.wait()
    notes = log.read_text()
    mode = stat.S_IMODE(standin.stat().st_mode)
    content = standin.read_text()
    left = sorted(os.listdir(old))
    subprocess.run(["rm", "-rf", str(old)], check=True)
    standin.unlink()
    log.unlink()
    assert mode == 0o600, f"labkit made the root-only file {oct(mode)} through the other user's symlink ({notes})"
    assert content.startswith("root:$y$secret"), content
    assert "swapped" not in notes and left == [], (notes, left)
    assert up.returncode == 0, up.stdout + up.stderr
    # labkit's private folder was there, and the other user could not get in
    assert "tried labkit-podman-images." in notes and "entered" not in notes, notes
    assert "Permission denied" in notes
    # labkit removes its folders after (another lab's `up` may be handing off meanwhile: a moment)
    tried = [ln.split()[1].rstrip(":") for ln in notes.splitlines() if ln.startswith("tried ")]
    deadline = time.monotonic() + 60
    while [n for n in tried if os.path.lexists(f"/var/tmp/{n}")]:
        assert time.monotonic() < deadline, [n for n in tried if os.path.lexists(f"/var/tmp/{n}")]
        time.sleep(1)
