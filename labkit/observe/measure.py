"""Measurements behind facts K8 and K9: create-to-ready time, memory and disk of every host.

Containers: the engine's own timestamps (created -> started), the container's cgroup
memory (one-shot stats), the image's size. VMs: the seconds from `vagrant up` to SSH
(recorded by the lab_vm role), the RSS of the VM's qemu process, the box's size, and what
a boot time depends on: the accelerator (KVM or QEMU emulation), how many VMs booted at once
and the lab server's cores. Recorded by `labkit up` into the lab folder and shown side by side.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from labkit.paths import lab_dir

if TYPE_CHECKING:  # annotations only (the docker SDK is imported when a client is made)

    from labkit.servers.base import Server


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
    """The lab server's CPU count (``nproc --all`` there)."""
    if server.name not in _CORES:
        try:  # here or over SSH alike (Server.run)
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
