"""Faults on the real daemons, each checked for its message and for leftovers: the disk full
during an image build, the engine restarted mid-run, libvirtd stopped, SIGTERM/SIGINT while
containers are created and while they are provisioned. Every case ends with `labkit up`
converging and `labkit down` leaving nothing of the lab behind."""
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from labkit import paths
from labkit.ansible.runner import KEEP_ARTIFACTS
from tests import daemons
from tests.conftest import labkit_cmd, process_cmdlines

pytestmark = pytest.mark.integration
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs / restarts daemons: needs root")


def labkit(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(labkit_cmd() + list(args), capture_output=True, text=True, timeout=timeout, env=env)


def lab_file(tmp_path, name: str, students: int, distros: list[str], vm: bool = False) -> str:
    """The lab file, with nothing of the lab left from an earlier run."""
    path = tmp_path / f"{name}.yml"
    path.write_text(json.dumps({"name": name, "students": students, "containers": distros,
                                "vm": {"enabled": vm}}))
    if not vm:
        assert labkit("down", "-f", str(path)).returncode == 0
    assert labelled("container", name) == []
    return str(path)


def labelled(kind: str, lab: str) -> list[str]:
    cmd = ["docker", kind, "ls", "-q"] + (["-a"] if kind == "container" else [])
    out = subprocess.run(cmd + ["--filter", f"label=labkit.lab={lab}"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def firewall_rules(lab: str) -> list[str]:
    """iptables/ip6tables rules of the lab (role lab_firewall comments each with its lab)."""
    out = []
    for cmd in ("iptables-save", "ip6tables-save"):
        p = subprocess.run([cmd], capture_output=True, text=True)
        out += [ln for ln in p.stdout.splitlines() if f"labkit lab={lab} " in ln]
    return out


def lab_processes(lab: str) -> list[str]:
    """Processes still working for the lab (ansible-playbook, its workers and modules, Vagrant)."""
    mark = f"/labs/{lab}/"
    return [f"{pid}: {cmd[:160]}" for pid, cmd in process_cmdlines()
            if pid != os.getpid() and (mark in cmd or f"labkit_lab={lab}" in cmd)]


def module_temp_dirs() -> set[str]:
    """AnsiballZ payload folders of modules run on this machine (left when a module is killed)."""
    return {p.name for p in Path(tempfile.gettempdir()).glob("ansible_*_payload_*")}


def no_temp_left(lab: str, before: set[str]) -> None:
    assert not (paths.lab_dir(lab) / "runner" / "tmp").exists(), "the run's temp folder was left"
    assert module_temp_dirs() - before == set(), "module temp folders were left in /tmp"


def converges_then_cleans(lab: str, path: str, n_hosts: int) -> None:
    """`labkit up` converges to every host running, `labkit down` leaves nothing of the lab."""
    again = labkit("up", "-f", path)
    assert again.returncode == 0, again.stdout + again.stderr
    running = subprocess.run(["docker", "ps", "-q", "--filter", f"label=labkit.lab={lab}"], capture_output=True,
                             text=True, check=True).stdout.split()
    assert len(running) == n_hosts
    down = labkit("down", "-f", path)
    assert down.returncode == 0, down.stdout + down.stderr
    assert labelled("container", lab) == [] and labelled("network", lab) == []
    assert firewall_rules(lab) == [], "labkit down left firewall rules of the lab"
    artifacts = paths.lab_dir(lab) / "runner" / "artifacts"
    assert len(list(artifacts.iterdir())) <= KEEP_ARTIFACTS, "runner artifacts beyond the rotation limit"
    assert lab_processes(lab) == []


@pytest.fixture(scope="module", autouse=True)
def images():
    p = labkit("images", "build", "busybox", "debian:12")
    assert p.returncode == 0, p.stdout + p.stderr


@root_only
def test_disk_full_during_image_build(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(small)], check=True)
    try:
        env = dict(os.environ, LABKIT_HOME=str(small / "home"), LABKIT_IMAGE_PREFIX="labkit-fulltest/")
        p = labkit("images", "build", "--force", "debian:12", env=env)
        assert p.returncode == 4, p.stdout + p.stderr
        assert f"no space left on the disk that holds {small}/home/tmp" in p.stderr
        assert "LABKIT_HOME" in p.stderr and "Traceback" not in p.stderr
        assert list((small / "home" / "tmp").iterdir()) == [], "the build's work folder was left behind"
        assert subprocess.run(["docker", "images", "-q", "labkit-fulltest/debian"], capture_output=True,
                              text=True).stdout.strip() == "", "a half-built image was tagged"
    finally:
        subprocess.run(["umount", str(small)], check=True)


@root_only
def test_engine_restarted_mid_run(tmp_path):
    lab = "faults-engine"
    path = lab_file(tmp_path, lab, 4, ["busybox", "debian:12"])
    temps = module_temp_dirs()
    p = subprocess.Popen(labkit_cmd() + ["up", "-f", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not labelled("container", lab):
            assert time.monotonic() < deadline and p.poll() is None, "no container was ever created"
            time.sleep(0.2)
        daemons.stop("dockerd")     # mid-run: the first containers exist, the others are being made
        daemons.start_dockerd()
        out, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 5, out + err
    assert "error: playbooks/up.yml failed on" in err or "up.yml failed on" in err, err
    assert "labkit up` again resumes" in err and "Traceback" not in err
    no_temp_left(lab, temps)
    converges_then_cleans(lab, path, 8)


@pytest.mark.parametrize("sig,point", [(signal.SIGTERM, "creation"), (signal.SIGTERM, "provisioning"),
                                       (signal.SIGINT, "provisioning")])
def test_signal_during_up(tmp_path, sig, point):
    lab = f"f-{sig.name.lower()}-{point[:4]}"
    path = lab_file(tmp_path, lab, 3, ["busybox", "debian:12"])
    temps = module_temp_dirs()
    p = subprocess.Popen(labkit_cmd() + ["up", "-f", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        if point == "creation":
            while not labelled("container", lab):
                assert time.monotonic() < deadline and p.poll() is None, "no container was ever created"
                time.sleep(0.1)
        else:   # the first provisioning change printed by the plain progress lines
            for line in p.stdout:
                if "changed: Ensure the student" in line:
                    break
            else:
                pytest.fail("the run ended before provisioning")
        # SIGTERM to labkit alone (what a service manager or `kill` sends); SIGINT to the
        # terminal's process group (Ctrl-C)
        os.killpg(p.pid, sig) if sig == signal.SIGINT else p.send_signal(sig)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err
    assert lab_processes(lab) == [], "ansible-playbook or its workers still running after labkit exited"
    no_temp_left(lab, temps)
    converges_then_cleans(lab, path, 6)


@root_only
def test_libvirtd_stopped_before_up(tmp_path):
    lab = "faults-libvirt"
    path = lab_file(tmp_path, lab, 1, ["busybox"], vm=True)
    daemons.stop("libvirtd")
    try:
        p = labkit("up", "-f", path)
        assert p.returncode == 3, p.stdout + p.stderr
        assert "libvirtd is not answering at qemu:///system" in p.stderr
        assert "libvirtd -d" in p.stderr and "Traceback" not in p.stderr
        assert labelled("container", lab) == [] and labelled("network", lab) == [], "half a lab was made"
        d = labkit("down", "-f", path)
        assert d.returncode == 3 and "libvirtd is not answering" in d.stderr, d.stdout + d.stderr
    finally:
        daemons.start_libvirtd()
    assert labkit("down", "-f", path).returncode == 0

