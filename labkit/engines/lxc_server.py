"""What labkit reads of LXC on a lab server: the lab's containers by their marker files, a
container's measurements, a user's account in it, the facts' probe in it, and what the server
lacks for LXC.

A container's root file system is its student's (root in it): labkit reads there only through
``labkit_lxc_rootfs`` (inside the root file system, no symlink followed at the end, a regular
file, a size limit), and runs nothing of it with more than the container's own privileges.

Standard library only, and no import of labkit but its LXC layout (see below): ``labkit.engines.lxc`` calls these functions
on this machine, and on a remote lab server this very file is run by the server's own
``python3`` (``python3 - COMMAND ARGS...`` with the file on stdin, through the wrapper
``labkit.engines.lxc.lxc_wrappers`` writes), which prints the answer as JSON.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

# The layout (folder, marker, root's id map, init) is written once, in role lab_lxc's
# module_utils/labkit_lxc_layout.py, and the root file system's paths in labkit_lxc_rootfs.py.
# Here they are imported; on a lab server, where this file runs from stdin without labkit,
# those files' source comes first on stdin (labkit.engines.lxc_layout.server_source) and
# their names are already defined.
if "MARKER" not in globals():
    from labkit.engines.lxc_layout import (
        BUSYBOX,
        IDMAP,
        LXC_PATH,
        MARKER,
        RootfsError,
        rootfs_open,
        rootfs_read,
    )

# what lxc-attach gives a command in a container: a clean environment with this PATH
ATTACH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD_LIMIT = 4 << 20     # bytes of a container's /etc/passwd read at most
PROBE_TIMEOUT = 120        # seconds the facts' probe may take in a container


def marker(name: str, lxc_path: str | None = None) -> dict | None:
    try:
        with open(os.path.join(lxc_path or LXC_PATH, name, MARKER)) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def state(name: str) -> str:
    """``running``, ``stopped`` (or another of LXC's states, lowercase)."""
    if shutil.which("lxc-info") is None:
        return "stopped"
    p = subprocess.run(["lxc-info", "-n", name, "-sH"], capture_output=True, text=True, cwd="/")
    return p.stdout.strip().lower() if p.returncode == 0 and p.stdout.strip() else "stopped"


def scan(lab: str, students: list[str] | None = None, lxc_path: str | None = None,
         state_of: Callable[[str], str] | None = None) -> list[dict]:
    """The lab's containers (``students``' only, when given) under ``lxc_path``, found by their
    marker files whatever their state: name, marker, state."""
    out: list[dict] = []
    lxc_path, state_of = lxc_path or LXC_PATH, state_of or state
    if not os.path.isdir(lxc_path):
        return out
    for name in sorted(os.listdir(lxc_path)):
        m = marker(name, lxc_path)
        if not m or m.get("lab") != lab or (students and m.get("student") not in students):
            continue
        out.append({"name": name, "marker": m, "state": state_of(name)})
    return out


def account(name: str, user: str, lxc_path: str | None = None) -> list | dict | None:
    """[uid, gid, home] of ``user`` in container ``name`` (its own /etc/passwd), None when it
    has no such user, or ``{"error": why}`` when that file cannot be read as one: it is the
    student's, read inside the root file system only (a symlink there, to ``/dev/zero`` or to
    a server's file, is refused, not followed; so is a FIFO or a file over PASSWD_LIMIT)."""
    try:
        root = rootfs_open(os.path.join(lxc_path or LXC_PATH, name, "rootfs"))
        try:
            data = rootfs_read(root, "etc/passwd", PASSWD_LIMIT)
        finally:
            os.close(root)
    except (RootfsError, OSError) as e:
        return {"error": str(e)}
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[0] == user and fields[2].isdigit() and fields[3].isdigit():
            return [int(fields[2]), int(fields[3]), fields[5]]
    return None


def init_pid(name: str) -> int | None:
    p = subprocess.run(["lxc-info", "-n", name, "-pH"], capture_output=True, text=True, cwd="/")
    return int(p.stdout.strip()) if p.returncode == 0 and p.stdout.strip().isdigit() else None


# Run by this server's own Python (-I -S: nothing of the container is imported), which enters
# the container's user and mount namespaces (as root there, with all its capabilities, like
# `lxc-attach --elevated-privileges`) but runs nothing of the container: in a private copy of
# its mounts (nothing propagates back) it lifts LXC's own boot_id (bind-mounted over the
# kernel's) and reads the kernel's beneath it, from the container's /proc.
_BOOT_ID = r"""
import ctypes, os, sys
def main():
    libc = ctypes.CDLL(None, use_errno=True)
    fds = [os.open("/proc/%s/ns/%s" % (sys.argv[1], ns), os.O_RDONLY) for ns in ("user", "mnt")]
    for fd, kind in zip(fds, (0x10000000, 0x00020000)):  # CLONE_NEWUSER, CLONE_NEWNS
        if libc.setns(fd, kind) != 0:
            return "setns"
    if libc.unshare(0x00020000) != 0:
        return "unshare"
    if libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) != 0:  # MS_REC | MS_PRIVATE
        return "private"
    if libc.umount2(b"/proc/sys/kernel/random/boot_id", 2) != 0:  # MNT_DETACH
        return "umount"
    fd = os.open("/proc/sys/kernel/random/boot_id", os.O_RDONLY | os.O_NOFOLLOW)
    os.write(1, os.read(fd, 64))
    return None
try:
    why = main()
except Exception as e:
    why = type(e).__name__
if why:
    os.write(2, why.encode())
    os._exit(1)
"""


def kernel_boot_id(name: str) -> str:
    """The kernel's boot_id as container ``name``'s /proc shows it beneath LXC's own, read
    without running anything of the container (``_BOOT_ID``); empty when it cannot be."""
    pid = init_pid(name)
    if pid is None:
        return ""
    try:
        p = subprocess.run([sys.executable, "-I", "-S", "-c", _BOOT_ID, str(pid)], capture_output=True,
                           timeout=30, cwd="/")
    except subprocess.TimeoutExpired:
        return ""
    out = p.stdout.decode("ascii", "replace").strip()
    return out if p.returncode == 0 and len(out) == 36 else ""


def probe(name: str, script: str) -> int:
    """The facts' probe in container ``name``: ``script`` run by the container's ``/bin/sh``
    as its root, confined as its root always is (its capabilities, cgroup, ``no_new_privs``,
    seccomp; never ``lxc-attach --elevated-privileges``: that shell is the student's to
    replace), its output passed on, then the line ``boot_id=`` of the kernel's boot_id beneath
    LXC's (``kernel_boot_id``), which the script cannot read unprivileged. Its exit code."""
    argv = ["lxc-attach", "-n", name, "--clear-env", "-v", f"PATH={ATTACH_PATH}", "-v", "HOME=/root",
            "-v", "USER=root", "-v", "LOGNAME=root", "--", "/bin/sh", "-c", script]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT, cwd="/")
    except subprocess.TimeoutExpired:
        sys.stderr.write(f"the facts' probe in {name} did not finish within {PROBE_TIMEOUT} s\n")
        return 124
    sys.stdout.buffer.write(p.stdout)
    sys.stderr.buffer.write(p.stderr)
    if p.returncode == 0 and (boot_id := kernel_boot_id(name)):
        sys.stdout.buffer.write(f"\nboot_id={boot_id}\n".encode())
    sys.stdout.flush()
    return p.returncode


def start_time(pid: int) -> float:
    """When process ``pid`` started, in seconds since the epoch (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # starttime, field 22, in clock ticks
    # /proc/uptime is in hundredths (btime in /proc/stat only in whole seconds)
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - (uptime - since_boot)


def _cgroup(name: str, key: str) -> str | None:
    p = subprocess.run(["lxc-cgroup", "-n", name, key], capture_output=True, text=True, cwd="/")
    return p.stdout if p.returncode == 0 else None


def cgroup_memory(name: str) -> int | None:
    """The container's memory as ``docker stats`` counts Docker's: cgroup usage less the
    inactive file cache (v2: memory.current - inactive_file; v1: usage - total_inactive_file)."""
    for usage_key, inactive in (("memory.current", "inactive_file"), ("memory.usage_in_bytes", "total_inactive_file")):
        usage = _cgroup(name, usage_key)
        if usage is None or not usage.strip().isdigit():
            continue
        stat = dict(ln.split()[:2] for ln in (_cgroup(name, "memory.stat") or "").splitlines() if len(ln.split()) >= 2)
        cache = int(stat.get(inactive, "0")) if stat.get(inactive, "0").isdigit() else 0
        return max(int(usage.strip()) - cache, 0)
    return None


def measure(name: str, lxc_path: str | None = None) -> dict | None:
    """A running container's marker creation time, init's start, memory and root file system
    size (``created``, ``started``, ``memory``, ``disk``), or None."""
    lxc_path = lxc_path or LXC_PATH
    m = marker(name, lxc_path)
    if not m or state(name) != "running":
        return None
    pid = init_pid(name)
    if pid is None:
        return None
    try:
        started = start_time(pid)
        du = subprocess.run(["du", "-sb", os.path.join(lxc_path, name, "rootfs")], capture_output=True, text=True,
                            cwd="/")
        disk = int(du.stdout.split()[0]) if du.returncode == 0 and du.stdout else 0
    except (OSError, ValueError, IndexError):
        return None
    return {"created": float(m.get("created", 0) or 0), "started": started, "memory": cgroup_memory(name),
            "disk": disk}


def needs() -> list[str]:
    """What a lab server lacks to host labkit's LXC containers (role lab_lxc there): LXC's
    tools, newuidmap, the ``lxc`` binding of this Python (community.general.lxc_container),
    BusyBox (the containers' init), the Docker CLI (their root file systems) and root's id map."""
    out = [t for t in ("lxc-start", "lxc-attach", "lxc-info", "newuidmap", "docker") if shutil.which(t) is None]
    try:
        import lxc  # noqa: F401
    except ImportError:
        out.append(f"the lxc Python binding of {sys.executable} (python3-lxc)")
    if not os.path.exists(BUSYBOX):
        out.append(f"{BUSYBOX} (busybox-static)")
    for f in ("/etc/subuid", "/etc/subgid"):
        if not subids_cover(f, IDMAP):
            out.append(f"{IDMAP} in {f}")
    return out


def subids_cover(path: str, line: str) -> bool:
    """Whether the entries of ``path`` (/etc/subuid or /etc/subgid) give the user of ``line``
    (``user:first:count``) all of its ids, in one entry or several."""
    user, first, count = line.split(":")
    lo, hi = int(first), int(first) + int(count)
    try:
        with open(path) as fh:
            have = sorted((int(w[1]), int(w[1]) + int(w[2])) for w in (ln.strip().split(":") for ln in fh)
                          if len(w) == 3 and w[0] == user and w[1].isdigit() and w[2].isdigit())
    except OSError:
        return False
    for a, b in have:
        if a <= lo < b:
            lo = b
    return lo >= hi


def main(argv: list[str]) -> int:
    """``scan LAB [STUDENT...]``, ``measure NAME``, ``account NAME USER``, ``needs``: JSON on
    stdout; ``probe NAME SCRIPT``: the probe's own output (``probe``)."""
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    if cmd == "scan" and args:
        out: object = scan(args[0], args[1:] or None)
    elif cmd == "measure" and len(args) == 1:
        out = measure(args[0])
    elif cmd == "account" and len(args) == 2:
        out = account(args[0], args[1])
    elif cmd == "needs" and not args:
        out = needs()
    elif cmd == "probe" and len(args) == 2:
        return probe(args[0], args[1])
    else:
        sys.stderr.write(f"labkit lxc_server: unknown request {argv!r}\n")
        return 2
    sys.stdout.write(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
