"""Build labkit's Vagrant box (vagrant-libvirt, qcow2) offline, from Debian packages only.

Recipe (files in ``labkit/vm/box/``): ``mmdebstrap`` of bookworm with the packages of
``packages.txt``, then ``customize.sh`` (vagrant user + insecure key, systemd-networkd DHCP,
SSH host keys made on each VM's first boot, none in the box, slow units masked, extlinux
config). The root directory becomes one ext4 partition with ``mkfs.ext4 -d`` (no 64bit
feature, so extlinux can read it); the partitioned disk is assembled with ``sfdisk`` and
``dd`` at an offset, so no partition loop device is needed. Only ``extlinux --install`` needs
the file system mounted: that one step loop-mounts the bare file system image for a moment
(extlinux has no offline mode).

The build is cached: the recipe hash (package list, hook, this module's ``RECIPE_VERSION``
and build constants) is stored beside the box in ``state_dir()/boxes/<slug>/``.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from labkit import paths, procs
from labkit.errors import BoxError
from labkit.log import Log, quiet

RECIPE_VERSION = "2"
DEFAULT_BOX = "labkit/debian12"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DISK_GB = 8
PART_START_SECTOR = 2048  # 1 MiB
POOL = "default"
MBR_BIN = Path("/usr/lib/EXTLINUX/mbr.bin")
TOOLS = ("mmdebstrap", "mkfs.ext4", "extlinux", "sfdisk", "qemu-img", "vagrant", "mount", "virsh")
_RECIPE_DIR = Path(__file__).resolve().parent / "box"
_DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)



@dataclass(frozen=True)
class BoxInfo:
    name: str
    path: Path
    size: int
    seconds: float
    cached: bool


# ---------------------------------------------------------------------------- helpers


def _box_dir(name: str) -> Path:
    d = paths.state_dir() / "boxes" / paths.slug(name.replace("/", "-"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def box_dirname(name: str) -> str:
    """Vagrant's folder name of a box in ``VAGRANT_HOME/boxes`` (its ``/`` as ``-VAGRANTSLASH-``)."""
    return name.replace("/", "-VAGRANTSLASH-")


def box_volume_prefix(name: str) -> str:
    """Prefix of the libvirt volumes vagrant-libvirt makes from this box (one per box file)."""
    return box_dirname(name) + "_vagrant_box_image_"


def read_packages(path: Path | None = None) -> list[str]:
    """The package list of the recipe, comments and blank lines dropped."""
    text = (path or _RECIPE_DIR / "packages.txt").read_text()
    return [ln.split("#", 1)[0].strip() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]


def recipe_hash() -> str:
    """Hash of everything that makes the box: recipe files and build constants."""
    h = hashlib.sha256()
    h.update(f"{RECIPE_VERSION}|{SUITE}|{MIRROR}|{DISK_GB}|{_DPKG_EXCLUDES}".encode())
    for f in sorted(_RECIPE_DIR.iterdir()):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def vagrant_env() -> dict[str, str]:
    env = dict(os.environ)
    env["VAGRANT_HOME"] = str(paths.vagrant_home())
    env.setdefault("LIBVIRT_DEFAULT_URI", paths.libvirt_uri())
    env["VAGRANT_CHECKPOINT_DISABLE"] = "1"
    return env


def _run(cmd: list[str], what: str, *, env: Mapping[str, str] | None = None, timeout: float = 1800,
         cwd: str | Path | None = None) -> str:
    """Run a build step in a process group of its own. Interrupted (Ctrl-C, SIGTERM) or timed
    out, the whole group gets SIGTERM and time to undo what it did (mmdebstrap unmounts its
    chroot's file systems), then SIGKILL: no apt or dpkg of the step goes on writing into the
    build folder while it is removed."""
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    except FileNotFoundError as e:
        raise BoxError(f"{what}: {cmd[0]} not found", "run scripts/setup-vm.sh as root") from e
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as e:
        procs.stop_groups([proc])
        if isinstance(e, subprocess.TimeoutExpired):
            raise BoxError(f"{what}: timed out after {timeout:.0f}s", f"command: {' '.join(cmd)}") from e
        raise
    if proc.returncode != 0:
        tail = "\n".join((err or out).strip().splitlines()[-15:])
        raise BoxError(f"{what} failed (rc={proc.returncode}): {tail}", f"command: {' '.join(cmd)}")
    return out


def _virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["virsh", "-q", "-c", paths.libvirt_uri(), *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise BoxError(f"virsh {' '.join(args)}: {p.stderr.strip()}",
                       "is libvirtd running? run scripts/setup-vm.sh")
    return p


def pool_volumes(prefix: str = "") -> list[str]:
    """Volume names in libvirt's default pool starting with ``prefix`` ([] if no pool)."""
    p = _virsh("vol-list", POOL, check=False)
    if p.returncode != 0:
        return []
    names = [ln.split()[0] for ln in p.stdout.splitlines() if ln.strip()]
    return [n for n in names if n.startswith(prefix)]


def _labkit_domains() -> list[str]:
    p = _virsh("list", "--all", "--name", check=False)
    return [n.strip() for n in p.stdout.splitlines() if n.strip().startswith("labkit-")]


def vagrant_public_key() -> Path:
    """Vagrant's insecure public key, as shipped by Debian's vagrant package."""
    try:
        out = subprocess.run(["dpkg", "-L", "vagrant"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.endswith("/keys/vagrant.pub"):
                return Path(line)
    except FileNotFoundError:
        pass
    for cand in Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-*/keys/vagrant.pub"):
        return cand
    for cand in (Path("/usr/lib/ruby/vendor_ruby/vagrant/keys/vagrant.pub"),):
        if cand.exists():
            return cand
    raise BoxError("Vagrant's insecure public key (keys/vagrant.pub) not found",
                   "install Debian's vagrant package: scripts/setup-vm.sh")


def _preflight() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise BoxError(f"box build needs {', '.join(missing)}", "run scripts/setup-vm.sh as root")
    if os.geteuid() != 0:
        raise BoxError("box build needs root (mmdebstrap root mode, extlinux install)",
                       "run `sudo labkit box build`")
    if not MBR_BIN.exists():
        raise BoxError(f"{MBR_BIN} missing", "install the extlinux package (scripts/setup-vm.sh)")


# ---------------------------------------------------------------------------- public API


def list_boxes() -> list[dict]:
    """Boxes in labkit's VAGRANT_HOME: ``[{"name", "provider", "version"}]``."""
    if shutil.which("vagrant") is None:
        return []
    out = _run(["vagrant", "box", "list", "--machine-readable"], "vagrant box list", env=vagrant_env())
    boxes: list[dict] = []
    cur: dict = {}
    for line in out.splitlines():
        parts = line.split(",", 3)
        if len(parts) < 4:
            continue
        kind, value = parts[2], parts[3]
        if kind == "box-name":
            cur = {"name": value}
            boxes.append(cur)
        elif kind == "box-provider" and cur:
            cur["provider"] = value
        elif kind == "box-version" and cur:
            cur["version"] = value
    return boxes


def box_size(name: str = DEFAULT_BOX) -> int:
    """Bytes of the box's disk image as Vagrant holds it (0 when the box is not added)."""
    d = paths.vagrant_home() / "boxes" / box_dirname(name)
    return sum(f.stat().st_size for f in d.glob("*/libvirt/*.img")) if d.is_dir() else 0


def box_present(name: str = DEFAULT_BOX) -> bool:
    """Is the box in labkit's VAGRANT_HOME for libvirt? Read from Vagrant's own folder layout
    (``boxes/<name, / as -VAGRANTSLASH->/<version>/libvirt/metadata.json``), not with
    ``vagrant box list``, which starts Ruby for 1-2 s at every `labkit up` with a VM."""
    d = paths.vagrant_home() / "boxes" / box_dirname(name)
    return any(d.glob("*/libvirt/metadata.json"))


def build_box(name: str = DEFAULT_BOX, force: bool = False, log: Log = quiet) -> BoxInfo:
    """Build the box ``name`` and add it to labkit's VAGRANT_HOME.

    Returns a BoxInfo; ``cached`` is True when nothing had to be built (same recipe hash,
    box file present and known to Vagrant). Raises BoxError with a hint on any failure.
    """
    t0 = time.monotonic()
    bdir = _box_dir(name)
    # one build at a time per box: a second labkit waits, then finds the box built
    with open(bdir / ".lock", "w") as lock:
        if not _try_lock(lock):
            log(f"box {name}: another labkit is building it; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _build_locked(name, bdir, force, log, t0)


def _try_lock(f: IO[str]) -> bool:
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _build_locked(name: str, bdir: Path, force: bool, log: Log, t0: float) -> BoxInfo:
    box_file = bdir / (paths.slug(name.replace("/", "-")) + ".box")
    stamp = bdir / "recipe.sha256"
    want = recipe_hash()
    have = stamp.read_text().strip() if stamp.exists() else ""

    if not force and have == want and box_file.exists():
        if box_present(name):
            log(f"box {name}: up to date ({box_file.stat().st_size // 2**20} MiB, recipe {want[:12]})")
            return BoxInfo(name, box_file, box_file.stat().st_size, time.monotonic() - t0, True)
        log(f"box {name}: built but not in Vagrant; adding it")
        _vagrant_add(name, box_file)
        return BoxInfo(name, box_file, box_file.stat().st_size, time.monotonic() - t0, True)

    _preflight()
    reason = "forced" if force else ("recipe changed" if have else "not built yet")
    log(f"box {name}: building ({reason}) from {MIRROR} {SUITE}")
    work = Path(tempfile.mkdtemp(prefix="build-", dir=bdir))
    try:
        img = _build_image(work, log)
        tmp_box = work / "out.box"
        _pack(img, tmp_box)
        stamp.unlink(missing_ok=True)
        os.replace(tmp_box, box_file)
        _drop_stale_volumes(name, log)
        _vagrant_add(name, box_file)
        stamp.write_text(want + "\n")
    finally:
        _cleanup_build(work)
    secs = time.monotonic() - t0
    size = box_file.stat().st_size
    log(f"box {name}: built in {secs:.0f}s, {size / 2**20:.0f} MiB -> {box_file}")
    return BoxInfo(name, box_file, size, secs, False)


def remove_box(name: str = DEFAULT_BOX, log: Log = quiet) -> list[str]:
    """Remove the box from Vagrant, its volumes from libvirt's pool and its build cache.

    ``vagrant box remove`` leaves the uploaded image in the pool, so volumes named
    ``<name with / as -VAGRANTSLASH->_vagrant_box_image_*`` are deleted too. Returns what
    was removed; idempotent.
    """
    removed: list[str] = []
    if any(b["name"] == name for b in list_boxes()):
        _run(["vagrant", "box", "remove", "--force", "--all", "--provider", "libvirt", name],
             "vagrant box remove", env=vagrant_env())
        removed.append(f"vagrant box {name}")
    for vol in pool_volumes(box_volume_prefix(name)):
        p = _virsh("vol-delete", "--pool", POOL, vol, check=False)
        if p.returncode == 0:
            removed.append(f"volume {vol}")
        else:
            log(f"could not delete volume {vol}: {p.stderr.strip()} (a VM still uses it?)")
    bdir = paths.state_dir() / "boxes" / paths.slug(name.replace("/", "-"))
    if bdir.exists():
        shutil.rmtree(bdir)
        removed.append(str(bdir))
    for r in removed:
        log(f"removed {r}")
    return removed


# ---------------------------------------------------------------------------- build steps


def _build_image(work: Path, log: Log) -> Path:
    root = work / "root"
    root_uuid = str(uuid.uuid4())
    pkgs = read_packages()
    env = dict(os.environ)
    env.update(LABKIT_ROOT_UUID=root_uuid, LABKIT_VAGRANT_PUBKEY=str(vagrant_public_key()),
               LABKIT_HOSTNAME="labkit-vm")
    hook = _RECIPE_DIR / "customize.sh"
    cmd = ["mmdebstrap", "--mode=root", "--variant=minbase", "--format=directory",
           "--include=" + ",".join(pkgs), "--aptopt=Acquire::Languages \"none\"",
           *[f"--dpkgopt={o}" for o in _DPKG_EXCLUDES],
           f"--customize-hook=sh {hook} \"$1\"",
           SUITE, str(root),
           f"deb {MIRROR} {SUITE} main", f"deb {MIRROR} {SUITE}-updates main"]
    t = time.monotonic()
    log(f"  mmdebstrap: {len(pkgs)} packages")
    _run(cmd, "mmdebstrap", env=env, timeout=1500)
    log(f"  mmdebstrap: done in {time.monotonic() - t:.0f}s")
    # every VM made from the box would share a host key baked into it (and anyone with the
    # box could impersonate them all): the hook removes openssh-server's, each VM makes its own
    baked = sorted(p.name for p in (root / "etc" / "ssh").glob("ssh_host_*"))
    if baked:
        raise BoxError(f"the box would carry SSH host keys ({', '.join(baked)}): every VM made from it "
                       "would share them", f"check that {hook} removes /etc/ssh/ssh_host_*")

    # one ext4 file system, filled from the directory without mounting it
    disk_bytes = DISK_GB * 2**30
    part_off = PART_START_SECTOR * 512
    fs = work / "root.ext4"
    with open(fs, "wb") as f:
        f.truncate(disk_bytes - part_off)
    _run(["mkfs.ext4", "-q", "-F", "-O", "^64bit,^metadata_csum_seed,^orphan_file", "-U", root_uuid,
          "-L", "labkit-root", "-E", "lazy_itable_init=1,lazy_journal_init=1",
          "-d", str(root), str(fs)], "mkfs.ext4 -d")
    shutil.rmtree(root, ignore_errors=True)

    # extlinux can only install into a mounted file system: loop-mount the bare fs briefly
    mnt = work / "mnt"
    mnt.mkdir()
    _run(["mount", "-o", "loop", str(fs), str(mnt)], "loop-mount the root file system for extlinux")
    try:
        _run(["extlinux", "--install", str(mnt / "boot" / "extlinux")], "extlinux --install")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)

    # the disk: MBR + one bootable partition at 1 MiB; the fs is written at that offset
    raw = work / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(disk_bytes)
    p = subprocess.run(["sfdisk", "-q", "--no-tell-kernel", str(raw)], capture_output=True, text=True,
                       input=f"label: dos\nstart={PART_START_SECTOR}, type=83, bootable\n")
    if p.returncode != 0:
        raise BoxError(f"sfdisk failed: {p.stderr.strip()}")
    _run(["dd", f"if={fs}", f"of={raw}", "bs=1M", f"seek={part_off // 2**20}", "conv=notrunc,sparse",
          "status=none"], "dd root fs into the disk")
    fs.unlink()
    _run(["dd", f"if={MBR_BIN}", f"of={raw}", "bs=440", "count=1", "conv=notrunc", "status=none"],
         "dd extlinux MBR")
    img = work / "box.img"
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(img)], "qemu-img convert")
    raw.unlink()
    return img


_BOX_VAGRANTFILE = """\
# Vagrantfile shipped inside the labkit box; a lab's own Vagrantfile overrides it.
Vagrant.configure("2") do |config|
  # the guest is known: Vagrant need not probe it over SSH (about 20 s under emulation)
  config.vm.guest = :debian
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
    libvirt.nic_model_type = "virtio"
  end
end
"""


def _pack(img: Path, out: Path) -> None:
    meta = {"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GB}
    (img.parent / "metadata.json").write_text(json.dumps(meta) + "\n")
    (img.parent / "Vagrantfile").write_text(_BOX_VAGRANTFILE)
    with tarfile.open(out, "w") as tar:
        for n in ("metadata.json", "Vagrantfile", "box.img"):
            tar.add(img.parent / n, arcname=n)


def _vagrant_add(name: str, box_file: Path) -> None:
    _run(["vagrant", "box", "add", "--force", "--name", name, str(box_file)], "vagrant box add",
         env=vagrant_env(), timeout=600)


def _drop_stale_volumes(name: str, log: Log) -> None:
    """A rebuilt box gets a new pool volume (its name has the image mtime); drop the old ones
    unless a labkit VM may still be backed by them."""
    old = pool_volumes(box_volume_prefix(name))
    if not old:
        return
    if _labkit_domains():
        log(f"  keeping {len(old)} old box volume(s): labkit VMs exist (labkit down, then box remove)")
        return
    for vol in old:
        _virsh("vol-delete", "--pool", POOL, vol, check=False)
        log(f"  deleted old box volume {vol}")


def mounts_under(top: Path) -> list[str]:
    """The mount points at or below ``top``, deepest first (from /proc/self/mountinfo)."""
    base = str(top)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == base or point.startswith(base + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _cleanup_build(work: Path) -> None:
    """Remove the build folder. What an interrupted step left mounted in it (the loop mount,
    the chroot's /proc, /sys, /dev/pts, /dev/shm of a killed mmdebstrap) is detached first: the
    folder is never removed across a mount."""
    for point in mounts_under(work):
        subprocess.run(["umount", "-l", point], capture_output=True)
    if mounts_under(work):
        raise BoxError(f"{work}: file systems are still mounted in the build folder; it was left as it is",
                       f"unmount them (grep {work} /proc/mounts), then remove it")
    shutil.rmtree(work, ignore_errors=True)
