"""Issue 26, item 8 (reboot): no lab container runs without its firewall rules.

labkit's iptables rules are not persistent (neither are libvirt's and Docker's), so after a
reboot the rules are gone; a container that the engine starts again on its own (restart
policy `unless-stopped`, as labkit used to give them) then runs with no rule between it and
the other students' hosts and the server. Now labkit's containers have the restart policy
`no`: nothing comes back before `labkit up`, which makes the rules first, then starts them.

- A reboot of the engine, for real: a Docker Engine of this test's own (its own data, socket
  and bridge; the shared dockerd is never restarted) gets a container from labkit's module
  (role lab_container's `labkit_containers`, as `labkit up` makes them), is stopped and
  started again: the container stays stopped.
- The lab's side, on this machine's dockerd: a lab's rules are flushed and its container's
  process killed as a reboot would; dockerd leaves it stopped, `labkit status` says so, and
  `labkit up` (not skipped as "up to date") makes the rules and starts it again.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from labkit import paths
from tests.labs import docker, down_leftovers, run

pytestmark = pytest.mark.integration

LAB = "fwboot"
CT = f"labkit-{LAB}-a-busybox"
IMAGE = "labkit/busybox:1.35"


def module(name: str, args: dict) -> tuple[int, dict]:
    """A role's real module through Ansible on this machine: (rc, its result)."""
    role = {"labkit_firewall": "lab_firewall", "labkit_containers": "lab_container"}[name]
    p = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-c", "local",
                        "-e", f"ansible_python_interpreter={sys.executable}",
                        "-M", str(paths.roles_dir() / role / "library"), "-m", name, "-a", json.dumps(args)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "ANSIBLE_CONFIG": str(paths.roles_dir().parent / "ansible.cfg")})
    return p.returncode, json.loads(p.stdout[p.stdout.find("=> {") + 3:]) if "=> {" in p.stdout else {"out": p.stdout + p.stderr}


class OwnDockerd:
    """A Docker Engine for this test only: its own data root, exec root, socket, bridge and
    network namespace, no iptables of its own."""

    def __init__(self, d: Path) -> None:
        self.d, self.sock, self.proc = d, f"unix://{d}/docker.sock", None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "-H", self.sock, *args], capture_output=True, text=True, check=check)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            # in a network namespace of its own: dockerd with `--bridge none` deletes the host's
            # docker0 at start (moby's removeDefaultBridgeInterface), which the shared dockerd needs
            ["unshare", "--net", "--", "dockerd", "--data-root", f"{self.d}/data", "--exec-root", f"{self.d}/exec", "-H", self.sock,
             "--pidfile", f"{self.d}/docker.pid", "--bridge", "none", "--iptables=false", "--ip-masq=false",
             "--ip-forward=false", "--userland-proxy=false", "--config-file", f"{self.d}/daemon.json"],
            stdout=open(self.d / "dockerd.log", "a"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while self.cli("info", check=False).returncode != 0:
            assert self.proc.poll() is None and time.monotonic() < deadline, (self.d / "dockerd.log").read_text()[-3000:]
            time.sleep(0.3)

    def stop(self) -> None:
        """As at shutdown: SIGTERM, and dockerd stops its containers before it exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def test_the_engine_starting_again_leaves_labkits_containers_stopped():
    d = Path(tempfile.mkdtemp(prefix="lkfwrb", dir="/tmp"))  # short: a socket path has 108 bytes
    (d / "daemon.json").write_text("{}")
    eng = OwnDockerd(d)
    try:
        eng.start()
        save = subprocess.Popen(["docker", "image", "save", IMAGE], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", eng.sock, "image", "load"], stdin=save.stdout, check=True, capture_output=True)
        assert save.wait() == 0
        eng.cli("network", "create", "--subnet", "10.247.26.0/24", "-o", "com.docker.network.bridge.name=lkfwrb0",
                "fwreboot")
        item = {"name": "labkit-fwreboot-a-busybox", "image": IMAGE, "hostname": "a-busybox", "network": "fwreboot",
                "student": "a", "distro": "busybox"}
        rc, res = module("labkit_containers", {"lab": "fwreboot", "containers": [item], "docker_host": eng.sock})
        assert rc == 0 and res["containers"][0]["action"] == "created", res
        assert json.loads(eng.cli("inspect", item["name"]).stdout)[0]["State"]["Running"]
        eng.stop()   # the reboot: the engine stops, its containers with it ...
        eng.start()  # ... and starts again, with no labkit rule anywhere
        time.sleep(3)  # (dockerd restarts what its policy says right after it answers)
        st = json.loads(eng.cli("inspect", item["name"]).stdout)[0]
        assert not st["State"]["Running"], f"{item['name']} came back on its own, before any firewall rule"
        assert st["HostConfig"]["RestartPolicy"]["Name"] == "no"
        # labkit's next run starts it again
        rc, res = module("labkit_containers", {"lab": "fwreboot", "containers": [item], "docker_host": eng.sock})
        assert rc == 0 and res["containers"][0]["action"] == "started", res
    finally:
        try:
            eng.cli("rm", "-f", "labkit-fwreboot-a-busybox", check=False)
            eng.cli("network", "rm", "fwreboot", check=False)
        finally:
            eng.stop()
            subprocess.run(["ip", "link", "del", "lkfwrb0"], capture_output=True)
            subprocess.run(["rm", "-rf", str(d)], check=False)


def lab_rules() -> list[str]:
    save = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [ln for ln in save.splitlines() if f"labkit lab={LAB} " in ln]


def test_after_a_reboot_the_lab_stays_down_until_up_makes_its_rules(tmp_path):
    f = tmp_path / "lab.yml"
    f.write_text(f"name: {LAB}\nstudents: [a]\ncontainers: [busybox]\nvm: {{enabled: false}}\n"
                 "provision: {packages: []}\n")
    run("images", "build", "busybox")
    down_leftovers("-f", str(f))
    try:
        run("up", "-f", str(f), "--no-facts", "-q")
        assert lab_rules()
        info = json.loads(docker("inspect", CT))[0]
        # the reboot, for this lab: its rules gone, its container's process killed
        rc, res = module("labkit_firewall", {"lab": LAB, "state": "absent"})
        assert rc == 0 and lab_rules() == [], res
        os.kill(info["State"]["Pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60  # dockerd records the exit
        while json.loads(docker("inspect", CT))[0]["State"]["Status"] != "exited":
            assert time.monotonic() < deadline, json.loads(docker("inspect", CT))[0]["State"]
            time.sleep(0.2)
        time.sleep(3)  # time enough for dockerd to restart it, if its policy said so
        now = json.loads(docker("inspect", CT))[0]
        assert not now["State"]["Running"] and now["RestartCount"] == 0, f"{CT} came back on its own, with no firewall rule"
        assert info["HostConfig"]["RestartPolicy"]["Name"] == "no"
        status = json.loads(run("status", "-f", str(f), "--json").stdout)
        assert [(h["name"], h["state"]) for h in status["hosts"]] == [(CT, "exited")]
        up = run("up", "-f", str(f), "--no-facts")
        assert "up to date" not in up.stdout, up.stdout  # the stamp sees the change: the playbook runs
        assert lab_rules()
        assert json.loads(docker("inspect", CT))[0]["State"]["Running"]
    finally:
        down_leftovers("-f", str(f))
