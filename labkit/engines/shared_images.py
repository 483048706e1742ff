"""The classroom's shared, read-only copy of the lab images, for accounts without root.

On a classroom machine an instructor prepared (``labkit prepare --classroom``), an ordinary
account (a student: no root, no sudo, not in the docker group) runs its containers with its
own rootless Podman. Its store cannot read Docker's, so the preparation saves each image once,
as root, into ``SHARED_DIR``: ``<stem>.tar`` (``docker image save``) and ``<stem>.id`` (the
image ID, which the account's store has after ``podman load``), root's, readable by everyone,
writable by nobody else. Role ``lab_podman`` loads an account's missing images from there
(``lab_podman_shared_images``; the same file names).

Why archives and not Podman's ``additionalimagestores``: a store shared by root keeps root's
file owners, which in an account's user namespace are unmapped (nobody): files the image's
root owns (``/etc/shadow``, setuid programs) would be wrong in every container. A ``podman
load`` as the account writes the layers with its own mapping.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from labkit.errors import EngineError

SHARED_DIR = Path("/var/lib/labkit/images")


def stem(ref: str) -> str:
    """``labkit/debian:12`` -> ``labkit_debian_12``: the file name of an image in the shared copy
    (role lab_podman: ``regex_replace('[^A-Za-z0-9]+', '_')``)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", ref)


def missing(refs: Iterable[str], folder: Path = SHARED_DIR) -> list[str]:
    """The images of ``refs`` that the shared copy lacks (archive or ID)."""
    return [r for r in dict.fromkeys(refs)
            if not ((folder / f"{stem(r)}.tar").is_file() and (folder / f"{stem(r)}.id").is_file())]


def image_id(ref: str) -> str:
    """The ID of ``ref`` in Docker's store here (``sha256:...``), or EngineError."""
    p = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True,
                       timeout=120, cwd="/")
    if p.returncode != 0:
        raise EngineError(f"image {ref} is not in Docker's store on this machine: {p.stderr.strip()[-300:]}",
                          "build it first: `labkit images build` (or load a bundle), then run this again")
    return p.stdout.strip()


def publish(refs: Sequence[str], folder: Path = SHARED_DIR, log: object = None) -> list[str]:
    """Save each image of ``refs`` from Docker's store into the shared copy (as root), where it
    is missing or another image under the same name: written beside, then renamed, so a
    student's ``up`` never reads half an archive. Returns the images written."""
    if os.geteuid() != 0:
        raise EngineError("the classroom's shared images are written by root",
                          "run `labkit prepare --classroom` as root (the instructor)")
    folder.mkdir(parents=True, exist_ok=True)
    closed = []  # folders above it that others may not search, opened once all are checked
    for d in (folder, *folder.parents):
        if d == Path("/"):
            break
        st = d.lstat()
        if st.st_uid != 0 or st.st_mode & 0o022 or not os.path.isdir(d) or d.is_symlink():
            raise EngineError(f"{d}: not root's alone (owner uid {st.st_uid}, mode {st.st_mode & 0o7777:04o})",
                              f"the shared images' folder must be root's and writable by nobody else: "
                              f"`chown root:root {d}; chmod 0755 {d}`")
        if d != folder and not st.st_mode & 0o001:
            closed.append((d, st.st_mode & 0o7777))
    os.chmod(folder, 0o755)
    # every account must reach it: a folder above it made 0750 by another of labkit's roles (the
    # lab server's /var/lib/labkit) gets others' search bit only (no listing, nothing readable)
    for d, mode in closed:
        os.chmod(d, mode | 0o001)
    written = []
    for ref in dict.fromkeys(refs):
        want = image_id(ref)
        tar, idf = folder / f"{stem(ref)}.tar", folder / f"{stem(ref)}.id"
        if tar.is_file() and idf.is_file() and idf.read_text().strip() == want:
            continue
        tmp = folder / f".{stem(ref)}.tar.{os.getpid()}"
        p = subprocess.run(["docker", "image", "save", "-o", str(tmp), ref], capture_output=True, text=True,
                           timeout=1800, cwd="/")
        if p.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise EngineError(f"docker image save {ref} failed: {p.stderr.strip()[-300:]}")
        tmp.chmod(0o644)
        os.replace(tmp, tar)
        tmp_id = folder / f".{stem(ref)}.id.{os.getpid()}"
        tmp_id.write_text(want + "\n")
        tmp_id.chmod(0o644)
        os.replace(tmp_id, idf)
        written.append(ref)
        if callable(log):
            log(f"shared image: {ref} -> {tar} ({tar.stat().st_size / 2**20:.0f} MiB)")
    return written


def rootless_tools_missing() -> list[str]:
    """What rootless Podman needs that only root installs: a list of problems (empty: all there)."""
    out = []
    for tool in ("podman", "slirp4netns"):
        if shutil.which(tool) is None:
            out.append(f"{tool} is not installed")
    for tool in ("newuidmap", "newgidmap"):
        path = shutil.which(tool)
        if path is None:
            out.append(f"{tool} is not installed (package uidmap)")
        elif not os.stat(path).st_mode & stat.S_ISUID and not _has_setid_caps(path):
            out.append(f"{path} is neither setuid nor given the capability to map ids")
    return out


def _has_setid_caps(path: str) -> bool:
    p = subprocess.run(["getcap", path], capture_output=True, text=True) if shutil.which("getcap") else None
    return bool(p and "cap_set" in p.stdout)
