"""Lab servers from an Ansible inventory, and the way labkit reaches their engines.

The inventory's group ``lab_servers`` lists the servers. A local one (``ansible_connection:
local``) is reached as usual; for a remote one labkit opens an SSH tunnel to its Docker
socket for the length of a command (``ssh -L <lab dir>/docker-<server>-<pid>.sock:/var/run/docker.sock``),
so the docker SDK, Ansible's docker (CLI) connection and the checks reach its containers
without exposing the engine on the network.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from labkit.errors import EngineError, SpecError
from labkit.paths import lab_dir, run_dir
from labkit.servers import sshshare

LOCAL_SOCKET = "unix:///var/run/docker.sock"
# On a remote lab server: labkit's folder (bundle copies, the Vagrant home, the VMs' Vagrant
# folders) and the record `labkit prepare` leaves of its VM stack.
SERVER_HOME = "/var/lib/labkit"
SERVER_FILE = f"{SERVER_HOME}/server.json"


@dataclass
class Server:
    name: str
    local: bool
    hostvars: dict = field(default_factory=dict)
    docker_host: str = LOCAL_SOCKET

    def ssh_argv(self, pin: bool = False) -> list[str]:
        """``ssh`` with this server's inventory settings (user, port, key, common args).

        The server's host key must be known (``~/.ssh/known_hosts``, as for OpenSSH and
        Ansible): ``labkit prepare`` pins it at first contact (``pin``: accept-new), every other
        command refuses a server whose key is unknown or changed. The inventory's own
        ``ansible_ssh_common_args`` come first, so what the instructor set there wins (OpenSSH
        takes an option's first value)."""
        hv = self.hostvars
        argv = ["ssh", *shlex.split(str(hv.get("ansible_ssh_common_args", ""))),
                "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={'accept-new' if pin else 'yes'}",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20", "-p", str(hv.get("ansible_port", 22))]
        if hv.get("ansible_ssh_private_key_file"):
            argv += ["-i", str(hv["ansible_ssh_private_key_file"]), "-o", "IdentitiesOnly=yes"]
        user = hv.get("ansible_user")
        host = hv.get("ansible_host", self.name)
        return argv + [f"{user}@{host}" if user else str(host)]

    def python(self) -> str:
        """The server's Python for labkit's own reads there: the inventory's interpreter, or
        ``python3`` (also for Ansible's ``auto`` discovery)."""
        py = str(self.hostvars.get("ansible_python_interpreter") or "python3")
        return "python3" if py.startswith("auto") else py

    def become(self) -> bool:
        hv = self.hostvars
        return bool(hv.get("ansible_become")) and hv.get("ansible_user") not in (None, "root")

    def remote_argv(self, cmd: list[str], tty: bool = False) -> list[str]:
        """``ssh`` running ``cmd`` on this (remote) server, with sudo when the inventory says become."""
        argv = self.ssh_argv()
        remote = (["sudo", "-n"] if self.become() else []) + cmd
        return argv[:-1] + (["-t"] if tty else []) + [argv[-1], shlex.join(remote)]

    def argv(self, cmd: list[str], tty: bool = False) -> list[str]:
        """The command line that runs ``cmd`` on this server: as it is here, over SSH on a remote one."""
        return list(cmd) if self.local else self.remote_argv(cmd, tty)

    def run(self, cmd: list[str], timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on this server (here, or over SSH: ``argv``), its output captured as text."""
        return subprocess.run(self.argv(cmd), capture_output=True, text=True, timeout=timeout, input=input)

    def proxy_command(self) -> str:
        """An OpenSSH ProxyCommand through this server: how labkit reaches the VMs it hosts."""
        argv = self.ssh_argv()
        return shlex.join(argv[:-1] + ["-W", "%h:%p", argv[-1]])

    def vm_settings(self) -> dict:
        """What ``labkit prepare`` recorded about this server's VM stack (SERVER_FILE):
        accel, emulator_path, vagrant_home, home, box. LabkitError when it cannot host VMs."""
        try:
            p = self.run(["cat", SERVER_FILE], timeout=60)
        except subprocess.TimeoutExpired:
            p = None
        if p is None or p.returncode != 0:
            why = "no answer over SSH" if p is None else (p.stderr.strip().splitlines() or [f"rc {p.returncode}"])[-1]
            raise EngineError(f"lab server {self.name} is not prepared to host the lab's VMs ({SERVER_FILE}: {why})",
                              "make a bundle with the box (`labkit bundle create DIR`) and run "
                              "`labkit prepare -i INVENTORY --bundle DIR`: it installs libvirt, QEMU and "
                              "Vagrant there and adds the box")
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise EngineError(f"lab server {self.name}: {SERVER_FILE} is not JSON",
                              "run `labkit prepare -i INVENTORY --bundle DIR` again") from None

    def control_path(self, lab: str) -> str:
        """The socket of the one SSH connection labkit's Podman and LXC calls to this server
        share for a command (short: a socket path has a hundred bytes at most)."""
        import hashlib

        tag = hashlib.sha1(f"{lab_dir(lab)}\0{self.name}".encode()).hexdigest()[:16]
        return str(run_dir() / f"ssh-{tag}")  # private (0700): never a guessable /tmp path

    def testinfra_spec(self) -> tuple[str, dict]:
        """testinfra host spec and kwargs for the server itself."""
        if self.local:
            return "local://", {}
        hv = self.hostvars
        user = f"{hv['ansible_user']}@" if hv.get("ansible_user") else ""
        spec = f"ssh://{user}{hv.get('ansible_host', self.name)}:{hv.get('ansible_port', 22)}"
        kw = {"ssh_extra_args": f"{hv.get('ansible_ssh_common_args', '')} -o StrictHostKeyChecking=yes -o LogLevel=ERROR"}
        if hv.get("ansible_ssh_private_key_file"):
            kw["ssh_identity_file"] = str(hv["ansible_ssh_private_key_file"])
        return spec, kw


def host_key_error(server: Server, stderr: str) -> EngineError | None:
    """The error to raise when ssh refused ``server`` for its host key (unknown or changed)."""
    if "Host key verification failed" not in stderr and "REMOTE HOST IDENTIFICATION HAS CHANGED" not in stderr:
        return None
    entry = _entry(server)
    if "CHANGED" in stderr:
        return EngineError(
            f"lab server {server.name} ({entry}) answered with another host key than the one pinned in "
            "~/.ssh/known_hosts: a reinstalled server, or someone in between (labkit did nothing there)",
            f"check the server's key on its console (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`); if it is "
            f"the new one, `ssh-keygen -R '{entry}'`, then `labkit prepare -i INVENTORY` pins it again")
    return EngineError(f"lab server {server.name} ({entry}): its host key is not known here (not in ~/.ssh/known_hosts)",
                       "`labkit prepare -i INVENTORY` pins each server's key at first contact (it prints the "
                       "fingerprints: compare them with the servers' own), or add it to ~/.ssh/known_hosts yourself")


def pin_host_keys(servers: list[Server], log: Callable[[str], None]) -> None:
    """Pin each remote server's host key at first contact (``labkit prepare``): an unknown key is
    added to ~/.ssh/known_hosts and its fingerprint printed; a changed one is refused."""
    for s in servers:
        if s.local:
            continue
        known = _known(s)
        argv = s.ssh_argv(pin=True)
        p = subprocess.run(argv + ["true"], capture_output=True, text=True, timeout=60)
        err = host_key_error(s, p.stderr)
        if err:
            raise err
        if p.returncode != 0:
            raise EngineError(f"lab server {s.name}: cannot log in over SSH: "
                              f"{(p.stderr.strip().splitlines() or [f'exit {p.returncode}'])[-1]}",
                              f"check `{shlex.join(argv)} true`")
        pinned = "" if known else _known(s)
        if pinned:
            log(f"lab server {s.name}: host key pinned at first contact (~/.ssh/known_hosts): {pinned}; "
                "compare it with the server's own (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there)")


def _known(server: Server) -> str:
    """The fingerprints ~/.ssh/known_hosts holds for ``server`` ('' when none)."""
    p = subprocess.run(["ssh-keygen", "-l", "-F", _entry(server)], capture_output=True, text=True)
    return "; ".join(ln.split(" ", 2)[-1] for ln in p.stdout.splitlines() if ln and not ln.startswith("#"))


def _entry(server: Server) -> str:
    hv = server.hostvars
    host, port = hv.get("ansible_host", server.name), int(hv.get("ansible_port", 22))
    return str(host) if port == 22 else f"[{host}]:{port}"


def default_servers() -> list[Server]:
    return [Server("localhost", True)]


def from_inventory(inventory: str | Path) -> list[Server]:
    """The hosts of group ``lab_servers`` (with their variables), in inventory order."""
    inv = Path(inventory)
    if not inv.exists():
        raise SpecError(f"{inv}: inventory not found", "see inventories/classroom/ for an example")
    exe = Path(sys.executable).parent / "ansible-inventory"
    p = subprocess.run([str(exe), "-i", str(inv), "--list", "--export"], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise SpecError(f"{inv}: not a valid inventory: {p.stderr.strip().splitlines()[-1] if p.stderr else p.returncode}")
    data = json.loads(p.stdout)

    def members(group: str) -> list[str]:
        g = data.get(group) or {}
        out = list(g.get("hosts", []))
        for child in g.get("children", []):
            out += [h for h in members(child) if h not in out]
        return out

    names = members("lab_servers")
    if not names:
        raise SpecError(f"{inv}: no hosts in group lab_servers", "list the lab servers under lab_servers")
    hostvars = (data.get("_meta") or {}).get("hostvars", {})
    return [Server(n, hostvars.get(n, {}).get("ansible_connection") == "local", hostvars.get(n, {})) for n in names]


def assign(students: list[str], servers: list[Server], previous: dict[str, str] | None = None) -> dict[str, str]:
    """Spread students over servers: keep earlier assignments, give new students to the least loaded."""
    names = [s.name for s in servers]
    out = {st: sv for st, sv in (previous or {}).items() if st in students and sv in names}
    load = {n: sum(1 for v in out.values() if v == n) for n in names}
    for st in students:
        if st not in out:
            target = min(names, key=lambda n: (load[n], names.index(n)))
            out[st] = target
            load[target] += 1
    return {st: out[st] for st in students}


def write_executable(exe: Path, text: str) -> Path:
    """Write ``text`` to the executable ``exe`` unless it says that already (atomically)."""
    if not exe.is_file() or exe.read_text() != text:
        tmp = exe.with_name(f".{exe.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(exe)
    return exe


def open_podman_ssh(lab: str, server: Server) -> None:
    """This labkit command shares one SSH connection for the Podman and LXC wrappers' calls to
    ``server`` until `close_podman_ssh` (with any other command on the lab at the same time)."""
    sshshare.join(server.control_path(lab), open_=True)


def close_podman_ssh(lab: str, server: Server) -> None:
    """This command is done with the shared SSH connection; the last of its users ends it."""
    path = server.control_path(lab)
    sshshare.leave(path, sshshare.exit_argv(server.ssh_argv(), path))


@contextmanager
def engines(lab: str, servers: list[Server], timeout: float = 30) -> Iterator[list[Server]]:
    """Open an SSH tunnel to each remote server's Docker socket; close them on exit."""
    procs, socks = [], []
    try:
        for s in servers:
            if s.local:
                continue
            open_podman_ssh(lab, s)  # the Podman and LXC wrappers' calls share one SSH connection
            # this command's own socket: another labkit command on the lab at the same time
            # (a second `labkit shell`) has its own tunnel
            sock = lab_dir(lab) / f"docker-{s.name}-{os.getpid()}.sock"
            sock.unlink(missing_ok=True)
            socks.append(sock)
            argv = s.ssh_argv()
            cmd = argv[:-1] + ["-N", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
                               "-L", f"{sock}:/var/run/docker.sock", argv[-1]]
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            deadline = time.monotonic() + timeout
            while not sock.exists():
                if p.poll() is not None or time.monotonic() > deadline:
                    err = (p.stderr.read() if p.stderr and p.poll() is not None else "timed out").strip()
                    raise host_key_error(s, err) or EngineError(
                        f"cannot reach the engine of lab server {s.name} over SSH: {err}",
                        f"check `{' '.join(argv)} docker version`; prepare it with `labkit prepare -i ...`")
                time.sleep(0.1)
            s.docker_host = f"unix://{sock}"
        yield servers
    finally:
        for s in servers:
            if not s.local:
                try:
                    close_podman_ssh(lab, s)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        for sock in socks:
            sock.unlink(missing_ok=True)
