"""``labkit prepare --classroom``: the instructor's one-time preparation, as root, of a shared
classroom machine on which ordinary accounts (no root, no sudo, no docker or libvirt group)
run their own labs with rootless Podman (docs/instructors/shared-machine.md).

What it does, each step idempotent:

1. checks what rootless Podman needs and root installs (``scripts/setup.sh``): Podman,
   setuid ``newuidmap``/``newgidmap`` (uidmap), ``slirp4netns``; makes ``/dev/net/tun`` usable
   by users (0666: a rootless network namespace's only way out);
2. gives each account (named, or every member of a group) its own 65536 subordinate user and
   group ids in ``/etc/subuid`` and ``/etc/subgid``, from a range no other account has
   (``usermod --add-subuids``): the ids its containers' users map to, disjoint from every
   other account's, so no two students' containers share a uid on the machine;
3. saves the lab's images from Docker's store into the shared, read-only copy
   (``labkit.engines.shared_images``), which every account's Podman loads from;
4. for a lab with a VM, publishes the box (built first if this machine has none) read-only in
   ``/var/lib/labkit/vagrant-boxes`` (``labkit.vm.session``): each account's VMs boot from it in
   the account's own libvirt session instance, on overlays of their own.

It changes nothing that needs root later: no daemon, no group that is root in all but name.
"""
from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labkit.engines import shared_images
from labkit.errors import BoxError, EngineError, SpecError
from labkit.lab.catalog import default_registry
from labkit.lab.catalog import get as distro
from labkit.lab.spec import Lab
from labkit.observe.checks.engine_facts import K11_IMAGE
from labkit.vm import boxes, session

IDS = 65536          # subordinate ids per account (Podman's and useradd's default)
FIRST_ID = 100000    # where useradd starts them
TUN = Path("/dev/net/tun")


@dataclass
class ClassroomResult:
    accounts: list[str] = field(default_factory=list)
    ranges_added: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    images_written: list[str] = field(default_factory=list)
    box: str = ""          # the shared box's folder, for a lab with a VM
    box_written: bool = False
    notes: list[str] = field(default_factory=list)


def lab_images(lab: Lab) -> list[str]:
    """The images the lab's containers run (what the shared copy must hold), and for a lab with
    a VM the image K11 runs inside it (carried in from here)."""
    reg = lab.registry or default_registry()
    refs = [distro(c.distro).image_ref(reg) for c in lab.containers]
    if lab.vm.enabled:
        refs.append(K11_IMAGE)
    return list(dict.fromkeys(refs))


def accounts_of(names: Sequence[str], group: str | None) -> list[str]:
    """The accounts to prepare: ``names`` and every member of ``group`` (its members list and
    the accounts whose primary group it is); an unknown name or group is bad input."""
    out: list[str] = []
    for n in names:
        try:
            pwd.getpwnam(n)
        except KeyError:
            raise SpecError(f"--account {n}: no such account on this machine",
                            f"create it first (`useradd -m -s /bin/bash {n}`), or drop it") from None
        out.append(n)
    if group:
        try:
            g = grp.getgrnam(group)
        except KeyError:
            raise SpecError(f"--group {group}: no such group on this machine",
                            f"create it (`groupadd {group}`) and add the students (`usermod -aG {group} NAME`)") from None
        out += list(g.gr_mem) + [p.pw_name for p in pwd.getpwall() if p.pw_gid == g.gr_gid]
    out = [n for n in dict.fromkeys(out) if pwd.getpwnam(n).pw_uid != 0]
    if not out:
        raise SpecError("no account to prepare", "name them: --account NAME (repeatable) or --group GROUP")
    return out


def parse_ranges(text: str) -> list[tuple[str, int, int]]:
    """``/etc/subuid``'s lines as (owner, first id, count); malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def has_range(entries: list[tuple[str, int, int]], user: str, uid: int) -> bool:
    return any(o in (user, str(uid)) and n >= IDS for o, _, n in entries)


def free_start(entries: list[tuple[str, int, int]], count: int = IDS) -> int:
    """The first id at or after FIRST_ID where ``count`` ids overlap no existing range."""
    start = FIRST_ID
    for _, first, n in sorted(entries, key=lambda e: e[1]):
        if first + n <= start:
            continue
        if first >= start + count:
            break
        start = first + n
    return start


def _need_root() -> None:
    if os.geteuid() != 0:
        raise EngineError("`labkit prepare --classroom` changes the machine (ids, devices, shared images): "
                          "it runs as root, once, by the instructor",
                          "run it as root (`sudo labkit prepare --classroom ...`); students need nothing of it")


def prepare_classroom(lab: Lab, accounts: Sequence[str] = (), group: str | None = None,
                      log: Callable[[str], object] = lambda _m: None,
                      subuid: Path = Path("/etc/subuid"), subgid: Path = Path("/etc/subgid")) -> ClassroomResult:
    """The one-time preparation (see the module's docstring); every step checked first, so a
    bad account or group changes nothing."""
    _need_root()
    names = accounts_of(accounts, group)
    problems = shared_images.rootless_tools_missing()
    if problems:
        raise EngineError("rootless Podman cannot run here: " + "; ".join(problems),
                          "install it as root: `bash scripts/setup.sh` (apt: podman uidmap slirp4netns)")
    res = ClassroomResult(accounts=names, images=lab_images(lab))
    if TUN.exists() and (TUN.stat().st_mode & 0o666) != 0o666:
        TUN.chmod(0o666)
        res.notes.append(f"{TUN}: made 0666 (rootless networks reach out through it)")
    for name in names:
        pw = pwd.getpwnam(name)
        for path, flag in ((subuid, "--add-subuids"), (subgid, "--add-subgids")):
            entries = parse_ranges(path.read_text() if path.exists() else "")
            if has_range(entries, name, pw.pw_uid):
                continue
            start = free_start(entries)
            r = subprocess.run(["usermod", flag, f"{start}-{start + IDS - 1}", name], capture_output=True, text=True)
            if r.returncode != 0:
                raise EngineError(f"usermod {flag} {start}-{start + IDS - 1} {name} failed: {r.stderr.strip()}")
            res.ranges_added.append(f"{path}: {name} {start}-{start + IDS - 1}")
            log(f"{path}: {name} gets ids {start}-{start + IDS - 1}")
    res.images_written = shared_images.publish(res.images, log=log)
    if lab.vm.enabled:
        if not boxes.box_present(lab.vm.box):
            if lab.vm.box != boxes.DEFAULT_BOX:
                raise BoxError(f"the Vagrant box {lab.vm.box} is not on this machine, and labkit builds only "
                               f"{boxes.DEFAULT_BOX}", "add it to root's labkit Vagrant home first")
            boxes.build_box(lab.vm.box, log=lambda m: None if log(m) else None)
        dest, res.box_written = session.publish_box(lab.vm.box)
        res.box = str(dest)
        if res.box_written:
            log(f"shared box: {lab.vm.box} -> {dest}")
    return res
