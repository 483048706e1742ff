"""``class_view``: the class at a glance, for the dashboard of `labkit serve`: each student's
hosts (state, CPU %, memory) and their last activity at the door.

Cheap enough to be read every 2-3 s for a whole class: one engine listing per lab server (for
Docker, the engine's plain list, not one inspect per container), the cgroup files of this
machine's containers (no stats call: the engine's waits about a second for its next
collection), one ``virsh domstats`` per lab server that runs VMs, and the new lines of the
session log. A host that cannot be measured (a container on a remote lab server, a cgroup not
found, a VM without statistics) has ``None`` there (the page shows '-'), never an error.

CPU is a percentage of one core over the time since the previous reading (the first reading of
a host has none); memory is what ``docker stats`` counts (usage less the inactive file cache)
for a container, the resident memory of its QEMU process for a VM.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from labkit import names
from labkit.access import creds
from labkit.api.discover import engine_scopes, engines, engines_on, vm_hosts
from labkit.engines.base import HostRow
from labkit.lab.spec import Lab
from labkit.servers.base import Server
from labkit.vm import vms

CGROUP = "/sys/fs/cgroup"
_HEX = re.compile(r"[0-9a-f]{64}")
_LXC = re.compile(r"^lxc\.payload\.(.+)$")
REINDEX = 10.0  # seconds: a running container whose cgroup was not found looks again after this


# ------------------------------------------------------------------ cgroups of this machine

@dataclass
class Cgroups:
    """This machine's container cgroups, found by walking the hierarchy (again when a running
    container is new, or still missing after ``REINDEX`` s): a 64-hex id in a folder's
    name (Docker's ``docker/ID`` or ``docker-ID.scope``, Podman's ``libpod-ID``) or LXC's
    ``lxc.payload.NAME`` names it. v1 (memory and cpuacct controllers) and v2 alike."""

    root: str = CGROUP
    v2: bool = False
    memory: str = ""
    cpu: str = ""
    paths: dict[str, str] = field(default_factory=dict)  # id, or "name:" + LXC's name: path under the roots
    tried: dict[str, float] = field(default_factory=dict)  # keys not found: when they were last looked for

    def __post_init__(self) -> None:
        self.v2 = os.path.exists(f"{self.root}/cgroup.controllers")
        if self.v2:
            self.memory = self.cpu = self.root
        else:
            self.memory = f"{self.root}/memory"
            self.cpu = next((f"{self.root}/{d}" for d in ("cpuacct", "cpu,cpuacct", "cpu") if
                             os.path.exists(f"{self.root}/{d}/cpuacct.usage")), f"{self.root}/cpuacct")

    def walk(self) -> None:
        found: dict[str, str] = {}
        stack = [("", 0)]
        while stack:
            rel, depth = stack.pop()
            try:
                with os.scandir(self.memory + rel) as it:
                    subs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for name in subs:
                path = f"{rel}/{name}"
                m = _HEX.search(name)
                lx = _LXC.match(name)
                if m:
                    found.setdefault(m.group(0), path)
                elif lx:
                    found.setdefault("name:" + lx.group(1), path)
                elif depth < 6:
                    stack.append((path, depth + 1))
        self.paths = found

    def find(self, key: str) -> str | None:
        """A new key is looked for at once (a walk), one not found again after ``REINDEX`` s."""
        now = time.monotonic()
        if key not in self.paths and now - self.tried.get(key, -REINDEX) >= REINDEX:
            self.walk()
            if key not in self.paths:
                if len(self.tried) > 10_000:
                    self.tried.clear()
                self.tried[key] = now
        return self.paths.get(key)

    def read(self, key: str) -> tuple[int | None, float | None]:
        """(memory bytes, CPU seconds used so far) of the cgroup named ``key``; None for what
        cannot be read."""
        path = self.find(key)
        if path is None:
            return None, None
        mem: int | None = None
        cpu: float | None = None
        usage_file, inactive = ("memory.current", "inactive_file") if self.v2 else ("memory.usage_in_bytes",
                                                                                      "total_inactive_file")
        try:
            usage = int(Path(self.memory + path, usage_file).read_text())
            cache = 0
            for ln in Path(self.memory + path, "memory.stat").read_text().splitlines():
                k, _, v = ln.partition(" ")
                if k == inactive:
                    cache = int(v)
                    break
            mem = usage - cache if usage > cache else usage
        except (OSError, ValueError):
            self.paths.pop(key, None)  # gone (a reset made it again): found anew next time
        try:
            if self.v2:
                for ln in Path(self.cpu + path, "cpu.stat").read_text().splitlines():
                    if ln.startswith("usage_usec "):
                        cpu = int(ln.split()[1]) / 1e6
                        break
            else:
                cpu = int(Path(self.cpu + path, "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError, IndexError):
            pass
        return mem, cpu


# ------------------------------------------------------------------ VMs

def domstats(text: str) -> dict[str, tuple[int | None, float | None]]:
    """``virsh domstats --raw --cpu-total --balloon``'s output: per domain (memory bytes: the
    QEMU process's resident set, CPU seconds used so far)."""
    out: dict[str, tuple[int | None, float | None]] = {}
    dom = ""
    vals: dict[str, str] = {}

    def flush() -> None:
        if dom:
            rss = vals.get("balloon.rss", "")
            cpu = vals.get("cpu.time", "")
            out[dom] = (int(rss) * 1024 if rss.isdigit() else None, int(cpu) / 1e9 if cpu.isdigit() else None)

    for ln in text.splitlines():
        m = re.match(r"^Domain: '(.*)'$", ln.strip())
        if m:
            flush()
            dom, vals = m.group(1), {}
        elif "=" in ln:
            k, _, v = ln.strip().partition("=")
            vals[k] = v
    flush()
    return out


def _vm_stats(sv: Server, doms: Sequence[str]) -> dict[str, tuple[int | None, float | None]]:
    try:
        p = sv.run(["virsh", "-c", vms.uri(sv.local), "domstats", "--raw", "--cpu-total", "--balloon", *doms],
                   timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return domstats(p.stdout) if p.returncode == 0 else {}


# ------------------------------------------------------------------ the session log

@dataclass
class Activity:
    """Each student's last event in the session log (JSON lines), read incrementally: only the
    lines added since the previous reading (from the start again when the file was replaced).
    The dashboard's own events about a student (``dash-...``: the instructor acting) are not theirs."""

    path: Path
    offset: int = 0
    inode: int = 0
    last: dict[str, tuple[float, str]] = field(default_factory=dict)  # student: (epoch, event)

    def read(self) -> dict[str, tuple[float, str]]:
        try:
            st = self.path.stat()
        except OSError:
            return self.last
        if st.st_ino != self.inode or st.st_size < self.offset:
            self.inode, self.offset, self.last = st.st_ino, 0, {}
        if st.st_size == self.offset:
            return self.last
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written is read whole next time
        self.offset += end
        for ln in data[:end].splitlines():
            try:
                rec = json.loads(ln)
                when = datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
            except (ValueError, KeyError, TypeError):
                continue
            event = str(rec.get("event", ""))
            # the dashboard's own lines about a student (dash-action...) are the instructor's doing
            if isinstance(rec.get("student"), str) and not event.startswith("dash-"):
                self.last[rec["student"]] = (when, event)
        return self.last


# ------------------------------------------------------------------ hosts, quickly

def _rows(lab: str, servers: Sequence[Server]) -> list[tuple[HostRow, str]]:
    """Every host of the lab on ``servers`` with its container id ('' when none or unknown)."""
    out: list[tuple[HostRow, str]] = []
    scopes = engine_scopes(lab)
    for sv in servers:
        for eng, users in engines_on(sv, scopes):
            out += [(r, r.id) for r in eng.hosts(lab, None, sv, users)]
    if servers:  # (none: vm_hosts would read this machine's)
        out += [(r, "") for r in vm_hosts(lab, None, list(servers))]
    return out


# ------------------------------------------------------------------ the view

_lock = threading.Lock()
_cgroups: Cgroups | None = None
_cpu: dict[str, tuple[float, float]] = {}  # host key: (monotonic time, CPU seconds) of the last reading
_activity: dict[Path, Activity] = {}


def _cpu_percent(key: str, now: float, seconds: float | None) -> float | None:
    if seconds is None:
        return None
    prev = _cpu.get(key)
    _cpu[key] = (now, seconds)
    if prev is None or now - prev[0] < 0.2 or seconds < prev[1]:
        return None
    return round(100.0 * (seconds - prev[1]) / (now - prev[0]), 1)


def columns(lab: Lab, shorts: Iterable[str] = ()) -> list[str]:
    """The host columns: the lab file's containers in its order, the VM, then any other found."""
    cols = [c.short for c in lab.containers] + (["vm"] if lab.vm.enabled else [])
    return cols + sorted(set(shorts) - set(cols))


def class_view(lab: Lab, servers: Sequence[Server] | None = None, *,
               sessions: Iterable[tuple[str, float]] = ()) -> dict[str, Any]:
    """Students by hosts: each host's state, CPU % (None on the first reading or where it
    cannot be read), memory bytes (None likewise), container id; each student's last event in
    the session log and their open sessions (``sessions``: (student, epoch of the last input)
    of each session open at the door, which count as activity). ``servers``: the lab servers
    with their engines reachable (default: the lab's, opened for this call)."""
    if servers is None:
        with engines(lab.name) as svs:
            return class_view(lab, svs, sessions=sessions)
    global _cgroups
    t0 = time.perf_counter()
    with _lock:
        rows = _rows(lab.name, servers)
        now = time.monotonic()
        if _cgroups is None:
            _cgroups = Cgroups()
        cg = _cgroups
        by_server: dict[str, list[str]] = {}
        for r, _ in rows:
            if r.role == "vm" and r.state == "running":
                by_server.setdefault(r.server, []).append(r.name)
        vm_stats: dict[str, tuple[int | None, float | None]] = {}
        for sv in servers:
            if by_server.get(sv.name):
                vm_stats.update({f"{sv.name}/{d}": v for d, v in _vm_stats(sv, by_server[sv.name]).items()})
        log_path = creds.access_dir(lab.name) / "sessions.log"
        act = _activity.setdefault(log_path, Activity(log_path)).read()
        students: dict[str, dict[str, Any]] = {
            s: {"student": s, "server": "", "hosts": {}, "last_activity": None, "last_event": "",
                "open_sessions": 0} for s in lab.students}
        measured = 0
        seen: set[str] = set()
        for r, cid in rows:
            st = students.get(r.student)
            if st is None:
                continue
            short = r.name.removeprefix(names.lab_prefix(lab.name, r.student))
            mem: int | None = None
            cpu_s: float | None = None
            key = f"{r.server}/{r.name}/{cid}"
            if r.state == "running":
                if r.role == "vm":
                    mem, cpu_s = vm_stats.get(f"{r.server}/{r.name}", (None, None))
                elif r.local:  # by its id; an LXC container by its name (lxc.payload.NAME)
                    mem, cpu_s = cg.read(cid or "name:" + r.name)
            cpu = _cpu_percent(key, now, cpu_s)
            seen.add(key)
            measured += mem is not None
            st["server"] = st["server"] or r.server
            st["hosts"][short] = {"short": short, "name": r.name, "kind": r.role, "distro": r.distro,
                                  "state": r.state, "engine": r.engine, "id": cid[:12], "cpu": cpu, "memory": mem}
        for k in set(_cpu) - seen:
            del _cpu[k]
    wall = time.time()
    for s, last_input in sessions:
        st = students.get(s)
        if st is not None:
            st["open_sessions"] += 1
            if st["last_activity"] is None or last_input > st["last_activity"]:
                st["last_activity"], st["last_event"] = last_input, "input"
    for s, (when, event) in act.items():
        st = students.get(s)
        if st is not None and (st["last_activity"] is None or when > st["last_activity"]):
            st["last_activity"], st["last_event"] = when, event
    shorts = {h for st in students.values() for h in st["hosts"]}
    return {"lab": lab.name, "time": wall, "columns": columns(lab, shorts), "students": list(students.values()),
            "cost": {"seconds": round(time.perf_counter() - t0, 4), "hosts": len(rows), "measured": measured}}
