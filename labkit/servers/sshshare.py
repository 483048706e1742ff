"""The one SSH connection (an OpenSSH ControlMaster) that labkit's Podman and LXC wrappers'
calls to a remote lab server share while labkit commands on the lab run, and who ends it.

Beside the connection's socket ``PATH`` a folder ``PATH.on`` holds one file per process using
it, each named by its pid, changed only under a lock on ``PATH.lock``:

- a labkit command (``engines()``) makes the folder and joins for as long as it runs;
- a wrapper's call (``podman``, ``lxc-attach`` on the server) joins only while the folder
  exists, and only for as long as its ssh runs: a `labkit shell` whose own command has
  finished, or Ansible's last call, keeps the connection until it is done;
- whoever leaves last removes the folder and ends the connection (``ssh -O exit``), under the
  lock, so no one joins a connection being ended. A process that died without leaving does
  not count (its pid no longer runs).

Without the folder (no labkit command on the lab) every call has a connection of its own.
This module is imported by the wrappers on every call: it imports only labkit's leaves.
"""
from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from labkit import procs
from labkit.paths import locked_beside

_HOLDS: dict[str, int] = {}  # this process's joins not yet left, by socket path (engines() nests)
_HOLDS_LOCK = threading.Lock()


def options(path: str) -> list[str]:
    """ssh's options that share the connection at ``path`` (made by the first call to need it;
    it stays a minute after the last, unless the last user ends it first)."""
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={path}", "-o", "ControlPersist=60"]


def join(path: str, *, open_: bool) -> bool:
    """Count this process among the connection's users. ``open_`` (a labkit command) makes the
    folder if there is none; otherwise join only an open one. Whether this process joined."""
    users = Path(f"{path}.on")
    with _HOLDS_LOCK:
        if _HOLDS.get(path):
            _HOLDS[path] += 1
            return True
        with locked_beside(Path(path)):
            if open_:
                if users.is_file() or users.is_symlink():  # an older labkit's marker (a file)
                    users.unlink()
                users.mkdir(mode=0o700, exist_ok=True)
            elif not users.is_dir():
                return False
            (users / str(os.getpid())).touch()
        _HOLDS[path] = 1
        return True


def leave(path: str, exit_argv: Sequence[str]) -> None:
    """This process is done with the connection. The last user removes the folder and ends the
    connection with ``exit_argv`` (``ssh ... -O exit DEST``)."""
    users = Path(f"{path}.on")
    with _HOLDS_LOCK:
        _HOLDS[path] = _HOLDS.get(path, 1) - 1
        if _HOLDS[path] > 0:
            return
        del _HOLDS[path]
        with locked_beside(Path(path)):
            (users / str(os.getpid())).unlink(missing_ok=True)
            others = list(users.iterdir()) if users.is_dir() else []
            dead = [f for f in others if not (f.name.isdigit() and procs.alive(int(f.name)))]
            for f in dead:
                f.unlink(missing_ok=True)
            if len(dead) < len(others):  # another process still uses it
                return
            if users.is_dir():
                users.rmdir()
            if Path(path).exists():
                subprocess.run(list(exit_argv), capture_output=True, timeout=20)


def exit_argv(ssh: Sequence[str], path: str) -> list[str]:
    """``ssh ... -O exit DEST``: the server's ``ssh`` argv (destination last) ending the connection."""
    return [*ssh[:-1], "-o", f"ControlPath={path}", "-O", "exit", ssh[-1]]


@contextmanager
def call(ssh: Sequence[str], path: str | None) -> Iterator[list[str]]:
    """A wrapper's call: the options to add to its ``ssh`` (none without an open connection
    folder), kept joined until the call is over."""
    if not path or not join(path, open_=False):
        yield []
        return
    try:
        yield options(path)
    finally:
        leave(path, exit_argv(ssh, path))
