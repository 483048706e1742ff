"""Item 6 of issue 26 (the SSH connection sharing and the VM networks' lock): fixed, guessable
paths another local user could take first.

- The SSH ControlPath of a remote lab server was `/tmp/labkit-ssh-<sha1>` (and its `.on`
  marker): anyone could bind a socket there first and receive labkit's commands (ssh's
  ControlMaster=auto connects to whatever listens at the path). It now lives in /run/labkit
  (0700, root's): another user can make nothing there.
- The VM networks' lock was `/run/lock/labkit-vm-networks.lock`: any user could hold it and
  block every `labkit up` and `down` of labs with VMs. The real labkit_vm_network module now
  locks in /run/labkit and finishes while another user holds the old file; a lock folder that
  is a symlink is refused, naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from labkit import paths
from labkit.servers.base import Server
from tests.labs import local_user

pytestmark = pytest.mark.integration

ATTACKER = "lkpathatk"


@pytest.fixture(scope="module")
def attacker():
    """An ordinary local user of the lab server, removed at the end."""
    with local_user(ATTACKER) as name:
        yield name


def as_attacker(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", ATTACKER, "--", sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=30, cwd="/")


BIND = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); print('bound')"


def test_ssh_control_path_is_out_of_other_users_reach(attacker):
    server = Server("far", False, {"ansible_host": "192.0.2.7"})
    cp = Path(server.control_path("demo"))
    # where the old labkit put it: the attacker can take that path first
    tag = hashlib.sha1(f"{paths.lab_dir('demo')}\0far".encode()).hexdigest()[:16]
    old = f"/tmp/labkit-ssh-{tag}"
    try:
        taken = subprocess.run(["runuser", "-u", ATTACKER, "--", sys.executable, "-c", BIND.replace("sys.argv[1]", repr(old))],
                               capture_output=True, text=True, timeout=30, cwd="/")
        assert taken.stdout.strip() == "bound", taken.stderr  # the old path was anyone's
    finally:
        Path(old).unlink(missing_ok=True)
    assert not str(cp).startswith("/tmp/")
    st = os.lstat(cp.parent)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
    for target in (str(cp), f"{cp}.on"):
        p = as_attacker(BIND.replace("sys.argv[1]", repr(target)))
        assert p.returncode != 0 and "Permission denied" in p.stderr, p.stdout + p.stderr
    assert len(str(cp).encode()) < 100  # a UNIX socket path's limit, with ssh's temporary suffix


def vm_network(args: dict, timeout: int = 60) -> tuple[int, str]:
    """The real labkit_vm_network module through Ansible here: (rc, output); 124 when it hung."""
    cmd = [str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local", "-M",
           str(paths.roles_dir() / "lab_network" / "library"), "-m", "labkit_vm_network", "-a", json.dumps(args)]
    env = {**os.environ, "ANSIBLE_LIBRARY": str(paths.roles_dir() / "lab_network" / "library"),
           "ANSIBLE_MODULE_UTILS": str(paths.roles_dir() / "lab_network" / "module_utils")}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, env=env)
    try:
        return p.returncode if p.wait(timeout) is not None else 0, p.stdout.read() if p.stdout else ""
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        return 124, ""


def test_vm_network_lock_held_by_another_user_blocks_nothing(attacker, tmp_path):
    old = Path("/run/lock/labkit-vm-networks.lock")
    old.unlink(missing_ok=True)  # an old labkit's (root's): obsolete now; the attacker makes it first
    holder = subprocess.Popen(
        ["runuser", "-u", ATTACKER, "--", sys.executable, "-c",
         f"import fcntl,os,time; fd=os.open({str(old)!r}, os.O_RDWR|os.O_CREAT, 0o644); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(300)"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout and holder.stdout.readline().strip() == "held"
        args = {"lab": "secpath", "student": "nobody", "state": "absent", "networks": []}
        rc, out = vm_network(args)
        assert rc == 0, out  # finished: the old lock file is not labkit's any more

        # a lock folder that is a symlink (made by someone else to redirect the lock) is refused
        link = tmp_path / "lockdir"
        link.symlink_to(tmp_path / "elsewhere")
        (tmp_path / "elsewhere").mkdir()
        rc, out = vm_network({**args, "lock_file": str(link / "vm-networks.lock")})
        assert rc != 0 and "not private" in out and str(link) in out, out
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        old.unlink(missing_ok=True)
