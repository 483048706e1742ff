"""File helpers the offline bundle's parts share: a file's SHA-256, sizes, an exclusive lock."""
from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import IO


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
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
