"""Shared, session-scoped labs on the real engines: the default lab (containers + VM) is
brought up once per run, and every integration test reads it."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from tests.conftest import labkit_cmd

# The session's shared lab is the default one: commands without -f act on it, whatever other
# lab a test has up at the time (lab selection itself is tested in test_22_cli with this unset).
os.environ.setdefault("LABKIT_LAB", "demo")


def run(*args, check=True, timeout=1800, env=None):
    """Run the real `labkit` console script; return the CompletedProcess."""
    p = subprocess.run(labkit_cmd() + list(args), capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"labkit {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def docker(*args) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def virsh(*args) -> list[str]:
    out = subprocess.run(["virsh", "-q", "-c", "qemu:///system", *args], capture_output=True, text=True,
                         check=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.strip()]


def recap(stdout: str) -> dict:
    m = re.search(r"^recap: (.*?)\s+\(", stdout, re.M)
    assert m, stdout
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def interrupt_up_during_vm_creation(deadline: float = 300) -> dict:
    """Start `labkit up`, press Ctrl-C (SIGINT to its process group) once the VM's domain
    exists, and return what the interrupted run printed and how it exited."""
    p = subprocess.Popen(labkit_cmd() + ["up"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    t0 = time.monotonic()
    seen = False
    while time.monotonic() - t0 < deadline and p.poll() is None:
        if "labkit-demo-s01-vm" in virsh("list", "--all", "--name"):
            seen = True
            time.sleep(3)  # mid-boot
            break
        time.sleep(0.5)
    os.killpg(p.pid, signal.SIGINT)
    try:
        out, _ = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
    return {"domain_seen": seen, "rc": p.returncode, "output": out}


@pytest.fixture(scope="session")
def default_lab():
    """The README's main job on the built-in default lab, brought up once for the whole run.

    The first `labkit up` is interrupted with Ctrl-C while the VM is being created; the
    second must converge from there. (One VM boot and a half for the whole run.)
    """
    run("images", "build", "debian:11", "debian:12", "debian:13", "busybox")
    run("box", "build")
    run("down", check=False)
    interrupted = interrupt_up_during_vm_creation()
    t0 = time.monotonic()
    first = run("up")
    info = {"first": first, "first_seconds": time.monotonic() - t0, "interrupted": interrupted}
    yield info
    run("down", check=False)


def vm_as_lab_server(name: str = "server-2") -> dict:
    """Inventory variables that make the default lab's VM a lab server (its ssh settings)."""
    from labkit import api, vms

    cfg = vms.read_ssh_config(api.ssh_config("demo"))
    return {name: {"ansible_host": cfg["HostName"], "ansible_port": int(cfg.get("Port", 22)),
                   "ansible_user": cfg["User"], "ansible_ssh_private_key_file": cfg["IdentityFile"],
                   "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": True,
                   "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}}


def write_inventory(path, servers: dict) -> None:
    path.write_text(json.dumps({"all": {"children": {"lab_servers": {"hosts": servers}}}}))


@pytest.fixture(scope="session")
def default_facts(default_lab):
    return json.loads(run("facts", "--json").stdout)
