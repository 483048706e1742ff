"""The VM half of the default lab, for real (QEMU emulation here, KVM where it works)."""
import json
import subprocess
import time
from pathlib import Path

import pytest

from labkit import paths
from labkit.vm import boxes, vms

from .conftest import recap, run, virsh

pytestmark = [pytest.mark.integration, pytest.mark.vm]
VM = "labkit-demo-s01-vm"
DEBIAN_HOST_KEYS = {"RSA": "3072", "ECDSA": "256", "ED25519": "256"}  # a Debian 12 server's (ssh-keygen -A)


def vm_host_keys(lab: str = "demo", student: str = "s01") -> dict[str, str]:
    """The VM's SSH host keys, ``{type: "BITS SHA256:..."}``, as its sshd serves them to a client
    (ssh-keyscan from the lab server), checked against its files: each public key in /etc/ssh
    beside its private key (root's, 0600). Read with the ssh_config role lab_vm writes at `up`."""
    cfg = paths.lab_dir(lab) / "vagrant" / student / "ssh_config"
    conf = vms.read_ssh_config(cfg)
    files = subprocess.run(
        ["ssh", "-F", str(cfg), f"labkit-{lab}-{student}-vm",
         "sudo sh -c 'cd /etc/ssh && for k in ssh_host_*_key; do "
         "[ \"$(stat -c %a:%U \"$k\")\" = 600:root ] && ssh-keygen -lf \"$k.pub\"; done; true'"],
        capture_output=True, text=True, timeout=120)
    assert files.returncode == 0, files.stderr

    def parse(text: str) -> dict[str, str]:  # "3072 SHA256:... comment (RSA)" -> {"RSA": "3072 SHA256:..."}
        return {ln.rsplit("(", 1)[1].rstrip(")"): " ".join(ln.split()[:2]) for ln in text.splitlines() if ln.strip()}

    scan = subprocess.run(["ssh-keyscan", "-T", "60", "-p", conf.get("Port", "22"), "-t", "rsa,ecdsa,ed25519",
                           conf["HostName"]], capture_output=True, text=True, timeout=120)
    served = subprocess.run(["ssh-keygen", "-lf", "-"], input=scan.stdout, capture_output=True, text=True)
    assert parse(served.stdout) == parse(files.stdout), (served.stdout, files.stdout, scan.stderr)
    return parse(files.stdout)


def test_ctrl_c_during_vm_creation_then_up_converges(default_lab):
    it = default_lab["interrupted"]
    assert it["domain_seen"], it["output"][-2000:]
    assert it["rc"] != 0
    assert "Traceback" not in it["output"]
    r = recap(default_lab["first"].stdout)
    assert r["failures"] == 0 and r["dark"] == 0
    assert VM in virsh("list", "--name")


def test_up_says_which_virtualization_it_uses(default_lab):
    out = default_lab["first"].stdout
    assert "VM: QEMU emulation (TCG)" in out or "VM: KVM" in out


def test_vm_boots_its_own_kernel_containers_share_the_servers(default_facts):
    server = default_facts[0]
    vm = next(f for f in default_facts if f["role"] == "vm")
    assert vm["kernel_release"] != server["kernel_release"] or vm["kernel_version"] != server["kernel_version"]
    assert vm["boot_id"] != server["boot_id"]
    assert vm["same_kernel"] is False and vm["same_boot"] is False
    assert vm["pid1"] == "systemd"
    assert vm["virt"] in ("kvm", "qemu")
    assert vm["own_kernel_image"] == f"/boot/vmlinuz-{vm['kernel_release']}"
    for c in default_facts:
        if c["role"] == "container":
            assert c["same_kernel"] and c["same_boot"], c


def test_vm_is_provisioned_by_student_env(default_lab):
    cfg = Path.home() / ".local/share/labkit/labs/demo/ssh_config"
    run("facts")  # writes the lab's ssh_config
    motd = subprocess.run(["ssh", "-F", str(cfg), VM, "cat /etc/motd; id student"], capture_output=True,
                          text=True, timeout=60, check=True).stdout
    assert "virtual machine" in motd and "its own kernel" in motd and "uid=" in motd


def test_vm_has_the_host_keys_of_a_debian_server_none_from_the_box(default_lab, tmp_path):
    """RSA 3072, ECDSA and Ed25519, each with its private key, all three served by sshd (the
    ones made after it started too, with no reload); the box image has none in /etc/ssh, so
    every VM's are its own (two VMs' differ: test_vm_deleted_behind_labkits_back...)."""
    keys = vm_host_keys()
    assert {t: fp.split()[0] for t, fp in keys.items()} == DEBIAN_HOST_KEYS, keys
    image = next((paths.vagrant_home() / "boxes" / boxes.DEFAULT_BOX.replace("/", "-VAGRANTSLASH-")).glob(
        "*/libvirt/box.img"))
    raw = tmp_path / "box.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(image), str(raw)], check=True)
    ls = subprocess.run(["debugfs", "-R", "ls /etc/ssh", f"{raw}?offset={boxes.PART_START_SECTOR * 512}"],
                        capture_output=True, text=True, check=True).stdout
    assert "sshd_config" in ls and "ssh_host_" not in ls, ls


def test_box_build_is_cached():
    t0 = time.monotonic()
    info = boxes.build_box(boxes.DEFAULT_BOX, log=print)
    assert info.cached and info.path.is_file()
    print(f"cached box build: {time.monotonic() - t0:.1f}s")
    rows = json.loads(run("box", "list", "--json").stdout)
    assert any(r["name"] == boxes.DEFAULT_BOX and r["size"] > 0 for r in rows)


def test_vm_deleted_behind_labkits_back_then_libvirtd_stopped_mid_run(default_lab):
    """The VM is deleted behind labkit's back; while `labkit up` recreates it, libvirtd is
    stopped: the run fails naming libvirtd; once libvirtd is back, `labkit up` converges."""
    import os
    import signal

    from tests import daemons
    from tests.conftest import labkit_cmd

    first_keys = vm_host_keys()
    for args in (["destroy", VM], ["undefine", VM, "--remove-all-storage"]):
        subprocess.run(["virsh", "-c", "qemu:///system", *args], capture_output=True, check=True)
    assert VM not in virsh("list", "--all", "--name")
    p = subprocess.Popen(labkit_cmd() + ["up", "--no-facts"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while VM not in virsh("list", "--all", "--name"):
            assert time.monotonic() < deadline and p.poll() is None, "the VM was never defined"
            time.sleep(0.5)
        time.sleep(3)  # Vagrant is waiting for the guest
        daemons.stop("libvirtd")
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        daemons.start_libvirtd()
    assert p.returncode == 5, out + err
    assert "error: libvirtd is not answering at qemu:///system" in err
    assert f"[{VM}] Ensure the VM is running: failed: vagrant up of {VM} failed" in err
    assert "libvirtd -d" in err and "resumes where this run stopped" in err and "Traceback" not in err
    out = run("up", "--no-facts").stdout
    assert recap(out)["failures"] == 0
    assert VM in virsh("list", "--name")
    # a second VM from the same box: it has the three host keys as soon as `up` reports it ready
    # (a role that checks for /etc/ssh/ssh_host_ecdsa_key, as devsec's ssh_hardening does, finds
    # it), and none of them is the first VM's
    keys = vm_host_keys()
    assert {t: fp.split()[0] for t, fp in keys.items()} == DEBIAN_HOST_KEYS, keys
    assert set(keys.values()).isdisjoint(first_keys.values()), (first_keys, keys)
    rows = json.loads(run("facts", "--json").stdout)
    vm = next(r for r in rows if r["role"] == "vm")
    assert not vm["error"] and vm["pid1"] == "systemd"


def test_no_secret_in_output_or_logs(default_lab):
    """The VM's per-lab private key is stored 0600 and appears in no output, log or runner
    artifact of the lab (nor does any private key)."""
    from labkit import paths
    from labkit.vm import vms

    cfg = (paths.lab_dir("demo") / "ssh_config")
    run("facts")  # (re)writes it
    assert cfg.stat().st_mode & 0o077 == 0
    key = Path(vms.read_ssh_config(cfg)["IdentityFile"])
    assert key.stat().st_mode & 0o077 == 0, f"{key} is readable by others"
    # the key's base64 lines (an Ed25519 key has three): each long enough to be its own
    body = [ln for ln in key.read_text().splitlines() if len(ln) >= 40 and not ln.startswith("-----")]
    assert len(body) >= 2
    scanned = {"labkit up output": default_lab["first"].stdout + default_lab["first"].stderr,
               "interrupted labkit up output": default_lab["interrupted"]["output"]}
    logs = [p for p in paths.lab_dir("demo").rglob("*") if p.is_file() and p != key]
    logs += [p for p in (paths.state_dir() / "debug.log", *Path("/var/log/labkit").glob("*")) if p.is_file()]
    for p in logs:
        scanned[str(p)] = p.read_text(errors="replace")
    assert any("/runner/artifacts/" in name for name in scanned)
    leaks = [name for name, text in scanned.items()
             if "PRIVATE KEY-----" in text or any(line in text for line in body)]
    assert leaks == [], f"key material in {leaks}"


def test_shell_runs_as_the_student_in_the_vm(default_lab):
    out = run("shell", "vm", "sh", "-c", "id -un; cat /proc/1/comm").stdout.split()
    assert out == ["student", "systemd"]
