"""The root file system of labkit's LXC containers, made from a Docker image of the lab server:
``docker export`` of a container created from it (never started), extracted inside a folder
whatever the image holds (``rootfs_extract``), BusyBox as its init, cached per image; each
container's copy then gets its own ids (``rootfs_shift``).

The image is data (a colleague's, a download), never trusted with the server's paths: every
member is made through labkit_lxc_rootfs's descriptors, inside the root file system.

Used by the module labkit_lxc (Ansible ships this file with it). Standard library only.
"""

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time

from ansible.module_utils.labkit_lxc_rootfs import (
    ROOTFS_DIR_FLAGS,
    RootfsError,
    rootfs_dir,
    rootfs_open,
    rootfs_parts,
    rootfs_remove,
    rootfs_symlink,
    rootfs_write,
)

RECIPE = "3"  # bump when the root file system's preparation changes: caches are made again
INITTAB = "::sysinit:/bin/true\n::shutdown:/bin/true\n"


class ImageError(Exception):
    pass


def _run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise ImageError(f"{' '.join(cmd)} failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
    return p.stdout


def rootfs(cache_dir, busybox, base, image, iid):
    """The cached root file system of Docker ``image`` (id ``iid``), owners shifted by ``base``,
    with ``busybox`` as its init: made once per image id, recipe and base, under ``cache_dir``."""
    key = hashlib.sha256(f"{RECIPE} {iid} {base}".encode()).hexdigest()[:16]
    top = os.path.join(cache_dir, "rootfs")
    dest = os.path.join(top, key)
    if os.path.isdir(dest):
        return dest
    if not os.path.exists(busybox):
        raise ImageError(f"{busybox} not found (the LXC containers' init): apt-get install busybox-static")
    os.makedirs(top, mode=0o700, exist_ok=True)
    os.chmod(top, 0o700)  # the trees hold setuid files owned by the containers' ids: root's only
    for left in os.listdir(top):  # a killed run's half-made copy, an hour old
        old = os.path.join(top, left)
        if left.startswith(".") and time.time() - os.stat(old).st_mtime > 3600:
            shutil.rmtree(old, ignore_errors=True)
    work = tempfile.mkdtemp(prefix=f".{key}-", dir=top)
    try:
        root = rootfs_open(work)
        try:
            export(image, root, base)
            with open(busybox, "rb") as f:
                init = f.read()
            own = (base, base)
            rootfs_write(root, "usr/lib/labkit/busybox", init, base, base, 0o755, dir_owner=own)
            rootfs_symlink(root, "usr/sbin/init", "/usr/lib/labkit/busybox", base, base, dir_owner=own)
            rootfs_write(root, "etc/inittab", INITTAB.encode(), base, base, 0o644, dir_owner=own)
        except RootfsError as e:
            raise ImageError(f"image {image}: {e}: refused, nothing of it is used (labkit writes only inside a "
                             "container's root file system; rebuild the image: `labkit images build`)") from None
        finally:
            os.close(root)
        os.chmod(work, 0o755)
        os.lchown(work, base, base)
        try:
            os.rename(work, dest)
        except OSError:
            if not os.path.isdir(dest):
                raise
            shutil.rmtree(work, ignore_errors=True)  # another lab's run made it meanwhile
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dest


def export(image, root, base):
    """``docker export`` of a container created (never started) from ``image``, extracted into
    the folder ``root`` (a descriptor), owners shifted by ``base``."""
    cid = _run(["docker", "create", image, "true"]).strip()
    try:
        exp = subprocess.Popen(["docker", "export", cid], stdout=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=exp.stdout, mode="r|") as t:
                # .dockerenv: Docker's marker (this is not Docker)
                rootfs_extract(t, root, base, skip={".dockerenv"})
        except BaseException:
            exp.kill()
            exp.wait()
            raise
        if exp.wait() != 0:
            raise ImageError(f"docker export of {image} failed (exit {exp.returncode})")
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def _member_parts(name, what):
    parts = rootfs_parts(name)
    if name.startswith("/") or ".." in parts:
        raise RootfsError(f"{what} outside the root file system")
    return parts


def rootfs_extract(tar, root_fd, shift, skip=()):
    """Extract the members of ``tar`` (a tarfile, read as a stream) into the root, each owner
    shifted by ``shift``: every member made inside the root whatever symlinks it holds, through
    descriptors (``rootfs_dir``), none followed at its last component; a member named outside
    (absolute, ``..``) is a RootfsError. Device nodes are left out (LXC gives each container its
    own ``/dev``; a device node of an image would be the server's device in the container);
    names in ``skip`` too. Folders get their times last, as ``tar`` does."""
    dirs = []
    for m in tar:
        try:
            parts = _member_parts(m.name, "named")
        except RootfsError as e:
            raise RootfsError(f"image member {m.name!r}: {e}") from None
        if not parts or "/".join(parts) in skip or m.ischr() or m.isblk():
            continue
        rel, name = "/".join(parts), parts[-1]
        uid, gid, mode = m.uid + shift, m.gid + shift, m.mode & 0o7777
        d = rootfs_dir(root_fd, "/".join(parts[:-1]), (0o755, shift, shift))
        try:
            if m.isdir():
                try:
                    os.mkdir(name, 0o700, dir_fd=d)
                except FileExistsError:
                    pass
                try:
                    fd = os.open(name, ROOTFS_DIR_FLAGS, dir_fd=d)
                except OSError:
                    raise RootfsError("a folder where something else is") from None
                try:
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
                dirs.append((rel, m.mtime))
            elif m.isreg():
                rootfs_remove(d, name)
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=d)
                try:
                    src = tar.extractfile(m)
                    while True:
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view):]
                    os.fchown(fd, uid, gid)  # then the mode: chown clears setuid bits
                    os.fchmod(fd, mode)
                    os.utime(fd, (m.mtime, m.mtime))
                finally:
                    os.close(fd)
            elif m.issym():
                rootfs_remove(d, name)
                os.symlink(m.linkname, name, dir_fd=d)  # data: read later only through rootfs_dir
                os.chown(name, uid, gid, dir_fd=d, follow_symlinks=False)
                os.utime(name, (m.mtime, m.mtime), dir_fd=d, follow_symlinks=False)
            elif m.islnk():
                lparts = _member_parts(m.linkname, f"a hard link to {m.linkname!r},")
                if not lparts:
                    raise RootfsError("a hard link to the root")
                ld = rootfs_dir(root_fd, "/".join(lparts[:-1]))
                try:
                    rootfs_remove(d, name)
                    os.link(lparts[-1], name, src_dir_fd=ld, dst_dir_fd=d, follow_symlinks=False)
                finally:
                    os.close(ld)
            elif m.isfifo():
                rootfs_remove(d, name)
                os.mkfifo(name, 0o600, dir_fd=d)
                os.chown(name, uid, gid, dir_fd=d, follow_symlinks=False)
                os.chmod(name, mode, dir_fd=d)  # just made by this process: a FIFO, not a symlink
        except RootfsError as e:
            raise RootfsError(f"image member {m.name!r}: {e}") from None
        finally:
            os.close(d)
    for rel, mtime in reversed(dirs):
        fd = rootfs_dir(root_fd, rel)
        try:
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)


def rootfs_shift(path, old, new, count):
    """Every owner (uid and gid) in ``[old, old + count)`` of folder ``path`` and everything
    under it moved to the same place in ``[new, new + count)``, symlinks' own (never followed);
    setuid and setgid bits kept (``chown`` clears them)."""
    def move(i):
        return i - old + new if old <= i < old + count else i

    st = os.stat(path, follow_symlinks=False)
    os.chown(path, move(st.st_uid), move(st.st_gid), follow_symlinks=False)
    for _top, dirs, files, dfd in os.fwalk(path, follow_symlinks=False):
        for name in dirs + files:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if (move(st.st_uid), move(st.st_gid)) == (st.st_uid, st.st_gid):
                continue
            os.chown(name, move(st.st_uid), move(st.st_gid), dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd)  # a file (lstat): no symlink followed
