"""Shared, session-scoped labs on the real engines and the helpers of the tests that use
them (tests/integration, tests/security): the default lab (containers + VM) is brought up once
per run. A pytest plugin (tests/conftest.py names it), so that both folders share one
``default_lab``, not one each."""
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import labkit_cmd, process_cmdlines


def run(*args, check=True, timeout=1800, env=None):
    """Run the real `labkit` console script; return the CompletedProcess."""
    p = subprocess.run(labkit_cmd() + list(args), capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"labkit {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def down_leftovers(*args: str) -> subprocess.CompletedProcess | None:
    """`labkit down ARGS` (not checked) when this machine records the lab as up (`labkit.api`'s
    ``labs_up``): what an earlier run or a failed test left. `up` records a lab before it makes
    anything, and only a full `down` forgets it, so a lab not recorded has nothing to take down;
    a `down` would still run its playbook over every engine (about 5-7 s here). The lab:
    ``-f FILE``'s name, ``--lab``, or LABKIT_LAB."""
    from labkit import api

    a = list(args)
    if "-f" in a:
        name = yaml.safe_load(Path(a[a.index("-f") + 1]).read_text())["name"]
    elif "--lab" in a:
        name = a[a.index("--lab") + 1]
    else:
        name = os.environ.get("LABKIT_LAB", "demo")
    return run("down", *args, check=False) if name in api.labs_up() else None


def content_parents(lab_file: Path, d: Path, env: dict | None = None) -> dict[str, str]:
    """`labkit run` of a play on every host with Python: each host's name and the command line
    of its task's parent process there. Under Mitogen's strategy that parent is Mitogen's Python
    (``/usr/bin/python3(mitogen:...)``); under plain Ansible, the module's own ``python3``."""
    pb = d / "parent.yml"
    pb.write_text(textwrap.dedent(r"""
        - name: Who runs the tasks
          hosts: python
          gather_facts: false
          tasks:
            - name: The task's parent process
              ansible.builtin.shell: "tr '\\0' ' ' < /proc/$PPID/cmdline"
              register: parent
              changed_when: false
            - name: Say it
              ansible.builtin.debug:
                msg: "parent-of {{ inventory_hostname }} is {{ parent.stdout }}"
        """))
    p = run("run", "-f", str(lab_file), str(pb), "-v", env=env)
    return dict(re.findall(r'"msg": "parent-of (\S+) is (.*?)\s*"', p.stdout))


def docker(*args) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def virsh(*args) -> list[str]:
    out = subprocess.run(["virsh", "-q", "-c", "qemu:///system", *args], capture_output=True, text=True,
                         check=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.strip()]


def ssh_masters(port: int) -> list[str]:
    """Processes of a lab's shared SSH connection (labkit.servers.base.control_path) to the
    loopback server on ``port``: none may outlive the labkit command that opened it."""
    return [cmd for _, cmd in process_cmdlines()
            if "ssh" in cmd and "/run/labkit/ssh-" in cmd and f"-p {port}" in cmd]


def recap(stdout: str) -> dict:
    """The counters of `labkit up`'s recap line; ``{"up_to_date": 1}`` alone when the playbook
    was skipped (nothing changed since the last full run): no counter to assert on then."""
    if re.search(r"^recap: up to date: ", stdout, re.M):
        return {"up_to_date": 1}
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
    # LABKIT_TEST_DEFAULT_LAB (scripts/pytest_ci.py shares the lab between two pytest runs):
    # "keep" leaves it up at the end; "reuse" takes it as it is when it is up, every host
    # running, as a previous run left it (else it is made here as usual), and takes it down at the end
    mode = os.environ.get("LABKIT_TEST_DEFAULT_LAB", "")
    if mode == "reuse" and _default_lab_running():
        yield {"reused": True}
        down_leftovers()
        return
    run("images", "build", "debian:11", "debian:12", "debian:13", "busybox")
    run("box", "build")
    down_leftovers()
    interrupted = interrupt_up_during_vm_creation()
    t0 = time.monotonic()
    first = run("up")
    info = {"first": first, "first_seconds": time.monotonic() - t0, "interrupted": interrupted}
    yield info
    if mode != "keep":
        down_leftovers()


def _default_lab_running() -> bool:
    """The default lab is up: every planned host there and running (`labkit status`)."""
    p = run("status", "--json", check=False)
    if p.returncode != 0:
        return False
    st = json.loads(p.stdout)
    return bool(st["hosts"]) and not st["missing"] and all(h["state"] == "running" for h in st["hosts"])


def vm_as_lab_server(name: str = "server-2") -> dict:
    """Inventory variables that make the default lab's VM a lab server (its ssh settings)."""
    from labkit import api
    from labkit.vm import vms

    cfg = vms.read_ssh_config(api.ssh_config("demo"))
    return {name: {"ansible_host": cfg["HostName"], "ansible_port": int(cfg.get("Port", 22)),
                   "ansible_user": cfg["User"], "ansible_ssh_private_key_file": cfg["IdentityFile"],
                   "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": True,
                   "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}}


# The isolation tests' probe, for a host with Python (a VM, the lab server): `python3 -c PROBE
# TARGETS_JSON WAIT` prints {key: "open NAME" | "timeout" | "refused" | "error: ..."} for each
# target [key, address, port]; every listener answers GET /who with its one-word name.
PROBE = r"""
import json, socket, sys, threading
out = {}
def one(key, ip, port):
    try:
        s = socket.create_connection((ip, port), timeout=float(sys.argv[2]))
    except socket.timeout:
        out[key] = "timeout"
        return
    except ConnectionRefusedError:
        out[key] = "refused"
        return
    except OSError as e:
        out[key] = "error: %s" % e
        return
    try:
        s.settimeout(10)
        s.sendall(b"GET /who HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        out[key] = ("open " + data.decode(errors="replace").strip().splitlines()[-1]) if data.strip() else "open"
    except OSError as e:
        out[key] = "open (%s)" % e
    finally:
        s.close()
threads = [threading.Thread(target=one, args=t) for t in json.loads(sys.argv[1])]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
"""


def vm_who_listener(name: str, unit: str, port: int) -> str:
    """A shell command for a lab VM: serve /who (the host's ``name``) on ``port`` with Python's
    http.server as systemd unit ``unit``, and return once the port is bound. systemd-run returns
    when the unit starts, before Python (slow under emulation) listens."""
    return (f"sudo mkdir -p /srv/who && echo {name} | sudo tee /srv/who/who >/dev/null && "
            f"sudo systemd-run --unit={unit} --collect python3 -m http.server {port} "
            "--bind 0.0.0.0 --directory /srv/who && "
            f"for i in $(seq 240); do ss -Hltn 'sport = :{port}' | grep -q . && exit 0; sleep 0.5; done; "
            f"systemctl status {unit}; exit 1")


def nc_outcome(rc: int, text: str) -> str:
    """A BusyBox `nc` probe's outcome (what it printed, and its exit code), named as PROBE names
    them: nc says "timed out" or "Connection refused"; a connection that answers prints the HTTP
    reply, whose last word is the listener's name."""
    text = text.strip()
    if "HTTP/1." in text:
        return "open " + text.split()[-1]
    if "timed out" in text:
        return "timeout"
    if "refused" in text:
        return "refused"
    if rc == 0:  # connected; the peer closed without an HTTP reply
        return "open"
    return f"error: rc={rc} {text}"


@contextlib.contextmanager
def local_user(name: str):
    """An ordinary local user of this machine (no home), made for the block when missing and
    then removed. Yields the name."""
    made = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True)
        made = True
    try:
        yield name
    finally:
        if made:
            subprocess.run(["userdel", name], capture_output=True)


def bundle_digest(created: subprocess.CompletedProcess) -> str:
    """The digest `labkit bundle create` printed (what `prepare` and `bundle load` require)."""
    m = re.search(r"^bundle digest: (sha256:[0-9a-f]{64})$", created.stdout, re.M)
    assert m, created.stdout
    return m[1]


def write_inventory(path, servers: dict) -> None:
    path.write_text(json.dumps({"all": {"children": {"lab_servers": {"hosts": servers}}}}))


@pytest.fixture(scope="session")
def vm_server(default_lab, tmp_path_factory):
    """The default lab's VM made a second lab server (``server-2``) by `labkit prepare`, with a
    bundle of BusyBox's image (checksummed; the Debian packages and wheels: test_58), prepared
    twice: test_55 checks both runs, test_56 puts a classroom of two servers on it. The image
    is removed from the VM's engine first, so that the first run has it to load."""
    from labkit import api

    d = tmp_path_factory.mktemp("vmserver")
    lab = d / "lab.yml"
    lab.write_text("name: srv\nstudents: [a]\ncontainers: [busybox]\nvm: {enabled: false}\n")
    created = run("bundle", "create", "-f", str(lab), "--no-debs", "--no-wheels", str(d / "b"))
    digest = bundle_digest(created)
    inv = d / "hosts.yml"
    write_inventory(inv, vm_as_lab_server("server-2"))
    subprocess.run(["ssh", "-F", str(api.ssh_config("demo")), "labkit-demo-s01-vm",
                    "sudo docker rmi -f labkit/busybox:1.35 >/dev/null 2>&1; true"],
                   capture_output=True, text=True, timeout=300, check=True)
    prepare = ("prepare", "-i", str(inv), "--bundle", str(d / "b"), "--bundle-digest", digest)
    first = run(*prepare)
    second = run(*prepare)
    return {"bundle": d / "b", "digest": digest, "inventory": inv, "first": first, "second": second}


@contextlib.contextmanager
def loopback_server(d: Path, port: int, name: str):
    """This machine as a remote lab server ``name``: its own sshd on 127.0.0.1:``port`` with a
    host key and root's key made for the test only (in ``d``), until the block ends. Yields the
    inventory path (``d/hosts.yml``), the ssh command line that reaches it and the sshd process. Needs root and
    openssh-server (scripts/test.sh installs it)."""
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        pytest.skip("needs root and openssh-server (scripts/test.sh installs it)")
    for key in ("hostkey", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "id.pub").read_text())
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nAuthorizedKeysFile {d}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "StrictModes no\nUsePAM no\nPidFile none\nSubsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))
    try:
        ssh = ["ssh", "-p", str(port), "-i", str(d / "id"), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "root@127.0.0.1"]
        deadline = time.monotonic() + 30
        while subprocess.run(ssh + ["true"], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, (d / "sshd.log").read_text()
            time.sleep(0.3)
        inv = d / "hosts.yml"
        write_inventory(inv, {name: {"ansible_host": "127.0.0.1", "ansible_port": port, "ansible_user": "root",
                                     "ansible_ssh_private_key_file": str(d / "id"),
                                     "ansible_python_interpreter": "/usr/bin/python3",
                                     "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                                                                "-o UserKnownHostsFile=/dev/null"}})
        yield {"inv": inv, "ssh": ssh, "sshd": sshd}
    finally:
        sshd.terminate()
        sshd.wait(10)


def podman(*args: str, user: str = "") -> subprocess.CompletedProcess:
    """Podman's CLI on this machine as root, or as a rootless user (with the HOME and XDG_RUNTIME_DIR of a
    login session, as labkit's wrapper gives it)."""
    pre = ["podman"]
    if user:
        pw = pwd.getpwnam(user)
        pre = ["runuser", "-u", user, "--", "env", f"HOME={pw.pw_dir}", f"XDG_RUNTIME_DIR=/run/user/{pw.pw_uid}",
               "TMPDIR=/var/tmp", "podman"]
    return subprocess.run([*pre, *args], capture_output=True, text=True, timeout=120, cwd="/")


@contextlib.contextmanager
def podman_user(name: str, first_subid: int):
    """A non-root user for rootless Podman on this machine (a lab server's, local or reached over
    SSH), made for the block when missing (Debian's useradd gives it subuid/subgid ranges; else
    65536 ids from ``first_subid``) and then removed with its home, store, runtime folder and
    role lab_podman's wrapper. Yields the name."""
    assert shutil.which("podman"), "Podman is not installed: bash scripts/setup.sh"
    made = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
        made = True
    for f in ("/etc/subuid", "/etc/subgid"):
        if not any(ln.split(":")[0] == name for ln in Path(f).read_text().splitlines()):
            ids = f"{first_subid}-{first_subid + 65535}"
            subprocess.run(["usermod", "--add-subuids" if f.endswith("uid") else "--add-subgids", ids, name],
                           check=True)
    try:
        yield name
    finally:
        if made:
            uid = pwd.getpwnam(name).pw_uid
            # rootless Podman's pause process (it keeps the user namespace): ended by its own pid file
            pid_file = Path(f"/run/user/{uid}/libpod/tmp/pause.pid")
            if pid_file.is_file():
                try:
                    os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
                except (ValueError, ProcessLookupError):
                    pass
                time.sleep(0.5)
            subprocess.run(["userdel", "-r", name], capture_output=True)
            shutil.rmtree(f"/run/user/{uid}", ignore_errors=True)
            shutil.rmtree(f"/usr/local/libexec/labkit/podman-as/{name}", ignore_errors=True)  # role lab_podman's


@pytest.fixture(scope="session")
def default_facts(default_lab):
    return json.loads(run("facts", "--json").stdout)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import socket
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {timeout} s")


@contextlib.contextmanager
def serving(lab_args: list[str], log_path: Path):
    """`labkit serve` of a lab (``lab_args``: -f FILE or --lab NAME) on two free ports, until the
    block ends (SIGTERM, then its exit code is checked). Yields {ssh_port, https_port, proc}."""
    ssh_port, https_port = free_port(), free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen(labkit_cmd() + ["serve", *lab_args, "--bind", "127.0.0.1", "--ssh-port", str(ssh_port),
                                            "--https-port", str(https_port)], stdout=log, stderr=log, text=True)
    try:
        wait_port(ssh_port, proc)
        wait_port(https_port, proc)
        yield {"ssh_port": ssh_port, "https_port": https_port, "proc": proc, "log": log_path}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = None
        log.close()
        assert rc == 0, f"labkit serve did not stop cleanly on SIGTERM (exit {rc}): {log_path.read_text()[-2000:]}"


def openssh(door: dict, user: str, *args: str, password: str | None = None, key: Path | None = None,
            tool: str = "ssh", stdin: str | None = None, known_hosts: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """OpenSSH's ``tool`` (ssh, scp, sftp) to the gate as ``user``: with ``password`` (through
    SSH_ASKPASS, no key, no agent) or with ``key`` only."""
    port_flag = "-p" if tool == "ssh" else "-P"
    with tempfile.TemporaryDirectory() as d:
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        opts = ["-o", "ConnectTimeout=30", "-o", "IdentityAgent=none", "-o", "LogLevel=ERROR",
                "-o", "NumberOfPasswordPrompts=1"]
        opts += (["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"] if known_hosts else
                 ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        if key is not None:
            opts += ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "PreferredAuthentications=publickey"]
        else:
            askpass = Path(d) / "askpass"
            askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
            askpass.chmod(0o700)
            env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
            opts += ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]
        target = [f"{user}@127.0.0.1"] if tool == "ssh" else []
        argv = [tool, port_flag, str(door["ssh_port"]), *opts, *target, *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                              input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


DOOR_LAB = """\
name: door
students: [s01, s02, s03, s04]
containers: [debian:12, busybox]
vm: {{enabled: false}}
access:
  idle_timeout: 20
  ssh_keys: {{s01: "{key}"}}
"""


@pytest.fixture(scope="session")
def door_lab(tmp_path_factory):
    """A containers-only lab of four students (s01..s04; s03 is revoked by a test, s04 locked
    out by the throttling test), up, with its handout read (the passwords, shown once) and
    `labkit serve` running for it on free ports on 127.0.0.1. s01 also has an SSH key
    (``key``: the private key file)."""
    d = tmp_path_factory.mktemp("door")
    key = d / "s01_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "s01@laptop", "-f", str(key)], check=True)
    lab = d / "door.yml"
    lab.write_text(DOOR_LAB.format(key=key.with_suffix(".pub").read_text().strip()))
    run("images", "build", "debian:12", "busybox")
    down_leftovers("-f", str(lab))
    run("up", "-f", str(lab), "--no-facts")
    handout = json.loads(run("access", "-f", str(lab), "--format", "json").stdout)
    passwords = {s["student"]: s["password"] for s in handout["students"]}
    try:
        with serving(["-f", str(lab)], d / "serve.log") as srv:
            yield {"lab": str(lab), "dir": d, "passwords": passwords, "handout": handout, "key": key, **srv}
    finally:
        down_leftovers("-f", str(lab))
