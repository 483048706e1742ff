"""Item 4 of issue 26: a lab server must be the one `labkit prepare` met, and what it says
about its VMs is only data.

- Host keys: this machine's own sshd on a loopback port stands for a remote lab server, with an
  inventory that leaves host key checking to labkit (no StrictHostKeyChecking of its own).
  Before `prepare` the server is refused (key unknown); `prepare` pins it (and prints its
  fingerprint); then a man in the middle (the same address answering with another key) is
  refused by every command, and labkit did nothing there.
- ssh_config: the lab_vm role's real tasks, run by ansible-playbook with what a lying server
  could return as its VM's SSH settings (`ProxyCommand` smuggled into the address or the key
  path): refused, and no ssh_config written, while honest values still are.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.labs import loopback_server, run, wait_port, write_inventory

ROOT = Path(__file__).resolve().parents[2]
PORT, SERVER = 2231, "hostkey-server"
ENTRY = f"[127.0.0.1]:{PORT}"


def _forget() -> None:
    subprocess.run(["ssh-keygen", "-R", ENTRY], capture_output=True)


@pytest.mark.integration
def test_server_host_key_is_pinned_at_prepare_and_checked_after(tmp_path):
    _forget()
    lab = tmp_path / "lab.yml"
    lab.write_text(yaml.safe_dump({"name": "sechk", "students": 1, "containers": ["busybox"], "vm": {"enabled": False}}))
    try:
        with loopback_server(tmp_path, PORT, SERVER) as server:
            hv = json.loads(server["inv"].read_text())["all"]["children"]["lab_servers"]["hosts"][SERVER]
            del hv["ansible_ssh_common_args"]  # no opt-out: labkit's own checking
            inv = tmp_path / "checked.yml"
            write_inventory(inv, {SERVER: hv})

            p = run("up", "-f", str(lab), "-i", str(inv), "--plan", check=False)
            assert p.returncode != 0 and "host key is not known" in p.stderr, p.stdout + p.stderr

            p = run("prepare", "-i", str(inv), check=False)
            assert p.returncode == 0, p.stdout + p.stderr
            assert "host key pinned at first contact" in p.stdout + p.stderr and "SHA256:" in p.stdout + p.stderr
            assert run("up", "-f", str(lab), "-i", str(inv), "--plan", check=False).returncode == 0

            # the man in the middle: the same address and port, another host key
            (tmp_path / "hostkey").unlink()
            (tmp_path / "hostkey.pub").unlink()
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")], check=True)
            server["sshd"].terminate()
            server["sshd"].wait(10)  # its port is free
            mitm = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(tmp_path / "sshd_config")],
                                    stderr=open(tmp_path / "mitm.log", "w"))
            try:
                wait_port(PORT, mitm)
                for cmd in (["up", "-f", str(lab), "-i", str(inv), "--plan"], ["prepare", "-i", str(inv)]):
                    p = run(*cmd, check=False)
                    assert p.returncode != 0, (cmd, p.stdout, p.stderr)
                    assert "another host key than the one pinned" in p.stderr, (cmd, p.stdout, p.stderr)
                    assert f"ssh-keygen -R '{ENTRY}'" in p.stderr
                # nothing reached the impostor beyond the key exchange: no session was ever opened
                assert "session opened" not in (tmp_path / "mitm.log").read_text()
                assert "Accepted publickey" not in (tmp_path / "mitm.log").read_text()
            finally:
                mitm.terminate()
                mitm.wait(10)
    finally:
        _forget()


PLAY = """\
# _lab_vm_up: what labkit_vagrant returned on the lab server (here: given as extra vars)
- hosts: localhost
  gather_facts: false
  vars:
    lab_vm_state: present
    _lab_vm_domain: labkit-sec-s01-vm
  tasks:
    - ansible.builtin.import_role:
        name: lab_vm
        tasks_from: check_ssh.yml
    - ansible.builtin.template:
        src: {template}
        dest: {dest}
        mode: "0600"
"""
HONEST = {"ssh_host": "192.168.121.5", "ssh_port": 22, "ssh_user": "vagrant",
          "ssh_identity_file": "/var/lib/labkit/labs/x/s01/.vagrant/machines/vm/libvirt/private_key"}


@pytest.mark.parametrize("lie", [
    {"ssh_host": "192.168.121.5\n  ProxyCommand touch /tmp/labkit-pwned"},
    {"ssh_identity_file": "/k\n  ProxyCommand touch /tmp/labkit-pwned"},
    {"ssh_user": "vagrant\n  ProxyCommand touch /tmp/labkit-pwned"},
    {"ssh_port": "22\n  LocalCommand touch /tmp/labkit-pwned"},
    {"ssh_host": "192.168.121.5\n"},
    {"ssh_host": "-oProxyCommand=touch"},
])
def test_a_lying_servers_vm_settings_are_refused(tmp_path, lie):
    dest = tmp_path / "ssh_config"
    pb = tmp_path / "pb.yml"
    pb.write_text(PLAY.format(template=ROOT / "roles/lab_vm/templates/ssh_config.j2", dest=dest))

    def play(told: dict) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(pb),
             "-e", json.dumps({"_lab_vm_up": told, "ansible_python_interpreter": sys.executable})],
            capture_output=True, text=True, env={"ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "PATH": "/usr/bin:/bin",
                                                 "ANSIBLE_NOCOLOR": "1", "HOME": str(tmp_path)}, timeout=120)

    p = play({**HONEST, **lie})
    assert p.returncode != 0 and "nothing was written" in p.stdout, p.stdout + p.stderr
    assert not dest.exists()

    p = play(HONEST)  # the same play writes honest settings: the refusal above is the check's
    assert p.returncode == 0, p.stdout + p.stderr
    g = subprocess.run(["ssh", "-G", "-F", str(dest), "labkit-sec-s01-vm"], capture_output=True, text=True).stdout
    options = {ln.split(" ", 1)[0] for ln in g.splitlines()}
    assert "hostname 192.168.121.5" in g.splitlines() and not {"proxycommand", "localcommand"} & options, g
