"""The LXC engine: unprivileged system containers made by role ``lab_lxc`` (community.general's
``lxc_container``), reached by Ansible with labkit's connection plugin ``labkit_lxc``
(``lxc-attach``; playbooks/connection_plugins), read here with LXC's own tools.

LXC has no labels: role ``lab_lxc`` writes a marker file ``labkit.json`` (lab, student,
distro, image, ...) into each container's folder under ``/var/lib/lxc`` before anything else
of it, and names it as ``labkit.names`` does (``labkit-<lab>-<student>-debian12-lxc``); this
module finds a lab's containers by those markers, whatever state a run left them in.

The containers have no networks of their own: each is a veth on the bridge of the student's
Docker network (role ``lab_network``), so isolation and NAT are the Docker network's.

On a remote lab server every read goes over that server's SSH (``lxc_wrappers`` below):
``labkit.engines.lxc_server`` answers there what this module reads here (it is also what reads here),
and ``lxc-attach`` runs there; its rows carry the two wrappers as ``lxc_attach`` and
``lxc_read``, as Podman's carry ``podman_executable`` and Docker's ``docker_host``.

The engine contract is in ``labkit.engines.podman``'s docstring.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from labkit.engines import capabilities, lxc_layout, lxc_server
from labkit.engines.base import CheckRow, HostRow, Log, each_measured
from labkit.engines.capabilities import Capabilities
from labkit.errors import EngineError, UsageError
from labkit.paths import lab_dir
from labkit.servers import base as servers
from labkit.servers.base import Server

LXC_PATH = Path(lxc_layout.LXC_PATH)
MARKER = lxc_layout.MARKER
IDMAP_BASE = lxc_layout.IDMAP_BASE          # role lab_lxc's lab_lxc_idmap_base: the containers' root on the server
IDMAP_RANGE = lxc_layout.IDMAP_RANGE
START_HINT = "install LXC: `bash scripts/setup.sh` (apt: lxc, python3-lxc, uidmap); `labkit doctor` checks"
_PATH = lxc_server.ATTACH_PATH


def installed() -> bool:
    return shutil.which("lxc-attach") is not None


def missing() -> list[str]:
    """What `labkit up` of a lab with LXC containers lacks here: LXC's tools, newuidmap, the
    `lxc` binding in labkit's Python (community.general's lxc_container, run by this machine
    as a lab server with labkit's Python)."""
    import importlib.util

    out = [t for t in ("lxc-start", "lxc-attach", "newuidmap") if shutil.which(t) is None]
    if importlib.util.find_spec("lxc") is None:
        out.append("the lxc Python binding")
    return out


REMOTE_HINT = "prepare the lab server: `labkit prepare -i INVENTORY --lxc` (lxc, uidmap, python3-lxc, busybox-static, root's id map)"


def marker(name: str, lxc_path: Path = LXC_PATH) -> dict | None:
    return lxc_server.marker(name, str(lxc_path))


def state(name: str) -> str:
    """``running``, ``stopped`` (or another of LXC's states, lowercase)."""
    return lxc_server.state(name)


def read(cli: str, args: list[str], timeout: int = 120) -> Any:
    """Ask ``labkit.engines.lxc_server`` on a remote lab server (``cli``: the server's ``lxc-read``
    wrapper) and return its JSON answer; EngineError naming the request otherwise."""
    try:
        p = subprocess.run([cli, *args], capture_output=True, text=True, timeout=timeout, cwd="/")
    except subprocess.TimeoutExpired:
        raise EngineError(f"LXC on the lab server did not answer within {timeout} s ({' '.join(args)})",
                          REMOTE_HINT) from None
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        raise EngineError(f"reading LXC on the lab server failed ({' '.join(args)}): {why}", REMOTE_HINT)
    try:
        return json.loads(p.stdout)
    except ValueError:
        raise EngineError(f"reading LXC on the lab server ({' '.join(args)}): not JSON: {p.stdout[:200]!r}",
                          REMOTE_HINT) from None


def hosts(lab: str, students: Sequence[str] | None, server: Server, users: Sequence[str],
          lxc_path: Path = LXC_PATH) -> list[HostRow]:
    remote: dict[str, str] = {}
    if server is not None and not getattr(server, "local", True):
        w = lxc_wrappers(lab, server)
        remote = {"lxc_attach": w["attach"], "lxc_read": w["read"]}
        found = read(w["read"], ["scan", lab, *(students or [])])
    else:
        found = lxc_server.scan(lab, list(students) if students else None, str(lxc_path), state_of=state)
    return [HostRow(
        name=f["name"], role=f["marker"].get("role", "container"), student=f["marker"].get("student", ""),
        distro=f["marker"].get("distro", ""), state=f["state"], image=f["marker"].get("image", ""),
        spec=f"lxc://{f['name']}", server=server.name, local=server.local, engine="lxc",
        user="", address=f["marker"].get("address", ""), via=remote) for f in found]


def remote_missing(server: Server) -> list[str]:
    """What the remote lab ``server`` lacks to host LXC containers (``lxc_server.needs`` run
    there by its Python, over its SSH); a list naming the one problem when it cannot be asked."""
    src = lxc_layout.server_source().decode()
    try:
        p = server.run([server.python(), "-", "needs"], timeout=120, input=src)
    except subprocess.TimeoutExpired:
        return ["an answer over SSH (none within 120 s)"]
    if p.returncode != 0:
        return [f"an answer over SSH ({(p.stderr.strip().splitlines() or [f'exit {p.returncode}'])[-1]})"]
    try:
        return list(json.loads(p.stdout))
    except ValueError:
        return [f"an answer over SSH (not JSON: {p.stdout[:200]!r})"]


def networks(lab: str, server: Server, users: list[str]) -> list[str]:
    """None of its own: LXC containers are on the student's Docker network (counted as Docker's)."""
    return []


def _account(row: Mapping[str, Any], user: str) -> tuple[int, int, str]:
    """uid, gid and home of ``user`` in the container, from its own /etc/passwd (on its lab server)."""
    if row.get("lxc_read"):
        got = read(row["lxc_read"], ["account", row["name"], user])
    else:
        got = lxc_server.account(row["name"], user, str(LXC_PATH))
    if isinstance(got, dict):  # its /etc/passwd is the student's: not a regular file, or too large
        raise UsageError(f"cannot read the accounts of {row['name']} (its /etc/passwd): {got.get('error')}",
                         "that file is its root's to change, and labkit reads it only as a regular file: repair it "
                         f"(`labkit shell --root` to that host), or make the container again (`labkit down --student "
                         f"{row.get('student') or 'STUDENT'}`, then `labkit up`)")
    if got:
        return int(got[0]), int(got[1]), str(got[2])
    raise UsageError(f"no user '{user}' in {row['name']}", "`labkit up` makes the student's account")


def exec_argv(row: Mapping[str, Any], argv: list[str], user: str | None = None, workdir: str | None = None,
              interactive: bool = False) -> list[str]:
    """``lxc-attach`` with a clean environment, as ``user`` (root when None) in ``workdir``,
    confined as the container's own processes are (never ``--elevated-privileges``)."""
    home, who = "/root", []
    if user:
        uid, gid, home = _account(row, user)
        who = ["-u", str(uid), "-g", str(gid)]
    env = {"PATH": _PATH, "HOME": home, "USER": user or "root", "LOGNAME": user or "root"}
    if interactive and os.environ.get("TERM"):
        env["TERM"] = os.environ["TERM"]
    # on a remote lab server: the wrapper that runs lxc-attach there over SSH
    cmd = [row.get("lxc_attach") or "lxc-attach", "-n", row["name"], "--clear-env", *who]
    for k, v in env.items():
        cmd += ["-v", f"{k}={v}"]
    cmd.append("--")
    if workdir:
        return [*cmd, "/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", workdir, *argv]
    return [*cmd, *argv]


def probe_argv(row: Mapping[str, Any]) -> list[str]:
    """How the facts' probe runs in an LXC container (the script is the last argument):
    ``lxc_server.probe`` on its lab server, which runs it by the container's ``/bin/sh`` as
    its root, confined (that shell is the student's), then adds the kernel's boot_id beneath
    LXC's own, read without running anything of the container."""
    if row.get("lxc_read"):  # a remote lab server's: labkit's reads there, over its SSH
        return [row["lxc_read"], "probe", row["name"]]
    return [sys.executable, "-m", "labkit.engines.lxc_server", "probe", row["name"]]


def measure(row: Mapping[str, Any]) -> dict | None:
    """Create-to-ready seconds (the marker's creation to init's start), memory (its cgroup)
    and the root file system's size, read on the container's lab server."""
    name = row["name"]
    try:
        m = read(row["lxc_read"], ["measure", name]) if row.get("lxc_read") else lxc_server.measure(name, str(LXC_PATH))
    except EngineError:
        return None
    if not m:
        return None
    started, created = float(m["started"]), float(m.get("created") or 0)
    return {"host": name, "role": "container",
            "ready_seconds": round(max(started - created, 0.0), 3) if created else None,
            "ready_how": "lab_lxc: folder made -> init started", "memory_bytes": m.get("memory"),
            "memory_how": "cgroup usage less inactive cache, as docker stats", "disk_bytes": m.get("disk") or 0,
            "disk_how": "root file system (du)", "engine": "lxc", "container_id": name,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}


# ------------------------------------------------------------------ doctor


def checks() -> list[tuple[str, str, str, str]]:
    """What an LXC lab needs on this machine: (check, status ok|fail|warn, detail, fix)."""
    out = []
    miss = [t for t in ("lxc-start", "lxc-attach", "lxc-info", "newuidmap") if shutil.which(t) is None]
    out.append(("LXC installed", "fail" if miss else "ok",
                f"missing: {', '.join(miss)}" if miss else subprocess.run(
                    ["lxc-start", "--version"], capture_output=True, text=True).stdout.strip(),
                "bash scripts/setup.sh (apt-get install lxc uidmap python3-lxc)"))
    out.append(_binding())
    out.append(_subids())
    out.append(_cgroups())
    out.append(_veth())
    return out


def _binding() -> tuple[str, str, str, str]:
    """community.general's lxc_container imports the `lxc` binding in labkit's own Python
    (the interpreter of this machine as a local lab server)."""
    import importlib.util

    ok = importlib.util.find_spec("lxc") is not None and importlib.util.find_spec("_lxc") is not None
    return ("LXC Python binding", "ok" if ok else "fail",
            "importable by labkit's Python" if ok else "`import lxc` fails in labkit's Python",
            "bash scripts/setup.sh (apt-get install python3-lxc; a .pth in the venv points at it)")


def _subids(files: Sequence[str] = ("/etc/subuid", "/etc/subgid")) -> tuple[str, str, str, str]:
    """root's subordinate ids give every container its own range (lxc_layout.IDMAP: IDMAP_SLOTS
    ranges of IDMAP_RANGE ids from IDMAP_BASE), in one line or several."""
    want = lxc_layout.IDMAP
    bad = [f for f in files if not lxc_server.subids_cover(f, want)]
    last = IDMAP_BASE + IDMAP_RANGE * lxc_layout.IDMAP_SLOTS - 1
    return ("LXC id map", "fail" if bad else "ok",
            f"root is not given all of {IDMAP_BASE}-{last} in {', '.join(bad)}" if bad else
            f"each container its own {IDMAP_RANGE} ids, from {IDMAP_BASE} ({lxc_layout.IDMAP_SLOTS} containers)",
            f"bash scripts/setup.sh (echo {want} >> {' and '.join(bad) or '/etc/subuid'})")


def _cgroups() -> tuple[str, str, str, str]:
    """The controllers the containers' limits use: memory, pids, cpu (v1 or v2)."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists():
        have = set(v2.read_text().split())
        sub = Path("/sys/fs/cgroup/cgroup.subtree_control")
        have &= set(sub.read_text().split()) if sub.exists() else have
    else:
        have = {d.name for d in Path("/sys/fs/cgroup").iterdir() if d.is_dir()} if Path("/sys/fs/cgroup").is_dir() else set()
        have = {c for d in have for c in d.split(",")}
    miss = sorted({"memory", "pids", "cpu"} - have)
    return ("LXC cgroups", "fail" if miss else "ok",
            f"controllers not delegated: {', '.join(miss)}" if miss else
            ("cgroup v2" if v2.exists() else "cgroup v1") + ": memory, pids, cpu",
            "enable the controllers (cgroup v2: echo +memory +pids +cpu > /sys/fs/cgroup/cgroup.subtree_control)")


def _veth() -> tuple[str, str, str, str]:
    """Each container is a veth pair, one end on the student's Docker bridge: without veth in
    the kernel LXC cannot start it (Docker's own containers need it too)."""
    ok = Path("/sys/module/veth").exists() or _veth_works()
    return ("LXC networking", "ok" if ok else "fail",
            "veth pairs onto each student's Docker bridge (no lxc-net, no lxcbr0)" if ok else
            "the kernel cannot make a veth pair (`ip link add ... type veth` fails)",
            "modprobe veth (or a kernel with CONFIG_VETH)")


def _veth_works() -> bool:
    """veth built in (no /sys/module entry): one exists (Docker's containers have them), or a
    pair can be made and removed."""
    if not shutil.which("ip"):
        return False
    p = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True, cwd="/")
    if p.returncode == 0 and p.stdout.strip():
        return True
    name = f"lkdoc{os.getpid() % 100000}"
    made = subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"],
                          capture_output=True, cwd="/").returncode == 0
    if made:
        subprocess.run(["ip", "link", "del", name], capture_output=True, cwd="/")
    return made


LXC_WRAPPERS = "lxc-ssh"   # in the lab's folder: <server>/lxc-attach and <server>/lxc-read


def lxc_wrappers(lab: str, server: Server) -> dict[str, str]:
    """Two executables here for LXC on the remote lab ``server``, over its SSH
    (``labkit.engines.lxc_ssh``): ``attach``, which runs ``lxc-attach`` there (the connection plugin
    labkit_lxc's ``ansible_lxc_attach_executable``, and labkit's shell and probe), and
    ``read``, which answers labkit's reads there (``labkit.engines.lxc_server``). Written on each call
    (cheap), so a changed inventory takes effect."""
    d = lab_dir(lab) / LXC_WRAPPERS / server.name
    d.mkdir(parents=True, exist_ok=True)
    ssh, mux = server.ssh_argv(), server.control_path(lab)
    sudo = ["sudo", "-n"] if server.become() else []
    python = server.python()
    out = {}
    for mode in ("attach", "read"):
        text = (f"#!{sys.executable}\n# labkit: LXC ({mode}) on lab server {server.name}, over SSH "
                "(labkit/engines/lxc_ssh.py)\nimport sys\nfrom labkit.engines.lxc_ssh import main\n"
                f"sys.exit(main({mode!r}, {ssh!r}, {sudo!r}, sys.argv[1:], {mux!r}, {python!r}))\n")
        out[mode] = str(servers.write_executable(d / f"lxc-{mode}", text))
    return out


# ------------------------------------------------------------------ the engine interface

class LxcEngine:
    """LXC's own tools here; on a remote lab server through ``lxc_wrappers`` (``lxc-attach``
    and labkit's reads there, over its SSH)."""

    name: ClassVar[str] = "lxc"
    caps: ClassVar[Capabilities] = capabilities.ENGINES["lxc"]

    def hosts(self, lab: str, students: Sequence[str] | None, server: Server,
              users: Sequence[str]) -> list[HostRow]:
        return hosts(lab, students, server, users)

    def networks(self, lab: str, server: Server, users: Sequence[str]) -> list[dict[str, str]]:
        return []  # none of its own: LXC containers are on the student's Docker network

    def exec_argv(self, row: HostRow, argv: Sequence[str], *, user: str | None = None,
                  workdir: str | None = None, interactive: bool = False,
                  server: Server | None = None) -> list[str]:
        return exec_argv(row, list(argv), user=user, workdir=workdir, interactive=interactive)

    def probe_argv(self, row: HostRow) -> list[str]:
        return probe_argv(row)

    def measure(self, rows: Sequence[HostRow], previous: Mapping[str, dict[str, Any]],
                log: Log) -> list[dict[str, Any]]:
        return each_measured(self.name, rows, measure, log)

    def ansible_hostvars(self, row: HostRow) -> dict[str, Any]:
        # labkit's own connection plugin (playbooks/connection_plugins/labkit_lxc.py)
        hv: dict[str, Any] = {"ansible_connection": "labkit_lxc", "ansible_host": row.name}
        if row.via.get("lxc_attach"):  # a remote lab server's: lxc-attach there over SSH (labkit.engines.lxc_ssh)
            hv["ansible_lxc_attach_executable"] = row.via["lxc_attach"]
        return hv

    def mitogen_connection(self, row: HostRow) -> str | None:
        return None  # labkit's own connection (labkit_lxc): Mitogen's lxc one drives other tools

    def checks(self, users: Sequence[str]) -> list[CheckRow]:
        return checks()

    def preflight(self, lab: str, containers: Sequence[Any], servers: Sequence[Server],
                  installed: Any = None, remote_lacks: Any = None) -> None:
        """LXC with its Python binding is here when some containers go on this machine
        (lxc_container runs with labkit's Python), and each remote lab server that gets some has
        what role lab_lxc needs there (``remote_missing``, read over its SSH); else an
        EngineError (exit 3) naming what is missing where, and the fix."""
        mine = [c for c in containers if c.engine == self.name]
        if not mine:
            return
        local = {sv.name for sv in servers if sv.local}
        here = [c for c in mine if c.server in local]
        lacking = (installed or missing)() if here else []
        if lacking:
            raise EngineError(f"engine lxc: {', '.join(lacking)} missing on this machine ({len(here)} LXC "
                              "container(s) planned)", START_HINT)
        for sv in servers:
            there = [c for c in mine if c.server == sv.name and not sv.local]
            if not there:
                continue
            lacks = (remote_lacks or remote_missing)(sv)
            if lacks:
                raise EngineError(f"engine lxc: lab server {sv.name} lacks {', '.join(lacks)} ({len(there)} LXC "
                                  f"container(s) planned there: {', '.join(c.name for c in there[:3])}"
                                  f"{', ...' if len(there) > 3 else ''})", REMOTE_HINT)

    def playbook_vars(self, lab: str, containers: Sequence[Any], servers: Sequence[Server]) -> dict[str, Any]:
        """For each remote lab server with LXC containers: the wrapper here that runs
        ``lxc-attach`` there over SSH, the ``ansible_lxc_attach_executable`` of labkit's
        connection plugin ``labkit_lxc`` for those containers (up.yml)."""
        by_name = {sv.name: sv for sv in servers}
        out: dict[str, str] = {}
        for c in containers:
            sv = by_name.get(c.server)
            if c.engine == self.name and sv is not None and not sv.local and sv.name not in out:
                out[sv.name] = lxc_wrappers(lab, sv)["attach"]
        return {"labkit_lxc_remote": out}

    def remove_argv(self, row: HostRow) -> list[str]:
        return ["lxc-destroy", "--force", "-P", str(LXC_PATH), "-n", row.name]

    def commit(self, row: HostRow, ref: str, labels: Mapping[str, str]) -> int:
        raise EngineError(f"{row.name}: checkpoints of LXC containers are not supported (LXC has no images)",
                          "`labkit reset` gives the host a clean start")

    def remove_images(self, server: Server, labels: Mapping[str, str]) -> list[str]:
        return []  # never made (caps.checkpoints)
