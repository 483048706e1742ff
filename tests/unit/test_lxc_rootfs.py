"""Paths inside an LXC container's root file system (role lab_lxc's module_utils
labkit_lxc_rootfs, labkit_lxc_rootfs_image and labkit_lxc_idmap): whatever symlinks a root file
system holds (an image's, a student's), what labkit writes or reads there stays inside it; an
image's members are made inside it; each container gets its own id range. Real files under
tmp_path, owned by whoever runs the tests (no root needed): a folder ``outside`` stands for the
server's own, and must not change."""
from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import role_module

ME = (os.getuid(), os.getgid())


@pytest.fixture(scope="module")
def fs():
    role_module("lab_lxc", "labkit_lxc")  # its module_utils, as Ansible names them
    return sys.modules["ansible.module_utils.labkit_lxc_rootfs"]


@pytest.fixture(scope="module")
def image():
    role_module("lab_lxc", "labkit_lxc")
    return sys.modules["ansible.module_utils.labkit_lxc_rootfs_image"]


@pytest.fixture
def tree(tmp_path):
    """A root file system and the server's folder ``outside`` with a file of its own."""
    root, outside = tmp_path / "rootfs", tmp_path / "outside"
    (root / "usr" / "bin").mkdir(parents=True)
    outside.mkdir()
    (outside / "hosts").write_text("the server's own\n")
    return root, outside


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.is_symlink(), p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("link", ["ABS", "../../../../../../ABS", "../../../../.."])
def test_a_symlinked_etc_is_followed_inside_the_root_never_out(fs, tree, link):
    root, outside = tree
    before = snapshot(outside)
    (root / "etc").symlink_to(link.replace("ABS", str(outside).lstrip("/")) if link != "ABS" else str(outside))
    fd = fs.rootfs_open(str(root))
    try:
        fs.rootfs_write(fd, "etc/hosts", b"10.0.0.1 c1\n", *ME, dir_owner=ME)
    finally:
        os.close(fd)
    assert snapshot(outside) == before
    # as the container sees it: its / is the root, so the link leads to a folder inside the root
    inside = root / str(outside).lstrip("/") if link != "../../../../.." else root
    assert (inside / "hosts").read_text() == "10.0.0.1 c1\n"


def test_a_deeper_symlinked_folder_and_a_symlink_last_are_not_followed_out(fs, tree):
    root, outside = tree
    (outside / "init").write_text("#!/bin/sh\n# the server's init\n")
    before = snapshot(outside)
    (root / "usr" / "sbin").symlink_to(outside)            # absolute, out
    (root / "usr" / "lib").symlink_to("../../../outside")  # relative, out
    (root / "etc").mkdir()
    (root / "etc" / "hosts").symlink_to(outside / "hosts")  # the last component
    fd = fs.rootfs_open(str(root))
    try:
        fs.rootfs_symlink(fd, "usr/sbin/init", "/usr/lib/labkit/busybox", *ME, dir_owner=ME)
        fs.rootfs_write(fd, "usr/lib/labkit/busybox", b"\x7fELF", *ME, 0o755, dir_owner=ME)
        fs.rootfs_write(fd, "etc/hosts", b"mine\n", *ME)
    finally:
        os.close(fd)
    assert snapshot(outside) == before
    assert os.readlink(root / str(outside).lstrip("/") / "init") == "/usr/lib/labkit/busybox"
    assert (root / "outside" / "labkit" / "busybox").read_bytes() == b"\x7fELF"  # ../.. stopped at the root
    assert not (root / "etc" / "hosts").is_symlink() and (root / "etc" / "hosts").read_text() == "mine\n"


def test_loops_and_files_in_the_way_are_refused_by_name(fs, tree):
    root, _ = tree
    (root / "etc").symlink_to("etc")
    (root / "var").write_text("a file")
    fd = fs.rootfs_open(str(root))
    try:
        with pytest.raises(fs.RootfsError, match="/etc: too many levels of symlinks"):
            fs.rootfs_write(fd, "etc/hosts", b"x", *ME, dir_owner=ME)
        with pytest.raises(fs.RootfsError, match="/var is not a folder"):
            fs.rootfs_write(fd, "var/x", b"x", *ME, dir_owner=ME)
        with pytest.raises(fs.RootfsError, match="/usr/lib: No such file"):
            fs.rootfs_read(fd, "usr/lib/x", 10)  # a read makes no folder
    finally:
        os.close(fd)
    with pytest.raises(fs.RootfsError, match="not a folder, or a symlink"):
        fs.rootfs_open(str(root / "etc"))


def test_a_read_takes_a_regular_file_only_promptly_and_limited(fs, tree):
    root, outside = tree
    etc = root / "etc"
    etc.mkdir()
    fd = fs.rootfs_open(str(root))
    try:
        for target in ("/dev/zero", str(outside / "hosts"), "hosts"):
            (etc / "passwd").unlink(missing_ok=True)
            (etc / "passwd").symlink_to(target)
            with pytest.raises(fs.RootfsError, match="/etc/passwd: a symlink, not a regular file"):
                fs.rootfs_read(fd, "etc/passwd", 1 << 20)
        (etc / "passwd").unlink()
        os.mkfifo(etc / "passwd")  # nobody writes it: an open for reading would wait for ever
        t0 = time.monotonic()
        with pytest.raises(fs.RootfsError, match="/etc/passwd: not a regular file"):
            fs.rootfs_read(fd, "etc/passwd", 1 << 20)
        assert time.monotonic() - t0 < 5
        (etc / "passwd").unlink()
        (etc / "passwd").write_bytes(b"x" * 101)
        with pytest.raises(fs.RootfsError, match="/etc/passwd: 101 bytes, over the limit of 100"):
            fs.rootfs_read(fd, "etc/passwd", 100)
        assert fs.rootfs_read(fd, "etc/passwd", 101) == b"x" * 101
        (root / "etc2").symlink_to("/etc")  # a folder symlink on the way is the container's: inside
        assert fs.rootfs_read(fd, "etc2/passwd", 101) == b"x" * 101
    finally:
        os.close(fd)


def _tar(members: list[tuple[str, str, str | bytes]]) -> io.BytesIO:
    """A tar stream of (kind, name, data-or-link) members, owned by uid/gid 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for kind, name, data in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_700_000_000
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                t.addfile(ti)
            elif kind == "file":
                raw = data if isinstance(data, bytes) else data.encode()
                ti.size, ti.mode = len(raw), 0o4755 if name.endswith("su") else 0o644
                t.addfile(ti, io.BytesIO(raw))
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, str(data)
                t.addfile(ti)
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, str(data)
                t.addfile(ti)
            elif kind == "chr":
                ti.type, ti.devmajor, ti.devminor, ti.mode = tarfile.CHRTYPE, 1, 3, 0o666
                t.addfile(ti)
    buf.seek(0)
    return buf


def _extract(image, fs, root: Path, members: list) -> None:
    fd = fs.rootfs_open(str(root))
    try:
        with tarfile.open(fileobj=_tar(members), mode="r|") as t:
            image.rootfs_extract(t, fd, os.getuid(), skip={".dockerenv"})  # uid 0 + shift: the tester's own
    finally:
        os.close(fd)


def test_an_image_is_extracted_inside_the_root_whatever_its_symlinks(fs, image, tree):
    root, outside = tree
    before = snapshot(outside)
    _extract(image, fs, root, [
        ("sym", "etc", str(outside)),                 # etc -> the server's folder
        ("file", "etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
        ("file", "etc/hosts", "image\n"),
        ("dir", "usr/", ""), ("sym", "usr/sbin", "../../outside"),
        ("file", "usr/sbin/init", "image init\n"),
        ("file", "usr/bin/su", "setuid\n"), ("hard", "usr/bin/su2", "usr/bin/su"),
        ("hard", "usr/bin/hosts", "etc/hosts"),       # a hard link through the symlink: inside too
        ("chr", "dev/null", ""), ("file", ".dockerenv", ""),
    ])
    assert snapshot(outside) == before
    inside = root / str(outside).lstrip("/")
    assert (inside / "passwd").read_text().startswith("root:") and (inside / "hosts").read_text() == "image\n"
    assert (root / "outside" / "init").read_text() == "image init\n"
    su = (root / "usr" / "bin" / "su").stat()
    assert su.st_mode & 0o7777 == 0o4755 and su.st_ino == (root / "usr" / "bin" / "su2").stat().st_ino
    assert (root / "usr" / "bin" / "hosts").stat().st_ino == (inside / "hosts").stat().st_ino
    assert (root / "usr").stat().st_mtime == 1_700_000_000
    assert not (root / "dev" / "null").exists() and not (root / ".dockerenv").exists()


@pytest.mark.parametrize(("members", "why"), [
    ([("file", "../escape", "x")], "image member '../escape': named outside the root file system"),
    ([("file", "/abs", "x")], "image member '/abs': named outside the root file system"),
    ([("hard", "x", "../../outside/hosts")],
     "image member 'x': a hard link to '../../outside/hosts', outside the root file system"),
    ([("file", "etc", "x"), ("dir", "etc/", "")], "image member 'etc': a folder where something else is"),
])
def test_an_image_member_named_outside_is_refused(fs, image, tree, members, why):
    root, outside = tree
    before = snapshot(outside)
    with pytest.raises(fs.RootfsError, match=f"^{why}$"):
        _extract(image, fs, root, members)
    assert snapshot(outside) == before


def test_each_container_gets_its_own_id_range(tmp_path):
    role_module("lab_lxc", "labkit_lxc")
    idmap = sys.modules["ansible.module_utils.labkit_lxc_idmap"]
    base, per = 1000000000, 65536
    assert idmap.idmaps_in_use(str(tmp_path / "missing"), "labkit.json", per) == []
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "labkit.json").write_text(json.dumps({"lab": "l", "idmap": base}))  # half-made: marker only
    (tmp_path / "other").mkdir()  # another tool's container, a range of its own (two slots' worth)
    (tmp_path / "other" / "config").write_text(f"lxc.idmap = u 0 {base + 2 * per} {2 * per}\nlxc.idmap = g 0 5 1\n")
    used = idmap.idmaps_in_use(str(tmp_path), "labkit.json", per)
    assert sorted(used) == [(5, 1), (base, per), (base + 2 * per, 2 * per)]
    assert idmap.allocate(base, used, per, 8) == base + per
    assert idmap.allocate(base, used + [(base + per, per)], per, 8) == base + 4 * per
    with pytest.raises(idmap.IdmapError, match="the 4 ranges of 65536 ids from 1000000000 are all taken"):
        idmap.allocate(base, used + [(base + per, per)], per, 4)
    with idmap.idmap_lock(str(tmp_path)):
        assert (tmp_path / ".labkit-idmap.lock").stat().st_mode & 0o777 == 0o600
