"""File helpers the offline bundle's parts share: a file's SHA-256 (of a path, or of an open
file that is then used as it was hashed), a copy checked as it is written, sizes, an exclusive
lock."""
from __future__ import annotations

import fcntl
import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO, BinaryIO


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading, refusing a symbolic link (as the last component) and
    anything but a regular file (a FIFO would block, a device never end). OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def hash_open(f: BinaryIO) -> str:
    """The SHA-256 of an open file from its start; it is left at its start again, so that what
    is used next is what was hashed (no second open of a path someone may have swapped)."""
    f.seek(0)
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    f.seek(0)
    return h.hexdigest()


def copy_hashed(src: BinaryIO, dst: Path) -> str:
    """``src`` (open, from its start) copied to a new file ``dst`` (0600, never an existing
    path), returning the SHA-256 of what was written: the copy is what the hash says."""
    src.seek(0)
    h = hashlib.sha256()
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def size(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def locked(path: Path) -> IO[str]:
    """``path`` opened and exclusively locked (waiting for another holder); closing it unlocks."""
    f = path.open("w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f
