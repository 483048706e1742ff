"""Item 1 of issue 26: nobody who reaches a VM's port 22 logs in with a password.

The box once had `vagrant`/`vagrant` (chpasswd) with passwordless sudo, and Debian's sshd takes
passwords: anyone on the lab server's network was root in every VM. The attack here is the real
one: OpenSSH's client, from the lab server, password `vagrant` (and an empty one, and root's),
then `sudo -n id -un`. It must not get a shell; the key labkit gave the VM still must.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.labs import run, vm_as_lab_server

pytestmark = [pytest.mark.integration, pytest.mark.vm]


def password_ssh(host: str, port: int, user: str, password: str) -> subprocess.CompletedProcess:
    """OpenSSH with a password only (SSH_ASKPASS answers it), no key, no agent."""
    with tempfile.TemporaryDirectory() as d:
        askpass = Path(d) / "askpass"
        askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
        askpass.chmod(0o700)
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
        return subprocess.run(
            ["ssh", "-v", "-p", str(port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password,keyboard-interactive",
             "-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=30", "-o", "IdentityAgent=none",
             f"{user}@{host}", "sudo -n id -un"],
            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)


def test_no_password_login_into_the_vm(default_lab):
    vm = vm_as_lab_server()["server-2"]
    host, port = vm["ansible_host"], vm["ansible_port"]
    for user, password in (("vagrant", "vagrant"), ("vagrant", ""), ("root", "vagrant"), ("root", "root")):
        p = password_ssh(host, port, user, password)
        assert p.returncode == 255 and "root" not in p.stdout, (user, password, p.stdout, p.stderr)
        # the server offers keys only: no password prompt was ever shown
        assert "Authentications that can continue: publickey\n" in p.stderr, p.stderr
        assert "Permission denied (publickey)" in p.stderr, p.stderr

    # labkit's own key still works (so the refusals above are about passwords, not a dead VM)
    ok = run("shell", "vm", "--root", "--", "id", "-un")
    assert ok.stdout.strip() == "root", ok.stdout + ok.stderr
    # and the account's password is locked, not merely unused by sshd
    shadow = run("shell", "vm", "--root", "--", "getent", "shadow", "vagrant", "root").stdout
    for line in shadow.splitlines():
        assert line.split(":")[1].startswith(("!", "*")), line
