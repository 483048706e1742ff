"""Measurements behind facts K8 and K9: create-to-ready time, memory and disk of every host.

Containers: the engine's own timestamps (created -> started), the container's cgroup
memory (one-shot stats), the image's size. VMs: the seconds from `vagrant up` to SSH
(recorded by the lab_vm role), the RSS of the VM's qemu process, the box's size.
Recorded by `labkit up` into the lab folder and shown side by side.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from . import engine
from .paths import lab_dir


def _ts(s: str) -> float:
    # docker gives nanoseconds: 2026-11-28T07:52:38.123456789Z
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".", 1)
        s = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(s).timestamp()


def container(name: str, client=None) -> dict:
    """Create-to-ready seconds, memory (cgroup usage) and disk (image size) of one container."""
    client = client or engine.client()
    c = client.containers.get(name)
    st = c.attrs["State"]
    ready = max(0.0, _ts(st["StartedAt"]) - _ts(c.attrs["Created"]))
    stats = c.stats(stream=False, one_shot=True) if st.get("Running") else {}
    ms = stats.get("memory_stats") or {}
    # like `docker stats`: usage minus the reclaimable page cache (cgroup v1 and v2 names)
    inner = ms.get("stats") or {}
    cache = inner.get("total_inactive_file", inner.get("inactive_file", 0))
    mem = max(0, ms.get("usage", 0) - cache)
    img = client.images.get(c.attrs["Image"])
    return {"host": name, "role": "container", "ready_seconds": round(ready, 3),
            "ready_how": "engine: created -> started", "memory_bytes": int(mem),
            "memory_how": "cgroup usage less inactive cache, as docker stats", "disk_bytes": int(img.attrs.get("Size", 0)),
            "disk_how": "image size"}


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


def vm(domain: str, boot_seconds: float | None, box_bytes: int) -> dict:
    return {"host": domain, "role": "vm", "ready_seconds": round(boot_seconds, 3) if boot_seconds else None,
            "ready_how": "vagrant up -> SSH ready", "memory_bytes": qemu_rss(domain),
            "memory_how": "qemu process RSS", "disk_bytes": box_bytes, "disk_how": "box size"}


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
