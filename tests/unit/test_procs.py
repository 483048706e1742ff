"""labkit.procs: stopping a step's whole process group, SIGTERM first and SIGKILL for what
ignores it, on real processes (sh and sleep)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from labkit import procs


def _group(script: str, **kw) -> subprocess.Popen:
    p = subprocess.Popen(["sh", "-c", script], start_new_session=True, **kw)
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split():  # its child started
        assert time.monotonic() < deadline, "the group's child never started"
        time.sleep(0.05)
    return p


def _members(pgid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getpgid(int(d)) == pgid and procs.alive(int(d)):
                    out.append(int(d))
            except ProcessLookupError:
                continue
    return out


def test_a_group_that_stops_on_sigterm_is_gone_without_waiting_out_the_grace():
    p = _group("sleep 300 & wait")
    t0 = time.monotonic()
    procs.stop_groups([p], grace=30)
    assert time.monotonic() - t0 < 10
    assert _members(p.pid) == [] and p.returncode is not None


def test_what_ignores_sigterm_gets_sigkill_after_the_grace_and_pipes_are_drained():
    # the leader and its child ignore SIGTERM; the leader writes more than a pipe holds
    p = _group('trap "" TERM; sleep 300 & head -c 200000 /dev/zero; wait', stdout=subprocess.PIPE,
               stderr=subprocess.PIPE)
    t0 = time.monotonic()
    procs.stop_groups([p], grace=1)
    took = time.monotonic() - t0
    assert 1 <= took < 10, took
    assert _members(p.pid) == [] and p.returncode is not None


def test_several_groups_are_stopped_at_once():
    ps = [_group('trap "" TERM; sleep 300 & wait') for _ in range(3)]
    t0 = time.monotonic()
    procs.stop_groups(ps, grace=1)
    assert time.monotonic() - t0 < 5  # one grace for all, not one each
    assert all(_members(p.pid) == [] for p in ps)
