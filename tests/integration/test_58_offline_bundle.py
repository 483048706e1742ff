"""A classroom with no internet at all (issue 18): the bundle carries the lab servers' Debian
packages and labkit itself, and a classroom with containers and a VM comes up on a lab
server that reaches nothing but the instructor machine.

The blocked lab server is a fresh Debian 12 system in a container of this machine's engine
(the Debian 12 image labkit builds, plus openssh-server and sudo: what a minimal server has),
with no systemd (sshd is its PID 1, as on this CI machine the daemons are started by hand),
its own kernel view (/sys and its cgroup hierarchies writable, /dev/kvm and /dev/net/tun
passed, its /var/lib/docker and /var/lib/containers on volumes so that its engines' overlay
stores are not on overlay), and a login user with sudo. Its outbound traffic is blocked from
outside (iptables in its network namespace): everything leaving through its uplink is
rejected (its own) or dropped (its containers' and VMs'), except to this machine (the
instructor's). `labkit prepare --bundle --podman --lxc` must install everything the
lab_server role installs (docker.io, python3-requests, the VM stack: QEMU, libvirt, Vagrant,
vagrant-libvirt, python3-vagrant, ...; Podman with what rootless Podman needs: uidmap,
slirp4netns; LXC with python3-lxc and busybox-static) from the bundle's apt repository
alone, start dockerd, virtlogd and libvirtd without systemd and add the box; then a
classroom with containers (on the server's Docker, its Podman and its LXC) and a VM (QEMU on
the server) comes up there, the facts and K1..K12 hold, and none of its hosts reaches the
internet either. `prepare` gets the digest `bundle create` printed (issue 26: it refuses a bundle
without it). A bundle that does not cover the server's release is refused there, naming the
server and the fix. labkit installs from the bundle's wheelhouse into a new virtual
environment with `pip --no-index` in a network namespace with no network at all, and its
`labkit --help` and `labkit doctor` run.

Why a container and not a VM as the blocked server: the VM a server VM would host is nested
emulation (no KVM here: TCG inside TCG), and the server VM itself must boot and install the
VM stack under emulation (prepare alone took 340-450 s for docker.io). In a container the
server's packages install at native speed and its VM is a single-level TCG boot, as any VM
here. Measured on this machine (2 cores, cgroup v1, other emulated VMs running, load 4-6):
bundle create 36-63 s with warm caches, prepare 61-137 s, a second prepare 8-26 s, up of two
containers and the VM 125-227 s, verify 36-102 s; the module 6.6-12 min (the VM-as-server
version, containers only: about 12). test_55 still makes the default lab's VM a lab server;
test_57 boots a VM on a remote server reached over SSH (this machine)."""
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from labkit.engines.lxc_layout import IDMAP
from labkit.images import bundle as bundle_mod
from tests.labs import down_leftovers

from .conftest import recap, run, write_inventory

pytestmark = [pytest.mark.integration, pytest.mark.vm]
LAB = "ofl"
PODMAN, LXC = "debian12-podman", "debian12-lxc"  # the Podman and LXC containers' short names
SERVER = "labkit-test-ofl-server"  # the container that is the blocked lab server
NETWORK = "labkit-test-ofl-net"  # its network (the instructor machine: its gateway)
SERVER_IMAGE = "labkit-test/offline-server:bookworm"
USER = "admin"
# a minimal Debian 12 server from the image labkit builds: sshd, sudo, a login user
DOCKERFILE = f"""
FROM labkit/debian:12
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
      openssh-server sudo \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \\
 && useradd -m -s /bin/bash {USER} && echo '{USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{USER}
LABEL labkit.test=offline-server
"""
# What the server's init does before sshd: /sys and the cgroup hierarchies writable (its
# engine and libvirt make cgroups), in its own cgroup namespace. Run on cgroup v1 (this
# machine); the cgroup v2 branch does what docker's own dind image does and is not yet run here.
INIT = r"""
set -e
mount -o remount,rw /sys
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
  umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
  # processes out of the root so that controllers can be delegated (as docker's dind does)
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
  sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers > /sys/fs/cgroup/cgroup.subtree_control
else
  for d in /sys/fs/cgroup/*; do
    n=${d##*/}
    case "$n" in unified) t=cgroup2 o=rw ;; systemd) t=cgroup o=none,name=systemd ;; *) t=cgroup o=$n ;; esac
    umount "$d" && mount -t "$t" -o "$o" cgroup "$d"
  done
fi
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
"""
# Everything leaving the server through its uplink is rejected (its own traffic) or dropped
# (its containers' and VMs'), except to the instructor machine ($1); traffic to its own
# bridges (its containers and VMs) stays. Applied in its network namespace from outside.
BLOCK = r"""
set -eu
H=$1
DEV=$(ip route get "$H" | sed -n 's/.* dev \([^ ]*\).*/\1/p' | head -n 1)
for t in iptables ip6tables; do
  $t -N LABKIT-OFFLINE 2>/dev/null || $t -F LABKIT-OFFLINE
  if [ "$t" = iptables ]; then $t -A LABKIT-OFFLINE -d "$H" -j RETURN; fi
  $t -A LABKIT-OFFLINE -o "$DEV" -j REJECT
  $t -C OUTPUT -j LABKIT-OFFLINE 2>/dev/null || $t -I OUTPUT 1 -j LABKIT-OFFLINE
done
iptables -t mangle -N LABKIT-OFFLINE 2>/dev/null || iptables -t mangle -F LABKIT-OFFLINE
iptables -t mangle -A LABKIT-OFFLINE -o "$DEV" ! -d "$H" -j DROP
iptables -t mangle -C POSTROUTING -j LABKIT-OFFLINE 2>/dev/null || iptables -t mangle -I POSTROUTING 1 -j LABKIT-OFFLINE
echo "$DEV"
"""
# the three at once (a blocked name lookup and connection each wait out their timeouts)
PROBE = ("import socket, sys, threading\n"
         "out = {}\n"
         "def one(host):\n"
         "    try:\n"
         "        socket.create_connection((host, 80), 5).close()\n"
         "        out[host] = 'reached ' + host\n"
         "    except OSError as e:\n"
         "        out[host] = '%s %s %s' % (host, type(e).__name__, e)\n"
         "ts = [threading.Thread(target=one, args=(h,)) for h in ('deb.debian.org', 'security.debian.org', '1.1.1.1')]\n"
         "[t.start() for t in ts]; [t.join() for t in ts]\n"
         "print('\\n'.join(out[h] for h in sorted(out)))\n"
         "sys.exit(1 if any(v.startswith('reached') for v in out.values()) else 0)\n")
# Linux capabilities by number: the ones this machine's bounding set lacks are dropped from
# the server container's (docker cannot grant what it has not got; --privileged would try).
CAPS = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
        "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT "
        "SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE "
        "AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ "
        "PERFMON BPF CHECKPOINT_RESTORE").split()


def _docker(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["docker", *args], capture_output=True, text=True, input=input, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def _missing_caps() -> list[str]:
    bnd = next(int(ln.split()[1], 16) for ln in Path("/proc/self/status").read_text().splitlines()
               if ln.startswith("CapBnd:"))
    return [c for i, c in enumerate(CAPS) if not bnd >> i & 1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The blocked lab server's container (not yet blocked), its inventory variables and ssh."""
    if os.geteuid() != 0 or shutil.which("nsenter") is None:
        pytest.skip("needs root and nsenter (util-linux) to block the server's traffic")
    t0 = time.monotonic()
    d = tmp_path_factory.mktemp("server")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id")], check=True)
    run("images", "build", "debian:12")
    _docker("build", "-q", "-t", SERVER_IMAGE, "-", input=DOCKERFILE)
    _docker("rm", "-f", "-v", SERVER, check=False)
    # its own network, not the engine's default bridge (docker0), which is global state
    _docker("network", "rm", NETWORK, check=False)
    _docker("network", "create", NETWORK)
    devices = [f"--device={p}" for p in ("/dev/kvm", "/dev/net/tun") if Path(p).exists()]
    _docker("run", "-d", "--name", SERVER, "--hostname", "server-2", "--network", NETWORK, "--cgroupns", "private",
            "--cap-add", "ALL", *[f"--cap-drop={c}" for c in _missing_caps()],
            "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--security-opt", "systempaths=unconfined", "--device-cgroup-rule", "a *:* rwm", *devices,
            "--mount", "type=volume,dst=/var/lib/docker", "--mount", "type=volume,dst=/var/lib/containers",
            "--tmpfs", "/run", "--tmpfs", "/tmp",
            SERVER_IMAGE, "sh", "-c", INIT)
    try:
        _docker("exec", "-i", SERVER, "sh", "-c",
                f"install -d -m 700 -o {USER} -g {USER} /home/{USER}/.ssh && "
                f"cat > /home/{USER}/.ssh/authorized_keys && chown {USER}: /home/{USER}/.ssh/authorized_keys",
                input=(d / "id.pub").read_text())
        net = json.loads(_docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", SERVER).stdout)[NETWORK]
        address, gateway = net["IPAddress"], net["Gateway"]
        pid = _docker("inspect", "-f", "{{.State.Pid}}", SERVER).stdout.strip()
        vars_ = {"ansible_host": address, "ansible_user": USER, "ansible_ssh_private_key_file": str(d / "id"),
                 "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": True,
                 "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}
        argv = ["ssh", "-i", str(d / "id"), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{USER}@{address}"]

        def ssh(cmd: str, check: bool = True, input: str | None = None, timeout: float = 600):
            p = subprocess.run(argv + [cmd], capture_output=True, text=True, timeout=timeout, input=input)
            if check and p.returncode != 0:
                raise AssertionError(f"on the server: {cmd} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
            return p

        deadline = time.monotonic() + 60
        while ssh("true", check=False).returncode != 0:
            assert time.monotonic() < deadline, _docker("logs", SERVER, check=False).stderr
            time.sleep(0.5)

        def netns(script: str, *args: str) -> subprocess.CompletedProcess:
            """A shell script in the server's network namespace, with this machine's tools."""
            return subprocess.run(["nsenter", "-t", pid, "-n", "sh", "-s", *args], input=script, text=True,
                                  capture_output=True, timeout=120)

        yield {"vars": vars_, "ssh": ssh, "instructor": gateway, "netns": netns, "seconds": time.monotonic() - t0}
    finally:
        _docker("rm", "-f", "-v", SERVER, check=False)
        _docker("network", "rm", NETWORK, check=False)


def _installed(ssh, packages: list[str]) -> set[str]:
    """Which of ``packages`` dpkg has installed on the server (one query for them all)."""
    out = ssh("dpkg-query -W -f='${Package} ${db:Status-Status}\\n' " + " ".join(map(shlex.quote, packages))
              + " 2>/dev/null", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.split()[1:] == ["installed"]}


def _recompute_sums(bundle: Path) -> None:
    """SHA256SUMS written again for the files the bundle's manifest names, as they are now (as
    `bundle create` would)."""
    names = bundle_mod.bundle_files(json.loads((bundle / "manifest.json").read_text())) + ["manifest.json"]
    lines = [f"{hashlib.sha256((bundle / name).read_bytes()).hexdigest()}  {name}\n" for name in names]
    (bundle / "SHA256SUMS").unlink()
    (bundle / "SHA256SUMS").write_text("".join(lines))


def _timed(key: str, times: dict, *args, **kw):
    t0 = time.monotonic()
    p = run(*args, **kw)
    times[key] = time.monotonic() - t0
    return p


@pytest.fixture(scope="module")
def offline(tmp_path_factory, server):
    d = tmp_path_factory.mktemp("offline")
    ssh = server["ssh"]
    inv = d / "hosts.yml"
    write_inventory(inv, {"server-2": server["vars"]})
    lab = d / "lab.yml"
    lab.write_text(f"name: {LAB}\nstudents: [o1]\n"
                   "containers: [debian:12, busybox, {distro: debian:12, engine: podman}, {distro: debian:12, engine: lxc}]\n"
                   "vm: {enabled: true}\n"
                   "provision: {packages: []}\n")
    times: dict[str, float] = {"server": server["seconds"]}
    t0 = time.monotonic()
    run("images", "build", "busybox")
    run("box", "build")
    times["images and box"] = time.monotonic() - t0
    bundle = d / "bundle"
    created = _timed("bundle create", times, "bundle", "create", "-f", str(lab), "-i", str(inv), str(bundle))
    digest = re.search(r"^bundle digest: (sha256:[0-9a-f]{64})$", created.stdout, re.M)[1]  # prepare requires it

    # the fresh server lacks all of it; then every way out but to this machine is closed
    lists = bundle_mod.role_packages()
    # what prepare --podman --lxc installs: every list of the role
    packages = list(dict.fromkeys(lists["server"] + lists["vm"] + lists["podman"] + lists["lxc"]))
    t0 = time.monotonic()
    had = _installed(ssh, packages)
    missing_before = [p for p in packages if p not in had]
    sources_before = ssh("sha256sum /etc/apt/sources.list; ls -A /etc/apt/sources.list.d").stdout
    block = server["netns"](BLOCK, server["instructor"])
    assert block.returncode == 0, block.stderr
    probe = ssh(f"python3 -c {shlex.quote(PROBE)}", check=False)
    # the server's own sources, read into a throw-away lists folder (its real lists stay as they were)
    apt_update = ssh("d=$(mktemp -d) && mkdir -p $d/lists/partial $d/cache/archives/partial && "
                     "sudo apt-get -o Dir::State::Lists=$d/lists -o Dir::Cache=$d/cache "
                     "-o APT::Sandbox::User=root update 2>&1; "
                     "sudo rm -rf $d", check=False)
    times["checks before"] = time.monotonic() - t0

    # a bundle for another release: refused on this server, naming it and the fix
    t0 = time.monotonic()
    other = d / "trixie"
    shutil.copytree(bundle, other, copy_function=os.link)  # hard links: only the files rewritten are replaced
    manifest = json.loads((other / "manifest.json").read_text())
    for e in manifest["apt"]:
        e["release"] = "trixie"
        (other / "apt" / "bookworm-amd64.tar").rename(other / "apt" / "trixie-amd64.tar")  # the link, renamed
        e["file"] = "apt/trixie-amd64.tar"
    (other / "manifest.json").unlink()
    (other / "manifest.json").write_text(json.dumps(manifest))
    _recompute_sums(other)  # a whole bundle for trixie, with its own digest (as if made for trixie)
    other_digest = "sha256:" + hashlib.sha256((other / "SHA256SUMS").read_bytes()).hexdigest()
    times["bundle for trixie"] = time.monotonic() - t0
    uncovered = _timed("prepare of an uncovered release", times, "prepare", "-i", str(inv), "--bundle", str(other),
                       "--bundle-digest", other_digest, "--podman", "--lxc", check=False)
    had = _installed(ssh, packages)
    after_uncovered = [p for p in packages if p in had]

    first = _timed("prepare", times, "prepare", "-i", str(inv), "--bundle", str(bundle), "--bundle-digest", digest,
                   "--podman", "--lxc")
    second = _timed("prepare again", times, "prepare", "-i", str(inv), "--bundle", str(bundle), "--bundle-digest",
                    digest, "--podman", "--lxc")
    down_leftovers("-f", str(lab), "-i", str(inv))  # what an aborted earlier run left
    # no facts table at the end of `up`: the facts are read right after, as JSON
    up = _timed("up", times, "up", "-f", str(lab), "-i", str(inv), "--no-facts")
    facts = json.loads(_timed("facts", times, "facts", "-f", str(lab), "--json").stdout)
    verify = _timed("verify", times, "verify", "-f", str(lab), "--json", check=False)
    # a listener on another network of the server (Docker's default bridge, no lab's): on this fresh
    # server Podman's CNI plugin put its accepting rules above labkit's when the first container
    # started; labkit's come first again before `up` is done
    ssh("sudo docker run -d --rm --name lk58-other --network bridge labkit/debian:12 python3 -m http.server 8000")
    other = ssh("sudo docker inspect -f '{{.NetworkSettings.IPAddress}}' lk58-other").stdout.strip()
    reach = (f"import socket\ntry:\n    socket.create_connection(({other!r}, 8000), 5).close(); print('reached')\n"
             "except OSError as e:\n    print('blocked', e)\n")
    # the six probes at once: each waits out its blocked connections' timeouts
    t0 = time.monotonic()
    with ThreadPoolExecutor(6) as ex:
        probes = {"server": ex.submit(ssh, f"python3 -c {shlex.quote(PROBE)}", check=False)}
        for host in ("debian12", PODMAN, LXC, "vm"):
            probes[host] = ex.submit(run, "shell", "-f", str(lab), host, "python3", "-c", PROBE, check=False)
        other_net = ex.submit(run, "shell", "-f", str(lab), PODMAN, "python3", "-c", reach, check=False)
        still_blocked = {host: f.result() for host, f in probes.items()}
    ssh("sudo docker rm -f lk58-other", check=False)
    forward = ssh("sudo iptables -S FORWARD").stdout
    times["probes"] = time.monotonic() - t0
    yield {"dir": d, "bundle": bundle, "digest": digest, "lab": lab, "inv": inv, "created": created, "times": times,
           "packages": packages, "lists": lists, "missing_before": missing_before,
           "probe": probe, "apt_update": apt_update, "uncovered": uncovered, "after_uncovered": after_uncovered,
           "first": first, "second": second, "up": up, "facts": facts, "verify": verify,
           "still_blocked": still_blocked, "other_net": other_net.result(), "forward": forward,
           "sources_before": sources_before,
           "sources_after": ssh("sha256sum /etc/apt/sources.list; ls -A /etc/apt/sources.list.d").stdout}
    down_leftovers("-f", str(lab), "-i", str(inv))
    print("\n" + ", ".join(f"{k}: {v:.0f} s" for k, v in times.items()))


def test_bundle_carries_debs_and_wheels_checksummed_and_says_its_size(offline):
    b = offline["bundle"]
    out = offline["created"].stdout
    assert "lab server server-2: Debian bookworm/amd64" in out
    assert "bundle written:" in out and "MiB" in next(ln for ln in out.splitlines() if "bundle written:" in ln), out
    # the digest printed is that of SHA256SUMS, which lists every file (the manifest too)
    assert offline["digest"] == "sha256:" + hashlib.sha256((b / "SHA256SUMS").read_bytes()).hexdigest()
    manifest = json.loads((b / "manifest.json").read_text())
    [apt] = manifest["apt"]
    assert (apt["release"], apt["arch"], apt["file"]) == ("bookworm", "amd64", "apt/bookworm-amd64.tar")
    assert set(offline["packages"]) <= set(apt["closure"]), "the VM stack too: the lab has a VM"
    assert {"containerd", "runc", "libc6", "qemu-system-x86", "vagrant-libvirt", "conmon"} <= set(apt["closure"])
    # every engine's packages, whatever engines the lab uses: Podman's and LXC's too
    assert {p for ps in offline["lists"].values() for p in ps} <= set(apt["closure"])
    assert {"podman", "uidmap", "slirp4netns", "lxc"} <= set(apt["closure"])
    assert manifest["box"]["name"] == "labkit/debian12"
    sums = {ln.split(None, 1)[1] for ln in (b / "SHA256SUMS").read_text().splitlines()}
    w = manifest["wheels"]
    assert {"apt/bookworm-amd64.tar", "wheels/requirements.txt", f"wheels/{w['labkit']}"} <= sums
    assert all(f"wheels/{f}" in sums for f in w["files"])
    assert w["python"] == "3.11" and w["machine"] == "x86_64"
    print(f"\nbundle create: {offline['times']['bundle create']:.0f} s; "
          f"{next(ln for ln in out.splitlines() if 'bundle written:' in ln)}")


def test_the_server_reaches_no_mirror(offline):
    assert offline["probe"].returncode == 0, offline["probe"].stdout
    assert "reached" not in offline["probe"].stdout
    assert "Failed to fetch" in offline["apt_update"].stdout or "Could not connect" in offline["apt_update"].stdout
    # after prepare and up, the server and the classroom's hosts on it still reach nothing
    for host, p in offline["still_blocked"].items():
        assert "reached" not in p.stdout and p.returncode == 0, (host, p.stdout, p.stderr)


def test_podmans_first_containers_on_a_fresh_server_reach_no_other_network(offline):
    """Podman's CNI plugin puts its own rules (accepting all of a container's traffic) at the top
    of FORWARD when the server's first container starts: labkit's jump is first again when `up`
    ends, and the Podman container reaches no other network of the server."""
    p = offline["other_net"]
    assert p.returncode == 0 and p.stdout.startswith("blocked"), (p.stdout, p.stderr)
    rules = [ln for ln in offline["forward"].splitlines() if ln.startswith("-A FORWARD")]
    assert any("CNI-FORWARD" in ln for ln in rules), offline["forward"]  # what the plugin put there
    assert rules[0] in ("-A FORWARD -m comment --comment labkit -j LABKIT-FORWARD", "-A FORWARD -j DOCKER-USER"), rules


def test_a_bundle_for_another_release_is_refused_naming_the_server_and_the_fix(offline):
    p = offline["uncovered"]
    assert p.returncode == 5, p.stdout + p.stderr
    text = p.stdout + p.stderr
    assert "server-2 runs Debian bookworm/amd64" in text and "trixie/amd64" in text, text
    assert "labkit bundle create DIR --release bookworm --arch amd64" in text, text
    assert offline["after_uncovered"] == [], "nothing may be installed from an uncovered bundle"


def test_prepare_installs_the_missing_packages_from_the_bundle_alone(offline, server):
    first = offline["first"]
    assert recap(first.stdout)["failures"] == 0 and recap(first.stdout)["changed"] > 0
    assert "from the bundle only (Debian bookworm/amd64)" in first.stdout
    ssh = server["ssh"]
    # a fresh server: every package of the lab_server role was missing, and is installed now
    assert offline["missing_before"] == offline["packages"]
    have = _installed(ssh, offline["packages"])
    assert [p for p in offline["packages"] if p not in have] == []
    # the engine and libvirt run, started without systemd (sshd is the server's PID 1)
    assert ssh("cat /proc/1/comm").stdout.strip() == "sshd"
    assert ssh("sudo docker version --format '{{.Server.Version}}'").stdout.strip()
    assert ssh("sudo virsh -q -c qemu:///system uri").stdout.strip() == "qemu:///system"
    # Podman, set up as on labkit's machine (no daemon: it answers)
    assert ssh("sudo podman version --format '{{.Server.Version}}'").stdout.strip()
    assert 'cgroup_manager = "cgroupfs"' in ssh("cat /etc/containers/containers.conf.d/50-labkit.conf").stdout
    # LXC's tools, the binding of the server's Python and root's id map (prepare --lxc), from the bundle too
    assert ssh(f"lxc-start --version && python3 -c 'import lxc' && grep -x '{IDMAP}' /etc/subuid",
               check=False).returncode == 0
    rec = json.loads(ssh("sudo cat /var/lib/labkit/server.json").stdout)  # its folder is 0750 root
    assert rec["box"] == "labkit/debian12" and rec["accel"] in ("kvm", "qemu")
    assert "labkit/debian12" in ssh("sudo env VAGRANT_HOME=/var/lib/labkit/vagrant.d vagrant box list").stdout
    # the server's own apt configuration is untouched, and the copies are gone
    assert offline["sources_after"] == offline["sources_before"]
    assert ssh("sudo test ! -e /var/lib/labkit/apt && sudo test ! -e /var/lib/labkit/bundle/apt/bookworm-amd64.tar",
               check=False).returncode == 0
    print(f"\nprepare from the bundle, offline: {offline['times']['prepare']:.0f} s")


def test_second_prepare_changes_nothing(offline):
    assert recap(offline["second"].stdout)["changed"] == 0, offline["second"].stdout


def test_the_classroom_with_containers_and_a_vm_comes_up_on_the_offline_server(offline):
    up = offline["up"]
    r = recap(up.stdout)
    assert r["failures"] == 0 and r["dark"] == 0
    assert "VM on server-2: QEMU emulation (TCG)" in up.stdout or "VM on server-2: KVM" in up.stdout, up.stdout
    rows = offline["facts"]
    server = next(r for r in rows if r["role"] == "server" and r["host"] == "server-2")
    boxes = [r for r in rows if r["role"] == "container"]
    assert len(boxes) == 4 and all(b["server"] == "server-2" for b in boxes), rows
    # Podman's and LXC's too, on the server's engines (made from the image in the server's Docker store)
    assert {b["host"].rsplit("-o1-", 1)[1]: b["engine"] for b in boxes} == {
        "debian12": "docker", "busybox": "docker", PODMAN: "podman", LXC: "lxc"}, rows
    assert all(b["boot_id"] == server["boot_id"] and b["same_kernel"] is True for b in boxes), rows
    [vm] = [r for r in rows if r["role"] == "vm"]
    assert vm["server"] == "server-2" and not vm["error"] and vm["pid1"] == "systemd", vm
    assert vm["boot_id"] != server["boot_id"] and vm["same_kernel"] is False, vm
    results = json.loads(offline["verify"].stdout)
    assert results and all(r["outcome"] == "passed" for r in results), [r for r in results if r["outcome"] != "passed"]
    for short, eng in ((PODMAN, "podman"), (LXC, "lxc")):
        assert {r["engine"] for r in results if r["host"] == f"labkit-{LAB}-o1-{short}"} == {eng}
    print(f"\nup of 4 containers (Docker, Podman, LXC) and a VM on the offline server: {offline['times']['up']:.0f} s")


def test_a_corrupt_or_missing_bundle_file_is_named_before_any_server_is_touched(offline, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(offline["bundle"], bad, copy_function=os.link)
    tar = bad / "apt" / "bookworm-amd64.tar"
    data = bytearray(tar.read_bytes())
    data[1000] ^= 0xFF
    tar.unlink()
    tar.write_bytes(bytes(data))
    # SHA256SUMS is the one that was made (the digest matches): the damaged file is named
    p = run("prepare", "-i", str(offline["inv"]), "--bundle", str(bad), "--bundle-digest", offline["digest"],
            check=False)
    assert p.returncode == 4 and "apt/bookworm-amd64.tar does not match its checksum" in p.stderr, p.stderr
    assert "play:" not in p.stdout
    tar.unlink()
    os.link(offline["bundle"] / "apt" / "bookworm-amd64.tar", tar)  # whole again; now a file goes missing
    whl = json.loads((bad / "manifest.json").read_text())["wheels"]["labkit"]
    (bad / "wheels" / whl).unlink()
    p = run("prepare", "-i", str(offline["inv"]), "--bundle", str(bad), "--bundle-digest", offline["digest"],
            check=False)
    assert p.returncode == 4 and f"wheels/{whl} is listed in SHA256SUMS but missing" in p.stderr, p.stderr


@pytest.fixture(scope="module")
def wheel_venv(offline, tmp_path_factory):
    """labkit installed from the bundle's wheelhouse into a new venv, in a network namespace
    with no network, with pip's configuration and caches out of the way."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare (util-linux) for a network namespace")
    venv = tmp_path_factory.mktemp("wheelvenv") / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    t0 = time.monotonic()
    p = subprocess.run(["unshare", "--net", str(venv / "bin" / "pip"), "install", "--no-index", "--find-links",
                        str(offline["bundle"] / "wheels"), "labkit"], env=env, capture_output=True, text=True,
                       timeout=1800)
    return {"venv": venv, "pip": p, "seconds": time.monotonic() - t0, "env": env}


def test_labkit_installs_from_the_wheelhouse_with_no_index_and_runs(wheel_venv, offline):
    pip = wheel_venv["pip"]
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    venv = wheel_venv["venv"]
    freeze = subprocess.run([str(venv / "bin" / "pip"), "freeze"], env=wheel_venv["env"], capture_output=True,
                            text=True, check=True).stdout.split()
    pins = (offline["bundle"] / "wheels" / "requirements.txt").read_text().split()

    def pinned(lines):
        return sorted((canonicalize_name(n), v) for n, v in (ln.split("==") for ln in lines))

    assert pinned(freeze) == pinned(pins), "the new venv holds exactly the bundle's pins"
    h = subprocess.run([str(venv / "bin" / "labkit"), "--help"], capture_output=True, text=True, timeout=120)
    assert h.returncode == 0 and "Usage: labkit" in h.stdout and "bundle" in h.stdout
    mine = subprocess.run([str(venv / "bin" / "labkit"), "doctor", "-f", str(offline["lab"]), "--json"],
                          capture_output=True, text=True, timeout=600)
    dev = subprocess.run([str(Path(sys.executable).parent / "labkit"), "doctor", "-f", str(offline["lab"]), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert mine.returncode in (0, 1), mine.stderr  # 1: a blocking check failed here, which doctor reports
    checks = json.loads(mine.stdout)
    assert checks and {"name", "status", "detail", "fix"} <= set(checks[0])
    # the same checks as the development install runs on the same machine and lab (their verdicts
    # on memory and load may differ from one second to the next on a busy machine)
    assert dev.returncode in (0, 1), dev.stderr
    assert [c["name"] for c in checks] == [c["name"] for c in json.loads(dev.stdout)]
    print(f"\npip install --no-index from the wheelhouse: {wheel_venv['seconds']:.0f} s")
