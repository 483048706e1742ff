"""Paths inside an LXC container's root file system, resolved as the container resolves them
and never outside it: the one way labkit, as root on the lab server, reads or writes there.

A root file system is data from an image (a colleague's, a download) or from the student who
is root in the running container: any of its folders may be a symlink, absolute or relative,
to anywhere. Followed by the server's kernel, ``rootfs/etc -> /etc`` would make labkit write the
server's own files. So every path is walked here one component at a time from a descriptor of
the root, each folder opened with ``O_NOFOLLOW``; a symlink met on the way is read and
followed *as if the root were ``/``* (an absolute target starts again from the root, ``..``
stops at it), as ``chroot`` or ``openat2(RESOLVE_IN_ROOT)`` would: the result is always under
the root. The last component is never followed: a write replaces a symlink there, a read
refuses it (and anything but a regular file, and more than a size limit: a FIFO or a
``/dev/zero`` would hang the reader).

Used by the module labkit_lxc (Ansible ships this file with it: the image's extraction in
labkit_lxc_rootfs_image.py, BusyBox's init, ``/etc/hosts``...), by labkit on the controller
(``labkit.engines.lxc_layout`` loads it) and, on a remote lab server, by labkit's reads there
(its source runs ahead of ``labkit/engines/lxc_server.py`` on stdin). Standard library only,
no annotations (a server's Python runs it as it is); its names start with ``rootfs_``,
``ROOTFS_`` or ``Rootfs``.
"""

import contextlib
import errno
import os
import stat

ROOTFS_HOPS = 40  # symlinks followed in one path at most (the kernel's own limit)
ROOTFS_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class RootfsError(Exception):
    """A path of a root file system that labkit will not use: its message names the path (as
    the container sees it) and why."""


def rootfs_open(path):
    """A descriptor of the root file system folder ``path`` itself (not a symlink)."""
    try:
        return os.open(path, ROOTFS_DIR_FLAGS)
    except OSError as e:
        raise RootfsError(f"root file system {path}: {e.strerror} (not a folder, or a symlink)") from None


def rootfs_parts(rel):
    return [p for p in rel.split("/") if p not in ("", ".")]


def rootfs_dir(root_fd, rel, create=None):
    """A new descriptor of folder ``rel`` of the root ``root_fd``, its symlinks followed as the
    container would (inside the root). ``create``: ``(mode, uid, gid)`` of the folders made
    where missing (as ``mkdir -p``); without it a missing folder is a RootfsError."""
    stack = [os.dup(root_fd)]  # the folders from the root to the current one, as descriptors
    todo, hops, seen = rootfs_parts(rel), ROOTFS_HOPS, []
    try:
        while todo:
            part = todo.pop(0)
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    seen.pop()
                continue
            try:
                fd = os.open(part, ROOTFS_DIR_FLAGS, dir_fd=stack[-1])
            except OSError as e:
                where = "/" + "/".join(seen + [part])
                if e.errno == errno.ENOENT and create is not None:
                    mode, uid, gid = create
                    os.mkdir(part, 0o700, dir_fd=stack[-1])
                    fd = os.open(part, ROOTFS_DIR_FLAGS, dir_fd=stack[-1])
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, mode)  # not the umask's
                    stack.append(fd)
                    seen.append(part)
                    continue
                if e.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise RootfsError(f"{where}: {e.strerror}") from None
                st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise RootfsError(f"{where} is not a folder") from None
                hops -= 1
                if hops < 0:
                    raise RootfsError(f"{where}: too many levels of symlinks") from None
                target = os.readlink(part, dir_fd=stack[-1])
                if target.startswith("/"):  # from the container's root, not the server's
                    while len(stack) > 1:
                        os.close(stack.pop())
                    seen.clear()
                todo[:0] = rootfs_parts(target)
                continue
            stack.append(fd)
            seen.append(part)
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def rootfs_split(rel):
    """(parent, name) of ``rel``; a RootfsError for the root itself, ``..`` or ``.`` last."""
    parts = rootfs_parts(rel)
    if not parts or parts[-1] == "..":
        raise RootfsError(f"/{rel.strip('/')}: not a file name")
    return "/".join(parts[:-1]), parts[-1]


def rootfs_remove(dir_fd, name):
    """Remove entry ``name`` of folder ``dir_fd`` unless it is a folder; False when missing."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise RootfsError(f"{name} is a folder")
    os.unlink(name, dir_fd=dir_fd)
    return True


@contextlib.contextmanager
def _cleared(root_fd, rel, dir_owner):
    """(folder fd, name) of ``rel``'s place in the root, with what was there removed (a file or
    symlink, never followed; a folder refuses): the folder resolved inside the root (made,
    owned by ``dir_owner``, when that is given) and closed after the block."""
    parent, name = rootfs_split(rel)
    d = rootfs_dir(root_fd, parent, None if dir_owner is None else (0o755, *dir_owner))
    try:
        try:
            rootfs_remove(d, name)
        except RootfsError:
            raise RootfsError(f"/{rel}: a folder is in the way") from None
        yield d, name
    finally:
        os.close(d)


def rootfs_write(root_fd, rel, data, uid, gid, mode=0o644, dir_owner=None):
    """Write ``data`` (bytes) as file ``rel`` of the root, owned by ``uid``:``gid``: its
    folders resolved inside the root (made, owned by ``dir_owner``, when that is given), a
    symlink or file already there replaced, never followed."""
    with _cleared(root_fd, rel, dir_owner) as (d, name):
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=d)
        try:
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


def rootfs_symlink(root_fd, rel, target, uid, gid, dir_owner=None):
    """Make ``rel`` a symlink to ``target`` (replacing what is there but a folder)."""
    with _cleared(root_fd, rel, dir_owner) as (d, name):
        os.symlink(target, name, dir_fd=d)
        os.chown(name, uid, gid, dir_fd=d, follow_symlinks=False)


def rootfs_read(root_fd, rel, limit):
    """The bytes of regular file ``rel`` of the root, at most ``limit`` of them: a RootfsError
    for a symlink (never followed), a FIFO, a device, a folder, a larger file."""
    parent, name = rootfs_split(rel)
    d = rootfs_dir(root_fd, parent)
    try:
        try:  # O_NONBLOCK: a FIFO opens at once (and is refused below) instead of waiting
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=d)
        except OSError as e:
            why = "a symlink" if e.errno == errno.ELOOP else e.strerror
            raise RootfsError(f"/{rel}: {why}, not a regular file") from None
    finally:
        os.close(d)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RootfsError(f"/{rel}: not a regular file")
        if st.st_size > limit:
            raise RootfsError(f"/{rel}: {st.st_size} bytes, over the limit of {limit}")
        out = b""
        while len(out) <= limit:
            chunk = os.read(fd, limit + 1 - len(out))
            if not chunk:
                break
            out += chunk
        if len(out) > limit:
            raise RootfsError(f"/{rel}: over the limit of {limit} bytes")
        return out
    finally:
        os.close(fd)
