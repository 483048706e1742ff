"""`labkit doctor -f lab.yml` checks what that lab needs, on the real engines, through the
real CLI, and fails (exit 1, naming the check) exactly where `labkit up` fails.

Nothing here brings a lab up or takes one down: the labs `up` is tried on fail before they
create anything, with a private LABKIT_HOME so no state is left behind.
"""
import json
import os
import shutil
import socket
import subprocess
import time

import pytest
import yaml

from .conftest import docker, run, wait_port

pytestmark = pytest.mark.integration

VM_CHECKS = {"libvirt", "vagrant", "vagrant-libvirt", "KVM", "VirtualBox", "box", "VM boot"}


def lab_file(tmp_path, name, text):
    f = tmp_path / f"{name}.yml"
    f.write_text(f"name: {name}\n" + text)
    return f


def doctor(f, *args, env=None):
    """Run the real `labkit doctor --json`; (exit code, checks by name, stderr)."""
    t0 = time.monotonic()
    p = run("doctor", "-f", str(f), "--json", *args, check=False, timeout=180, env=env)
    assert "Traceback" not in p.stderr
    checks = json.loads(p.stdout)
    by_name = {c["name"]: c for c in checks}
    assert len(by_name) == len(checks), "check names are unique"
    return p.returncode, by_name, p.stderr, time.monotonic() - t0


def nothing_of(lab):
    assert docker("ps", "-a", "--filter", f"label=labkit.lab={lab}", "-q") == ""
    assert docker("network", "ls", "--filter", f"label=labkit.lab={lab}", "-q") == ""


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def private_home(tmp_path):
    return dict(os.environ, LABKIT_HOME=str(tmp_path / "labkit-home"))


def test_default_lab_passes_when_its_images_and_box_exist(tmp_path):
    from labkit.lab.spec import DEFAULT_LAB

    run("images", "build", "debian:11", "debian:12", "debian:13", "busybox")  # no-ops when up to date
    run("box", "build")
    f = tmp_path / "default.yml"
    f.write_text(yaml.safe_dump(DEFAULT_LAB))
    rc, checks, err, _ = doctor(f)
    assert rc == 0, (err, [c for c in checks.values() if c["status"] == "fail"])
    for distro in DEFAULT_LAB["containers"]:
        assert checks[f"image {distro}"]["status"] == "ok", checks[f"image {distro}"]
    assert checks["box"]["status"] == "ok" and "labkit/debian12" in checks["box"]["detail"]
    for name in ("libvirt", "KVM", "VM boot", "memory"):
        assert checks[name]["status"] in ("ok", "warn"), checks[name]
    assert "VM checks" not in checks
    assert any(n.startswith("disk (") for n in checks)
    assert "GiB available" in checks["memory"]["detail"]


def test_registry_distro_with_no_registry_fails_like_up(tmp_path, private_home):
    port = closed_port()
    f = lab_file(tmp_path, "drreg", f"students: [a]\ncontainers: [ubuntu:24.04, debian:12]\n"
                                    f"registry: 127.0.0.1:{port}\nvm: {{enabled: false}}\n")
    rc, checks, err, secs = doctor(f, env=private_home)
    assert rc == 1
    img = checks["image ubuntu:24.04"]
    assert img["status"] == "fail"
    assert f"127.0.0.1:{port}/library/ubuntu:24.04" in img["detail"] and "unreachable" in img["detail"]
    assert "registry:" in img["fix"]
    assert "image ubuntu:24.04" in err and "block `labkit up`" in err
    assert checks["image debian:12"]["status"] == "ok"
    assert secs < 60, "a closed registry answers at once: no hang"
    # ... and `labkit up` fails on it too (exit 4), creating nothing
    up = run("up", "-f", str(f), check=False, timeout=300, env=private_home)
    assert up.returncode == 4 and f"127.0.0.1:{port}/library/ubuntu:24.04" in up.stderr
    nothing_of("drreg")


def test_registry_distro_on_a_reachable_mirror(tmp_path):
    """A registry on loopback: doctor fails while it lacks the image, passes once it has it."""
    exe = shutil.which("docker-registry")
    assert exe, "docker-registry is installed by scripts/setup.sh"
    port = closed_port()
    cfg = tmp_path / "registry.yml"
    cfg.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
                   f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([exe, "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ref = f"127.0.0.1:{port}/library/ubuntu:24.04"
    try:
        wait_port(port, proc)
        f = lab_file(tmp_path, "drmirror", f"students: [a]\ncontainers: [ubuntu:24.04]\n"
                                           f"registry: 127.0.0.1:{port}\nvm: {{enabled: false}}\n")
        rc, checks, _, _ = doctor(f)
        assert rc == 1
        assert checks["image ubuntu:24.04"]["status"] == "fail"
        assert "does not have it" in checks["image ubuntu:24.04"]["detail"]

        run("images", "build", "busybox")  # a 2 MB image stands in for ubuntu on the mirror
        docker("tag", "labkit/busybox:1.35", ref)
        docker("push", ref)
        docker("rmi", ref)
        rc, checks, err, _ = doctor(f)
        assert rc == 0, err
        assert checks["image ubuntu:24.04"]["status"] == "ok"
        assert "`labkit up` pulls it" in checks["image ubuntu:24.04"]["detail"]
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run(["docker", "rmi", ref], capture_output=True)


def test_local_images_absent_fail_like_up_and_are_buildable_with_build(tmp_path, private_home):
    env = dict(private_home, LABKIT_IMAGE_PREFIX="labkit-doctor-absent/")
    f = lab_file(tmp_path, "drprefix", "students: [a]\ncontainers: [debian:12, busybox]\nvm: {enabled: false}\n")
    rc, checks, err, _ = doctor(f, env=env)
    assert rc == 1
    for distro, image in (("debian:12", "labkit-doctor-absent/debian:12"),
                          ("busybox", "labkit-doctor-absent/busybox:1.35")):
        c = checks[f"image {distro}"]
        assert c["status"] == "fail" and image in c["detail"], c
        assert f"labkit images build {distro}" in c["fix"] and "labkit up --build" in c["fix"]
    assert "image debian:12" in err
    up = run("up", "-f", str(f), check=False, env=env)
    assert up.returncode == 4 and "labkit-doctor-absent/debian:12" in up.stderr
    nothing_of("drprefix")
    # `labkit up --build` would build them: for it they are warnings, not failures
    rc, checks, err, _ = doctor(f, "--build", env=env)
    assert rc == 0, err
    assert checks["image debian:12"]["status"] == "warn"
    assert "labkit up --build" in checks["image debian:12"]["detail"]


def test_a_box_labkit_cannot_build_fails_like_up(tmp_path, private_home):
    f = lab_file(tmp_path, "drbox", "students: [a]\ncontainers: []\nvm: {box: nosuch/box}\n")
    for extra in ((), ("--build",)):  # labkit builds only labkit/debian12: --build does not help
        rc, checks, err, _ = doctor(f, *extra, env=private_home)
        assert rc == 1
        assert checks["box"]["status"] == "fail"
        assert "nosuch/box" in checks["box"]["detail"] and "labkit/debian12" in checks["box"]["detail"]
        assert "box" in err.split("block `labkit up`:")[-1]
    up = run("up", "-f", str(f), check=False, env=private_home)
    assert up.returncode == 4 and "nosuch/box is not on this machine" in up.stderr
    doms = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True,
                          text=True).stdout
    assert "labkit-drbox-" not in doms


def test_containers_only_lab_skips_the_vm_checks(tmp_path):
    f = lab_file(tmp_path, "drcont", "students: [a, b]\ncontainers: [debian:12, busybox]\nvm: {enabled: false}\n")
    rc, checks, err, _ = doctor(f)
    assert rc == 0, err
    assert not VM_CHECKS & set(checks), sorted(VM_CHECKS & set(checks))
    skipped = checks["VM checks"]
    assert skipped["status"] == "skipped" and "no VM" in skipped["detail"]
    assert "VM" not in checks["memory"]["detail"]
    assert "4 container" not in checks["memory"]["detail"] and "2 x debian:12" in checks["memory"]["detail"]
    # on a terminal table too, the line says skipped, not ok
    table = run("doctor", "-f", str(f)).stdout
    line = next(ln for ln in table.splitlines() if "VM checks" in ln)
    assert "skipped" in line and " ok " not in line


def test_too_many_vms_for_memory_fail(tmp_path):
    avail_kib = next(int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.startswith("MemAvailable:"))
    memory = 16384
    students = avail_kib // (memory * 1024) + 2   # more VMs than fit, even before QEMU's own share
    f = lab_file(tmp_path, "drmem", f"students: {students}\ncontainers: []\nvm: {{memory: {memory}}}\n")
    rc, checks, err, _ = doctor(f)
    assert rc == 1
    mem = checks["memory"]
    assert mem["status"] == "fail" and f"{students} VM(s)" in mem["detail"], mem
    assert "memory" in err.split("block `labkit up`:")[-1]
    # the boots are estimated against the cores (emulation here)
    assert f"{students} VM(s) to boot" in checks["VM boot"]["detail"]
    assert checks["VM boot"]["status"] in ("warn", "fail")
