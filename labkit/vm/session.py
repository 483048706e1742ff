"""VMs of an ordinary account: libvirt's session instance, one shared read-only box.

An account without root (a student on a classroom machine the instructor prepared with
``labkit prepare --classroom``) runs its VMs in its own libvirt session instance
(``qemu:///session``) with QEMU's user-mode networking: no root at any time, its domains apart
from every other account's. The box is not copied per account:

- the instructor's preparation (as root) publishes the box once, read-only, in
  ``/var/lib/labkit/vagrant-boxes/`` in Vagrant's own layout (``publish_box``);
- each account's Vagrant home links to it (``link_box``), so Vagrant finds the box without a
  ``vagrant box add`` of 640 MB;
- each account's session pool gets the volume vagrant-libvirt would upload the box into as a
  qcow2 overlay whose backing file is the shared image (``box_volume``): QEMU opens a backing
  file read-only, and an account's VM costs its own overlays only.

docs/instructors/shared-machine.md says what holds for such a VM and which test proves it.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from labkit import paths
from labkit.errors import BoxError
from labkit.vm import boxes, vms

SHARED_BOXES = Path("/var/lib/labkit/vagrant-boxes")
POOL = "default"
FILES = ("metadata.json", "Vagrantfile", "box.img")


def _virsh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-q", "-c", paths.SESSION_URI, *args], capture_output=True, text=True,
                          timeout=timeout)


def _version_dir(root: Path) -> Path | None:
    """``<root>/<version>/libvirt`` with the box's files, the newest version; None if absent."""
    found = [d for d in root.glob("*/libvirt") if all((d / f).is_file() for f in FILES)]
    return max(found, key=lambda d: d.stat().st_mtime) if found else None


def publish_box(box: str, source_home: Path | None = None) -> tuple[Path, bool]:
    """As root: copy the box from ``source_home`` (root's Vagrant home) to the shared folder,
    readable by every account, writable by root only; unchanged files are not copied again.
    (the box's folder, whether anything was copied)."""
    src = _version_dir((source_home or paths.vagrant_home()) / "boxes" / boxes.box_dirname(box))
    if src is None:
        raise BoxError(f"the box {box} is not in root's Vagrant home", "build it first: `labkit box build`")
    dest = SHARED_BOXES / boxes.box_dirname(box) / src.parent.name / "libvirt"
    same = dest.is_dir() and all(
        (dest / f).is_file() and (dest / f).stat().st_size == (src / f).stat().st_size
        and int((dest / f).stat().st_mtime) == int((src / f).stat().st_mtime) for f in FILES)
    if same:
        return dest, False
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in FILES:
        shutil.copy2(src / f, tmp / f)
        (tmp / f).chmod(0o644)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    for d in (SHARED_BOXES, SHARED_BOXES / boxes.box_dirname(box), dest.parent, dest):
        d.chmod(0o755)
    # older versions of the box: no account's Vagrant home points at them any more
    for old in (SHARED_BOXES / boxes.box_dirname(box)).iterdir():
        if old != dest.parent:
            shutil.rmtree(old, ignore_errors=True)
    return dest, True


def shared_box(box: str) -> Path | None:
    """The published box's ``<version>/libvirt`` folder, None when the instructor has not
    published it."""
    return _version_dir(SHARED_BOXES / boxes.box_dirname(box))


NOT_PUBLISHED = ("the instructor prepares this machine once, as root: `labkit prepare --classroom` "
                 "(it publishes the box read-only in " + str(SHARED_BOXES) + "); see "
                 "docs/instructors/shared-machine.md")


def link_box(box: str) -> Path:
    """This account's Vagrant home sees the shared box (a link, nothing copied). A box the
    account added itself is left as it is. The box's ``<version>/libvirt`` folder."""
    shared = shared_box(box)
    mine = paths.vagrant_home() / "boxes" / boxes.box_dirname(box)
    if mine.is_symlink() or not mine.exists():
        if shared is None:
            raise BoxError(f"the Vagrant box {box} is not installed for the accounts of this machine", NOT_PUBLISHED)
        target = shared.parent.parent
        if not (mine.is_symlink() and os.readlink(mine) == str(target)):
            mine.parent.mkdir(parents=True, exist_ok=True)
            tmp = mine.with_name(mine.name + ".link")
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            tmp.symlink_to(target)
            os.replace(tmp, mine)
    found = _version_dir(mine)
    if found is None:
        raise BoxError(f"the Vagrant box {box} in {mine} has no libvirt image", NOT_PUBLISHED)
    return found


def pool_dir() -> Path:
    return Path.home() / ".local" / "share" / "libvirt" / "images"


def _ensure_pool() -> Path:
    """This account's session pool ``default`` defined and running (as vagrant-libvirt would
    make it); its folder."""
    info = _virsh("pool-info", POOL)
    if info.returncode == 0:
        if "running" not in info.stdout:
            _virsh("pool-start", POOL)
        return vms.pool_folder(_virsh("pool-dumpxml", POOL).stdout) or pool_dir()
    pool_dir().mkdir(parents=True, exist_ok=True)
    for args in (("pool-define-as", POOL, "dir", "--target", str(pool_dir())), ("pool-start", POOL),
                 ("pool-autostart", POOL)):
        p = _virsh(*args)
        if p.returncode != 0 and "already" not in p.stderr:
            raise BoxError(f"libvirt's session instance: virsh {' '.join(args)} failed: {p.stderr.strip()}",
                           "check `virsh -c qemu:///session uri` as this account")
    return pool_dir()


def volume_name(box: str, image: Path) -> str:
    """The volume vagrant-libvirt makes from a box image in the pool (its own rule: the box name,
    ``_vagrant_box_image_0_`` and the image's mtime, for a box without a version)."""
    return f"{boxes.box_volume_prefix(box)}0_{int(image.stat().st_mtime)}_box.img"


def box_volume(box: str) -> str:
    """The box's volume in this account's session pool, made (once) as a qcow2 overlay on the
    shared image, so that vagrant-libvirt finds it and uploads nothing. Its name."""
    image = link_box(box) / "box.img"
    name = volume_name(box, image)
    folder = _ensure_pool()
    if folder.is_dir() and folder.stat().st_uid == os.geteuid():
        folder.chmod(0o700)  # its VMs' disks are this account's alone (a home may be 0755)
    if _virsh("vol-info", "--pool", POOL, name).returncode == 0:
        return name
    lock = paths.state_dir() / "session-box.lock"
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # two `labkit up` of this account at once: one makes it
        if _virsh("vol-info", "--pool", POOL, name).returncode != 0:
            target = folder / name
            tmp = target.with_name(target.name + ".tmp")
            p = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.resolve()),
                                str(tmp)], capture_output=True, text=True)
            if p.returncode != 0:
                raise BoxError(f"could not make the box's overlay in {folder}: {p.stderr.strip()}",
                               "check the free space and that the shared box is readable")
            os.replace(tmp, target)
            _virsh("pool-refresh", POOL)
    return name
