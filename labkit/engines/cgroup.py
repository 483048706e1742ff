"""A container's memory read from its cgroup on this machine, as ``docker stats`` and
``podman stats`` count it (the engines' measurements; no engine call, no stats wait)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path


def docker_ts(s: str) -> float:
    # docker gives nanoseconds: 2026-11-28T07:52:38.123456789Z
    s = s.rstrip("Z")
    if "." in s:
        head, frac = s.split(".", 1)
        s = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(s).timestamp()


USAGE_LESS_CACHE = "cgroup usage less inactive cache, as docker stats"
ALL_CACHE = "cgroup usage (all of it inactive cache)"


def less_cache(usage: int, cache: int) -> tuple[int, str]:
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
        return less_cache(usage, cache)
    return None
