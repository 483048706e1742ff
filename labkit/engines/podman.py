"""The Podman engine: its CLI, as root (rootful) or as a lab server's user (rootless).

labkit makes Podman's containers with Ansible (role ``lab_podman``: containers.podman's
modules; the hosts are reached with its ``podman`` connection). This module is what labkit
itself reads from Podman on this machine (``status``, ``facts``, ``verify``, ``shell``,
``down``'s counts, measurements), through the same CLI and, for a rootless user, the same
way of becoming that user as the role's wrapper: ``runuser`` with the user's ``HOME`` and
``XDG_RUNTIME_DIR`` (there is no systemd login session here to set them). On a remote lab
server every call goes through ``labkit.servers.base.podman_wrapper`` (that server's Podman over
its SSH); its rows carry the wrapper as ``podman_executable``, as Docker's carry ``docker_host``.

The engine contract (also what ``labkit.engines.lxc`` provides), functions of a module named
in ``labkit.engine.OTHER_ENGINES``:

- ``hosts(lab, students, server, users)``: the lab's containers on ``server`` by the label
  ``labkit.lab``, whatever their state, as rows (name, role, student, distro, state, image,
  spec, server, local, engine, user); ``users`` says whose stores to read ('' is root's).
- ``networks(lab, server, users)``: the lab's network names there (by label).
- ``exec_argv(row, argv, user=None, workdir=None, interactive=False)``: the command line
  that runs ``argv`` in the container of ``row`` (``labkit shell``, facts).
- ``measure(row)``: create-to-ready seconds, memory and image size, or None.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from labkit.engines import capabilities
from labkit.engines.base import CheckRow, HostRow, Log, each_measured
from labkit.engines.capabilities import Capabilities
from labkit.engines.cgroup import cgroup_memory
from labkit.errors import EngineError
from labkit.names import network as network_name
from labkit.paths import lab_dir, session_env
from labkit.servers import base as servers
from labkit.servers.base import Server

INIT_PATH = "/usr/bin/tini-static"  # role lab_podman's lab_podman_init_path: the init of init: tini
WRAPPER_DIR = "/usr/local/libexec/labkit/podman-as"   # role lab_podman: WRAPPER_DIR/<user>/podman
START_HINT = "install Podman: `bash scripts/setup.sh` (apt: podman, uidmap, slirp4netns); `labkit doctor` checks"


def installed() -> bool:
    return shutil.which("podman") is not None


def runtime_dir(user: str) -> str:
    """The user's XDG_RUNTIME_DIR (made here when missing: no systemd-logind makes it)."""
    pw = pwd.getpwnam(user)
    d = Path(f"/run/user/{pw.pw_uid}")
    if not d.is_dir() and os.geteuid() == 0:
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, pw.pw_uid, pw.pw_gid)
        d.chmod(0o700)
    return str(d)


def podman(user: str = "", interactive: bool = False) -> list[str]:
    """The argv prefix of Podman's CLI: root's, or (rootless) as ``user``. ``interactive`` (a
    terminal session, ``labkit shell``): ``runuser --pty`` gives the user's processes a
    terminal of their own, so none of them holds the caller's, where a TIOCSTI ioctl would
    type commands for root once the session ends."""
    if not user:
        session_env()  # an ordinary account's own store: one runtime folder for labkit and its Ansible
        return ["podman"]
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise EngineError(f"rootless Podman: no user '{user}' on this lab server",
                          f"create it (`useradd -m -s /bin/sh {user}`) with /etc/subuid and /etc/subgid entries; "
                          "`labkit doctor` checks") from None
    return ["runuser", *(["--pty"] if interactive else []), "-u", user, "--", "env", f"HOME={pw.pw_dir}",
            f"XDG_RUNTIME_DIR={runtime_dir(user)}", "TMPDIR=/var/tmp", "podman"]


def run(args: list[str], user: str = "", timeout: int = 120, cli: list[str] | None = None) -> str:
    """Run ``podman ARGS`` (as ``user``; ``cli``: another Podman CLI, a remote lab server's
    wrapper); its stdout, or EngineError naming the command."""
    if cli is None and not installed():
        raise EngineError("Podman is not installed on this machine", START_HINT)
    cmd = [*(cli or podman(user)), *args]
    try:
        # no terminal for a rootless user's Podman: no standard input, and a session of its own
        # (no controlling terminal to type commands into with TIOCSTI)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL,
                           start_new_session=True)
    except subprocess.TimeoutExpired:
        raise EngineError(f"Podman{' (rootless, ' + user + ')' if user else ''} did not answer within "
                          f"{timeout} s: podman {' '.join(args)}", START_HINT) from None
    if p.returncode != 0:
        raise EngineError(f"podman {' '.join(args)}{' (as ' + user + ')' if user else ''} failed: "
                          f"{p.stderr.strip()[-400:]}", START_HINT if cli is None else REMOTE_HINT)
    return p.stdout


REMOTE_HINT = "prepare the lab server with `labkit prepare -i INVENTORY --engine podman`; `labkit doctor` checks this machine only"
# a remote store that cannot answer at all: no podman there (127), no such rootless user (125)
_ABSENT = (125, 127)


def _stores(lab: str, server: Server | None, users: Sequence[str]) -> list[tuple[str, list[str] | None]]:
    """Each store of ``users`` that exists on ``server``, with the CLI that reaches it: this
    machine's (None) or, on a remote lab server, the wrapper that runs it there over SSH."""
    if server is not None and not getattr(server, "local", True):
        out: list[tuple[str, list[str] | None]] = []
        for user in users:
            cli = [podman_wrapper(lab, server, user)]
            p = subprocess.run([*cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True,
                               timeout=120, cwd="/")
            if p.returncode in _ABSENT:
                continue
            out.append((user, cli))
        return out
    if not installed():
        return []
    return [(u, None) for u in users if not u or _user_exists(u)]


def _state(c: dict) -> str:
    # `podman ps --format json` gives State as a word (running, exited, created, ...)
    st = str(c.get("State", "")).lower()
    return "running" if st == "running" else (st or "unknown")


def hosts(lab: str, students: Sequence[str] | None, server: Server, users: Sequence[str]) -> list[HostRow]:
    out: list[HostRow] = []
    for user, cli in _stores(lab, server, users):
        rows = json.loads(run(["ps", "-a", "--filter", f"label=labkit.lab={lab}", "--format", "json"], user, cli=cli)
                          or "[]")
        for c in rows:
            lb = c.get("Labels") or {}
            if students and lb.get("labkit.student") not in students:
                continue
            name = (c.get("Names") or [c.get("Id", "")[:12]])[0]
            out.append(HostRow(
                name=name, role=lb.get("labkit.role", "container"), student=lb.get("labkit.student", ""),
                distro=lb.get("labkit.distro", ""), state=_state(c), image=plain_image(c.get("Image", "")),
                spec=f"podman://{name}", server=server.name, local=server.local, engine="podman",
                user=user, id=c.get("Id", "") or "", init=lb.get("labkit.init", "none"),
                # a remote lab server's: the wrapper that runs its Podman over SSH (as docker_host for Docker)
                via={"podman_executable": cli[0]} if cli else {}))
    return out


def plain_image(ref: str) -> str:
    """An image as the plan names it: Podman stores a loaded ``labkit/debian:12`` as
    ``localhost/labkit/debian:12`` (a registry host with a port, ``localhost:5000/``, stays)."""
    return ref[len("localhost/"):] if ref.startswith("localhost/") else ref


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def networks(lab: str, server: Server, users: Sequence[str]) -> list[str]:
    out: list[str] = []
    for user, cli in _stores(lab, server, users):
        text = run(["network", "ls", "--filter", f"label=labkit.lab={lab}", "--format", "{{.Name}}"], user, cli=cli)
        out += [ln.strip() for ln in text.splitlines() if ln.strip()]
    return out


def exec_argv(row: Mapping[str, Any], argv: list[str], user: str | None = None, workdir: str | None = None,
              interactive: bool = False, terminal: bool | None = None) -> list[str]:
    """``terminal``: the caller's standard input is a terminal (None: ask ``sys.stdin``), which
    the command inherits; a rootless user's Podman then gets a terminal of its own (``runuser
    --pty``), interactive or not, never the caller's."""
    if terminal is None:
        terminal = bool(sys.stdin and sys.stdin.isatty())
    who = (["-u", user] if user else []) + (["-w", workdir] if workdir else [])
    return [*_cli(row, interactive or terminal), "exec", "-it" if interactive else "-i", *who, row["name"], *argv]


def _cli(row: Mapping[str, Any], interactive: bool = False) -> list[str]:
    """The Podman CLI of a row's store: on a remote lab server, the wrapper that reaches it."""
    return [row["podman_executable"]] if row.get("podman_executable") else podman(row.get("user", ""), interactive)


def uid_map(row: Mapping[str, Any]) -> str:
    """The container's user namespace as /proc/1/uid_map says it ('0 0 4294967295': none)."""
    try:
        out = subprocess.run(exec_argv(row, ["cat", "/proc/1/uid_map"]), capture_output=True, text=True,
                             timeout=30, cwd="/").stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return "; ".join(" ".join(ln.split()) for ln in out.splitlines() if ln.strip())


def measure(row: Mapping[str, Any]) -> dict | None:
    """Create-to-ready seconds (Podman's own timestamps), memory and image size, as
    ``labkit.engines.docker.container`` gives Docker's."""
    user = row.get("user", "")
    cli = [row["podman_executable"]] if row.get("podman_executable") else None
    try:
        info = json.loads(run(["inspect", "--type", "container", row["name"]], user, cli=cli))[0]
        st = info.get("State") or {}
        ready = _ts(st["StartedAt"]) - _ts(info["Created"])
        if not st.get("Running"):
            mem, how = None, "not measured: not running"
        elif cli:  # its processes and cgroup are on the remote lab server: Podman's own count
            mem, how = remote_memory(row["name"], user, cli)
        else:
            mem, how = memory(int(st.get("Pid") or 0))
        img = json.loads(run(["image", "inspect", info.get("Image", "")], user, cli=cli))[0]
        return {"host": row["name"], "role": "container", "ready_seconds": round(max(ready, 0.0), 3),
                "ready_how": "engine: created -> started", "memory_bytes": mem, "memory_how": how,
                "disk_bytes": int(img.get("Size") or 0), "disk_how": "image size", "engine": "podman",
                "container_id": info.get("Id"), "started_at": st.get("StartedAt")}
    except (EngineError, KeyError, ValueError, IndexError):
        return None


def remote_memory(name: str, user: str, cli: list[str]) -> tuple[int | None, str]:
    """A container's memory on a remote lab server, as ``podman stats`` counts it there, or
    where stats has no cgroup to read (rootless on cgroup v1) its processes' resident memory
    (``podman top NAME rss``, KiB per process)."""
    try:
        rows = json.loads(run(["stats", "--no-stream", "--no-reset", "--format", "json", name], user, cli=cli) or "[]")
        return parse_size(str(rows[0]["mem_usage"]).split("/")[0]), "podman stats on the lab server"
    except (EngineError, ValueError, IndexError, KeyError, TypeError):
        pass
    try:
        kib = [int(w) for w in run(["top", name, "rss"], user, cli=cli).split()[1:]]
        return sum(kib) * 1024, "resident memory of its processes (podman top on the lab server)"
    except (EngineError, ValueError):
        return None, "not measured: neither podman stats nor podman top answered on the lab server"


def parse_size(text: str) -> int:
    """Podman's human sizes (``606.2kB``, ``1.5MB``, ``2GiB``, ``512B``) as bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([kMGT]?i?B)\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    unit = m.group(2)
    base = 1024 if "i" in unit else 1000
    return int(float(m.group(1)) * base ** " kMGT".index(unit[0] if unit[0] != "B" else " "))


def _ts(s: str) -> float:
    """Podman's timestamps (2026-11-29T05:40:01.123456789Z, or with +00:00) as seconds."""
    from datetime import datetime

    s = s.strip().replace("Z", "+00:00")
    head, tz = (s[:-6], s[-6:]) if s[-6] in "+-" else (s, "")
    if "." in head:
        head, frac = head.split(".", 1)
        head = f"{head}.{(frac + '000000')[:6]}"
    return datetime.fromisoformat(head + tz).timestamp()


def memory(pid: int) -> tuple[int | None, str]:
    """The container's memory: its cgroup's usage less inactive cache (as Docker's), or, where it
    has no memory cgroup of its own (rootless on cgroup v1), its processes' resident memory."""
    if pid <= 0:
        return None, "not measured: no process"
    if not Path(f"/proc/{pid}").is_dir():
        return None, "not measured: the process is gone"
    got = cgroup_memory(pid, "libpod")
    if got is not None:
        return got
    # no cgroup of its own: the resident memory of every process in its PID namespace
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None, "not measured: the process is gone"
    rss = 0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if os.readlink(p / "ns" / "pid") != ns:
                continue
            for ln in (p / "status").read_text().splitlines():
                if ln.startswith("VmRSS:"):
                    rss += int(ln.split()[1]) * 1024
        except OSError:
            continue
    return rss, "resident memory of its processes (no cgroup of its own: rootless on cgroup v1)"


# ------------------------------------------------------------------ doctor

SETUP_FIX = "`bash scripts/setup.sh` (apt-get install podman uidmap slirp4netns containernetworking-plugins runc tini)"


def _ids(path: str, user: str) -> int:
    """How many subordinate ids /etc/subuid (or subgid) gives ``user``."""
    n = 0
    try:
        for ln in Path(path).read_text().splitlines():
            parts = ln.strip().split(":")
            if len(parts) == 3 and parts[0] in (user, str(pwd.getpwnam(user).pw_uid)):
                n += int(parts[2])
    except (OSError, ValueError, KeyError):
        return 0
    return n


def checks(users: list[str]) -> list[tuple[str, str, str, str]]:
    """What a lab with Podman containers needs here (``users``: '' for rootful, each rootless
    user): (name, ok|warn|fail, detail, fix). ``fail`` where ``labkit up`` would fail."""
    out: list[tuple[str, str, str, str]] = []
    if not installed():
        return [("podman", "fail", "Podman is not installed", SETUP_FIX)]
    try:
        info = json.loads(run(["info", "--format", "json"], timeout=60))
    except (EngineError, ValueError) as e:
        return [("podman", "fail", f"`podman info` fails: {getattr(e, 'message', e)}", SETUP_FIX)]
    host = info.get("host") or {}
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    runtime = (host.get("ociRuntime") or {}).get("name", "?")
    out.append(("podman", "ok", f"Podman {(info.get('version') or {}).get('Version', '?')}: runtime {runtime}, "
                f"cgroup {host.get('cgroupVersion', '?')} through {host.get('cgroupManager', '?')}, "
                f"network {host.get('networkBackend', '?')}", ""))
    if not v2 and runtime == "crun":
        out.append(("podman runtime", "fail", "crun cannot start containers on this cgroup v1/hybrid machine "
                    "(\"cgroups in hybrid mode not supported\")", "`bash scripts/setup.sh` (runtime = \"runc\" in "
                    "/etc/containers/containers.conf.d/50-labkit.conf)"))
    conf = Path("/etc/containers/containers.conf.d/50-labkit.conf")
    hard = _hard_nofile()
    if hard < 1048576 and not (conf.is_file() and "default_ulimits" in conf.read_text()):
        out.append(("podman ulimits", "fail", f"this machine's open-files hard limit is {hard}, below Podman's default "
                    "1048576: containers fail with \"setrlimit RLIMIT_NOFILE: Operation not permitted\"",
                    f"`bash scripts/setup.sh` (default_ulimits in {conf})"))
    if not Path(INIT_PATH).is_file():  # init: tini (the default): Podman's --init-path
        out.append(("podman init", "fail", f"{INIT_PATH} is missing: containers with init: tini (the default) "
                    "cannot start", "apt-get install tini (`bash scripts/setup.sh` does)"))
    for user in [u for u in users if u]:
        out += _rootless_checks(user, v2)
    return out


def _hard_nofile() -> int:
    import resource

    h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 30 if h == resource.RLIM_INFINITY else int(h)


def _rootless_checks(user: str, v2: bool) -> list[tuple[str, str, str, str]]:
    name = f"rootless podman ({user})"
    if not _user_exists(user):
        return [(name, "fail", f"no user '{user}' on this machine",
                 f"`useradd -m -s /bin/sh {user}` (Debian's useradd adds /etc/subuid and /etc/subgid entries)")]
    out = []
    sub = {f: _ids(f"/etc/{f}", user) for f in ("subuid", "subgid")}
    bad = [f for f, n in sub.items() if n < 65536]
    fix_ids = f"`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}` (a range no other user has)"
    out.append((f"{name}: subuid/subgid", "fail" if bad else "ok",
                f"{user} has {sub['subuid']} subordinate uids, {sub['subgid']} gids"
                + (f" (under 65536 in /etc/{', /etc/'.join(bad)})" if bad else ""), fix_ids if bad else ""))
    tools = []
    for tool in ("newuidmap", "newgidmap"):
        p = shutil.which(tool)
        tools.append(f"{tool} missing" if not p else
                     f"{tool} not setuid root" if not (os.stat(p).st_mode & 0o4000 and os.stat(p).st_uid == 0) else "")
    tools = [t for t in tools if t]
    out.append((f"{name}: newuidmap", "fail" if tools else "ok", "; ".join(tools) or "newuidmap, newgidmap setuid root",
                "apt-get install uidmap" if tools else ""))
    tun = Path("/dev/net/tun")
    tun_ok = tun.exists() and (tun.stat().st_mode & 0o006) == 0o006
    slirp = shutil.which("slirp4netns")
    net_bad = ([] if slirp else ["slirp4netns missing"]) + ([] if tun_ok else ["/dev/net/tun not usable by users"])
    out.append((f"{name}: networking", "fail" if net_bad else "ok",
                "; ".join(net_bad) or "slirp4netns and /dev/net/tun for the user's own network namespace",
                ("apt-get install slirp4netns; " if not slirp else "") + ("`chmod 0666 /dev/net/tun` (setup.sh does)"
                                                                         if not tun_ok else "") if net_bad else ""))
    if v2:
        uid = pwd.getpwnam(user).pw_uid
        d = Path(f"/sys/fs/cgroup/user.slice/user-{uid}.slice/user@{uid}.service/cgroup.controllers")
        have = set(d.read_text().split()) if d.is_file() else set()
        missing = {"memory", "pids", "cpu"} - have
        out.append((f"{name}: cgroup delegation", "warn" if missing else "ok",
                    f"controllers delegated to {user}: {', '.join(sorted(have)) or 'none'}"
                    + (f"; without {', '.join(sorted(missing))} the lab's limits are not applied" if missing else ""),
                    "delegate them (systemd: `Delegate=memory pids cpu` for user@.service)" if missing else ""))
    else:
        out.append((f"{name}: cgroup delegation", "warn",
                    "cgroup v1: nothing can be delegated to a user, so the lab's memory, CPU and PID limits are not "
                    f"applied to {user}'s containers (Podman ignores them there; labkit does not ask)",
                    "boot the lab server with cgroup v2 (systemd.unified_cgroup_hierarchy=1) and delegate memory, "
                    "pids and cpu to the user"))
    try:
        run(["info", "--format", "{{.Host.Security.Rootless}}"], user, timeout=60)
    except EngineError as e:
        out.append((f"{name}: podman info", "fail", e.message[:300], "fix the lines above, then `podman info` as "
                    f"{user} (`runuser -u {user} -- podman info`)"))
    return out


PODMAN_WRAPPERS = "podman-ssh"   # in the lab's folder: <server>/<store>/podman


def podman_wrapper(lab: str, server: Server, user: str = "") -> str:
    """An executable here that runs Podman of ``user``'s store ('' is root's) on the remote lab
    ``server`` over SSH (``labkit.engines.podman_ssh``): the connection plugin's
    ``ansible_podman_executable`` and labkit's own Podman CLI for that server. Written on
    each call (cheap), so a changed inventory takes effect."""
    d = lab_dir(lab) / PODMAN_WRAPPERS / server.name / (user or "_root")
    d.mkdir(parents=True, exist_ok=True)
    ssh = server.ssh_argv()
    # within a labkit command on the lab every call shares one connection (servers.sshshare)
    mux = server.control_path(lab)
    prefix = (["sudo", "-n"] if server.become() else []) + ([f"{WRAPPER_DIR}/{user}/podman"] if user else ["podman"])
    text = (f"#!{sys.executable}\n# labkit: Podman ({user or 'root'}) on lab server {server.name}, over SSH "
            "(labkit/engines/podman_ssh.py)\nimport sys\nfrom labkit.engines.podman_ssh import main\n"
            f"sys.exit(main({ssh!r}, {prefix!r}, sys.argv[1:], {mux!r}))\n")
    return str(servers.write_executable(d / "podman", text))


# ------------------------------------------------------------------ the engine interface

class PodmanEngine:
    """Podman's CLI, rootful or rootless (a user's own store); on a remote lab server through
    ``podman_wrapper`` (that server's Podman over its SSH)."""

    name: ClassVar[str] = "podman"
    caps: ClassVar[Capabilities] = capabilities.ENGINES["podman"]

    def hosts(self, lab: str, students: Sequence[str] | None, server: Server,
              users: Sequence[str]) -> list[HostRow]:
        return hosts(lab, students, server, users)

    def networks(self, lab: str, server: Server, users: Sequence[str]) -> list[dict[str, str]]:
        prefix = network_name(lab, "")
        return [{"name": n, "student": n[len(prefix):] if n.startswith(prefix) else "", "server": server.name,
                 "engine": self.name, "user": user}
                for user in users for n in networks(lab, server, [user])]

    def exec_argv(self, row: HostRow, argv: Sequence[str], *, user: str | None = None,
                  workdir: str | None = None, interactive: bool = False,
                  server: Server | None = None) -> list[str]:
        return exec_argv(row, list(argv), user=user, workdir=workdir, interactive=interactive)

    def probe_argv(self, row: HostRow) -> list[str]:
        return exec_argv(row, ["/bin/sh", "-c"])

    def measure(self, rows: Sequence[HostRow], previous: Mapping[str, dict[str, Any]],
                log: Log) -> list[dict[str, Any]]:
        return each_measured(self.name, rows, measure, log)

    def ansible_hostvars(self, row: HostRow) -> dict[str, Any]:
        hv: dict[str, Any] = {"ansible_connection": "containers.podman.podman", "ansible_host": row.name}
        if row.via.get("podman_executable"):  # a remote lab server's: its Podman over SSH (labkit.engines.podman_ssh)
            hv["ansible_podman_executable"] = row.via["podman_executable"]
        elif row.user:  # rootless: Podman as that user (role lab_podman's wrapper)
            hv["ansible_podman_executable"] = f"{WRAPPER_DIR}/{row.user}/podman"
        return hv

    def mitogen_connection(self, row: HostRow) -> str | None:
        # Mitogen's podman connection runs `podman exec` as the one running labkit: root's
        # containers here, not a rootless user's (a wrapper) nor a remote server's
        hv = self.ansible_hostvars(row)
        return "podman" if "ansible_podman_executable" not in hv else None

    def checks(self, users: Sequence[str]) -> list[CheckRow]:
        return checks(list(users))

    def preflight(self, lab: str, containers: Sequence[Any], servers: Sequence[Server]) -> None:
        """Podman answers on each remote lab server that gets Podman containers; a rootless
        container with init: systemd needs cgroup v2 (a user cannot delegate v1 cgroups)."""
        v1 = not Path("/sys/fs/cgroup/cgroup.controllers").exists()
        here = {sv.name for sv in servers if sv.local}
        rootless_systemd = [c.name for c in containers if c.engine == self.name and c.user and c.init == "systemd"
                            and c.server in here]
        if v1 and rootless_systemd:
            raise EngineError(f"init: systemd in a rootless Podman container needs cgroup v2; this machine has cgroup "
                              f"v1 ({', '.join(rootless_systemd[:3])})",
                              "use rootful Podman (no user:) or Docker for it, or init: tini")
        remote = self.playbook_vars(lab, containers, servers)["labkit_podman_remote"]
        for sv in servers:
            if sv.name not in remote:
                continue
            try:  # root's Podman there (a rootless user's wrapper is written there by `up` itself)
                p: subprocess.CompletedProcess[str] | None = subprocess.run(
                    [podman_wrapper(lab, sv, ""), "version", "--format", "{{.Client.Version}}"],
                    capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired:
                p = None
            if p is None or p.returncode != 0:
                why = "no answer over SSH" if p is None else (p.stderr.strip().splitlines() or [f"rc {p.returncode}"])[-1]
                raise EngineError(f"engine podman: Podman does not answer on lab server {sv.name} ({why})",
                                  "install and set it up there: `labkit prepare -i INVENTORY --podman`")

    def playbook_vars(self, lab: str, containers: Sequence[Any], servers: Sequence[Server]) -> dict[str, Any]:
        """For each remote lab server with Podman containers: per store ('' root's, or a rootless
        user's) the wrapper here that runs that Podman there over SSH, the connection plugin's
        ``ansible_podman_executable`` for those containers (up.yml)."""
        session_env()  # before the playbook: its Podman and labkit's share one runtime folder
        out: dict[str, dict[str, str]] = {}
        by_name = {sv.name: sv for sv in servers}
        for c in containers:
            sv = by_name.get(c.server)
            if c.engine == self.name and sv is not None and not sv.local:
                out.setdefault(sv.name, {})[c.user or ""] = podman_wrapper(lab, sv, c.user or "")
        return {"labkit_podman_remote": out}

    def remove_argv(self, row: HostRow) -> list[str]:
        cli = ([f"{WRAPPER_DIR}/{row.user}/podman"] if row.user else ["podman"]) if not row.local else podman(row.user)
        return [*cli, "rm", "--force", "--volumes", row.name]

    def commit(self, row: HostRow, ref: str, labels: Mapping[str, str]) -> int:
        raise EngineError(f"{row.name}: checkpoints of Podman containers are not supported "
                          "(its lab images come from Docker's store)", "`labkit reset` gives the host a clean start")

    def remove_images(self, server: Server, labels: Mapping[str, str]) -> list[str]:
        return []  # never made (caps.checkpoints)
