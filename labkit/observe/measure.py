"""Measurements behind facts K8 and K9: create-to-ready time, memory and disk of every host.

Containers: the engine's own timestamps (created -> started), the container's cgroup
memory (one-shot stats), the image's size. VMs: the seconds from `vagrant up` to SSH
(recorded by the lab_vm role), the RSS of the VM's qemu process, the box's size, and what
a boot time depends on: the accelerator (KVM or QEMU emulation), how many VMs booted at once
and the lab server's cores. Recorded by `labkit up` into the lab folder and shown side by side.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from labkit.engines import docker as engine
from labkit.paths import lab_dir

if TYPE_CHECKING:  # annotations only (the docker SDK is imported when a client is made)
    from docker import DockerClient

    from labkit.servers.base import Server


def _ts(s: str) -> float:
    # docker gives nanoseconds: 2026-11-28T07:52:38.123456789Z
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".", 1)
        s = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(s).timestamp()


USAGE_LESS_CACHE = "cgroup usage less inactive cache, as docker stats"
ALL_CACHE = "cgroup usage (all of it inactive cache)"


def _less_cache(usage: int, cache: int) -> tuple[int, str]:
    """A cgroup's memory as ``docker stats`` counts it (usage less the inactive file cache), with how."""
    return (usage - cache, USAGE_LESS_CACHE) if usage > cache else (usage, ALL_CACHE)


def cgroup_memory(pid: int, owner: str, proc: str = "/proc", sysfs: str = "/sys/fs/cgroup") -> tuple[int, str] | None:
    """The memory of the container whose first process is ``pid`` on this machine, read from its
    memory cgroup as ``docker stats`` and ``podman stats`` count it: usage less the inactive file
    cache (cgroup v1: memory.usage_in_bytes - total_inactive_file; v2: memory.current -
    inactive_file), with how it was counted. None when ``pid`` is not a process here whose
    cgroup path names ``owner`` (a container's id, or ``libpod``): a remote server's container,
    a gone one, or one without a memory cgroup of its own."""
    if pid <= 0:
        return None
    try:
        lines = Path(f"{proc}/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    v1 = next((ln.split(":", 2)[2] for ln in lines if ln.count(":") >= 2 and "memory" in ln.split(":")[1].split(",")),
              None)
    v2 = next((ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")), None)
    for base, path, use, inactive in ((f"{sysfs}/memory", v1, "memory.usage_in_bytes", "total_inactive_file"),
                                      (sysfs, v2, "memory.current", "inactive_file")):
        if not path or owner not in path:
            continue
        d = Path(base + path)
        try:
            usage = int((d / use).read_text())
            stat = dict(ln.split()[:2] for ln in (d / "memory.stat").read_text().splitlines() if len(ln.split()) >= 2)
            cache = int(stat.get(inactive, 0))
        except (OSError, ValueError):
            continue
        return _less_cache(usage, cache)
    return None


def container(name: str, client: DockerClient | None = None, previous: dict | None = None,
              _images: dict[str, int] | None = None) -> dict:
    """Create-to-ready seconds, memory (cgroup usage) and disk (image size) of one container.

    ``previous``: this container's earlier row; when it measured the same container (id) started
    at the same time, that row is returned as it is, without the stats call (1-2 s each on a
    busy engine): a re-run of ``labkit up`` that changed nothing re-measures nothing."""
    client = client or engine.client()
    c = client.containers.get(name)
    st = c.attrs["State"]
    if (previous and previous.get("container_id") == c.id and previous.get("started_at") == st.get("StartedAt")
            and st.get("Running") and previous.get("memory_bytes") is not None):
        return previous
    ready = max(0.0, _ts(st["StartedAt"]) - _ts(c.attrs["Created"]))
    # like `docker stats`: usage minus the reclaimable page cache. A container whose image pages
    # were first read by another (the page cache is charged to the first reader) can take well
    # under 1 MiB: BusyBox's sleep, a few hundred KiB. A container of this machine's engine is
    # read from its cgroup directly: the engine's stats call waits for its next collection,
    # about 1 s, however idle the machine
    local = cgroup_memory(int(st.get("Pid") or 0), cast(str, c.id)) if st.get("Running") else None  # got: has an id
    if local is not None:
        mem, how = local
    else:
        stats = cast(dict, c.stats(stream=False, one_shot=True)) if st.get("Running") else {}  # not streamed: one dict
        ms = stats.get("memory_stats") or {}
        inner = ms.get("stats") or {}
        cache = inner.get("total_inactive_file", inner.get("inactive_file", 0))
        usage = ms.get("usage")
        if usage is None:  # stopped, or an engine that gave no figure: not measured, never a made-up 0
            mem, how = None, "not measured: the engine gave no memory usage"
        else:
            mem, how = _less_cache(usage, cache)
    if _images is not None and c.attrs["Image"] in _images:
        size = _images[c.attrs["Image"]]
    else:
        size = int(client.images.get(c.attrs["Image"]).attrs.get("Size", 0))
        if _images is not None:
            _images[c.attrs["Image"]] = size
    return {"host": name, "role": "container", "ready_seconds": round(ready, 3),
            "ready_how": "engine: created -> started", "memory_bytes": int(mem) if mem is not None else None,
            "memory_how": how, "disk_bytes": size, "disk_how": "image size",
            "container_id": c.id, "started_at": st.get("StartedAt")}


def containers(targets: list[tuple[str, DockerClient]], previous: dict[str, dict] | None = None, workers: int = engine.POOL,
               log: Callable[[str], object] | None = None) -> list[dict]:
    """``container`` for many: ``targets`` is (name, engine client) pairs, measured ``workers`` at
    a time. A stats call waits for the engine's next collection (dockerd gathers every second
    and answers every waiting call at once): about 1 s each, however idle the machine, so the
    wait is what to spread, not CPU. At 40 students (160 containers) that is 24 s with 8 at a
    time, 4.4 s with 64 (engine.POOL connections per client). ``previous`` (``load(lab)``) holds earlier rows, kept for
    containers that did not change. A container that cannot be measured is left out and said
    through ``log``: a measurement never fails the run."""
    previous = previous or {}
    sizes: dict[str, int] = {}

    def one(t: tuple[str, DockerClient]) -> dict | None:
        name, client = t
        try:
            return container(name, client, previous.get(name), sizes)
        except Exception as e:  # noqa: BLE001 - a measurement never fails the run; K8/K9 say what is missing
            if log:
                log(f"{name}: not measured ({type(e).__name__})")
            return None

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        return [r for r in pool.map(one, targets) if r is not None]


def qemu_rss(domain: str) -> int:
    """Resident memory of the qemu process running libvirt domain ``domain`` (0 if not found)."""
    needle = f"\0guest={domain},".encode()  # libvirt starts qemu with: -name guest=<domain>,debug-threads=on
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle not in (proc / "cmdline").read_bytes():
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


def local_guests() -> int:
    """How many QEMU guests (libvirt's: ``-name guest=...``) run on this machine, any lab's or none."""
    n = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"\0guest=" in (proc / "cmdline").read_bytes() and "qemu" in (proc / "comm").read_text():
                    n += 1
            except OSError:
                continue
    return n


BOOT_KEYS = ("accel", "boots_at_once", "server_cores", "server_vms", "vm_cpus")


def vm(domain: str, boot_seconds: float | None, box_bytes: int, boot: dict | None = None) -> dict:
    """A VM's row; ``boot`` says how it booted (BOOT_KEYS: accel kvm|qemu, boots_at_once: the
    run's VMs booting at the same time, server_cores, server_vms: QEMU guests running on its
    lab server when it came up, any lab's; vm_cpus; None where unknown)."""
    row = {"host": domain, "role": "vm", "ready_seconds": round(boot_seconds, 3) if boot_seconds else None,
           "ready_how": "vagrant up -> SSH ready", "memory_bytes": qemu_rss(domain),
           "memory_how": "qemu process RSS", "disk_bytes": box_bytes, "disk_how": "box size"}
    row.update({k: (boot or {}).get(k) for k in BOOT_KEYS})
    return row


def _epoch(when: object) -> float:
    """An ansible-runner event time (ISO text, naive UTC or with offset) as epoch seconds; now if absent."""
    if not when:
        return time.time()
    try:
        t = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
    except ValueError:
        return time.time()
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp()


class VmBoots:
    """The VMs a `labkit up` run boots, seen in its events (the lab_vm role's labkit_vagrant
    task, changed, with the seconds `vagrant up` took), and how many booted at once: those
    whose boot intervals overlap. Also counts the QEMU guests running on this machine when
    each boot ends (other labs' VMs compete for the same cores). Passes every event on to
    ``on_event``."""

    def __init__(self, on_event: Callable[[dict], object] | None = None,
                 guests: Callable[[], int] | None = local_guests) -> None:
        self.on_event = on_event
        self.guests = guests
        self.intervals: dict[str, tuple[float, float]] = {}
        self.guests_at_end: dict[str, int] = {}

    def __call__(self, event: dict) -> object:
        if event.get("event") == "runner_on_ok":
            data = event.get("event_data") or {}
            res = data.get("res") or {}
            if (str(data.get("task_action", "")).endswith("labkit_vagrant") and res.get("changed")
                    and res.get("status") == "running" and res.get("seconds")):
                end = _epoch(data.get("end"))
                self.intervals[data.get("host", "?")] = (end - float(res["seconds"]), end)
                if self.guests:
                    self.guests_at_end[data.get("host", "?")] = self.guests()
        if self.on_event:
            return self.on_event(event)
        return None

    def at_once(self, host: str) -> int | None:
        """How many VMs (``host`` included) were booting at some time during ``host``'s boot."""
        return boots_at_once(self.intervals, host)


def boots_at_once(intervals: dict[str, tuple[float, float]], host: str) -> int | None:
    """The most boot intervals overlapping at one instant of ``host``'s interval (itself included)."""
    mine = intervals.get(host)
    if mine is None:
        return None
    a0, b0 = mine
    # the peak of an interval overlap is at some interval's start: count at each start in ours
    starts = [a0] + [a for a, _ in intervals.values() if a0 <= a < b0]
    return max(sum(1 for a, b in intervals.values() if a <= t < b) for t in starts)


_CORES: dict[str, int | None] = {}


def server_cores(server: Server) -> int | None:
    """The lab server's CPU count (this machine: os.cpu_count(); a remote one: nproc over SSH)."""
    if server.name not in _CORES:
        if server.local:
            _CORES[server.name] = os.cpu_count()
        else:
            try:
                p = server.run(["nproc", "--all"], timeout=30)
                _CORES[server.name] = int(p.stdout.strip()) if p.returncode == 0 else None
            except Exception:  # noqa: BLE001 - a measurement never fails the run
                _CORES[server.name] = None
    return _CORES[server.name]


def path(lab: str) -> Path:
    return lab_dir(lab) / "measurements.json"


def save(lab: str, rows: list[dict]) -> None:
    """Merge ``rows`` into the lab's measurements (by host); earlier hosts stay."""
    old = load(lab)
    old.update({r["host"]: r for r in rows})
    path(lab).write_text(json.dumps(old, indent=2))


def load(lab: str) -> dict[str, dict]:
    p = path(lab)
    return json.loads(p.read_text()) if p.is_file() else {}


def forget(lab: str, hosts: list[str] | None = None) -> None:
    """Drop measurements of removed hosts (all when ``hosts`` is None)."""
    if hosts is None:
        path(lab).unlink(missing_ok=True)
        return
    old = load(lab)
    for h in hosts:
        old.pop(h, None)
    path(lab).write_text(json.dumps(old, indent=2))
