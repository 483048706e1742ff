"""Stopping what labkit started, one way for all: SIGTERM first, time to undo what was done
(mmdebstrap unmounts its chroot, Vagrant stops its VM), then SIGKILL for what is left.

Two shapes of "what labkit started": a step run in a process group of its own
(``start_new_session=True``: a box or image build step, mmdebstrap with its apt and dpkg),
stopped by group; and whatever labkit's own process has under it (ansible-runner puts
ansible-playbook in a session of its own, and that starts vagrant, ssh, ...), stopped by
walking /proc.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

KILL_WAIT = 5.0  # after SIGKILL: how long to wait for the kernel to take them away


def _stat(d: Path) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, ..."""
    return (d / "stat").read_text().rsplit(")", 1)[1].split()


def _every_stat() -> Iterator[tuple[int, list[str]]]:
    """(pid, its stat fields) of every process, skipping those that end while being read."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                yield int(d.name), _stat(d)
            except (OSError, IndexError):
                continue


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc), children first."""
    parents: dict[int, list[int]] = {}
    for child, fields in _every_stat():
        parents.setdefault(int(fields[1]), []).append(child)
    out, todo = [], [pid]
    while todo:
        for c in parents.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as stopped: its parent reaps it)."""
    try:
        return _stat(Path(f"/proc/{pid}"))[0] != "Z"
    except (OSError, IndexError):
        return False


def live_groups(pgids: set[int]) -> set[int]:
    """Which of the process groups ``pgids`` still have a running member (zombies, which
    their new parent reaps in its own time, do not count)."""
    return {int(f[2]) for _, f in _every_stat() if f[0] != "Z" and int(f[2]) in pgids}


def _escalate(send: Callable[[int], None], gone: Callable[[], bool], grace: float) -> None:
    """``send`` SIGTERM, wait up to ``grace`` s for ``gone``; then SIGKILL and wait a little."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT)):
        send(sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if gone():
                return
            time.sleep(0.1)


def stop_descendants(grace: float = 30.0) -> list[int]:
    """Stop everything this process started (ansible-playbook, its modules, vagrant, ssh...).
    Returns the pids that were signalled."""
    pids = descendants(os.getpid())

    def send(sig: int) -> None:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)

    _escalate(send, lambda: not any(alive(p) for p in pids), grace)
    return pids


def stop_groups(procs: Iterable[subprocess.Popen], grace: float = 10.0) -> None:
    """Stop each of ``procs``, started with ``start_new_session=True``, with its whole process
    group: all of them at once, the leaders reaped."""
    procs = list(procs)

    def send(sig: int) -> None:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)

    def gone() -> bool:
        for p in procs:
            if p.stdout is not None or p.stderr is not None:  # drain its pipes: a full one would block it
                with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
                    p.communicate(timeout=0.05)
            p.poll()  # reaps a leader that ended (its group may live on)
        return all(p.returncode is not None for p in procs) and not live_groups({p.pid for p in procs})

    _escalate(send, gone, grace)
