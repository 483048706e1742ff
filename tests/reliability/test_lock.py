"""Two labkit runs on one lab: the second is refused, naming the holder; a crashed holder
never leaves a stale lock (a kernel flock dies with its process)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

LABKIT = str(Path(sys.executable).parent / "labkit")
HOLD = """
import sys, time
from labkit import api
with api.lab_lock("locktest", "up"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_run_is_refused_naming_the_holder_then_a_killed_holder_frees_it(tmp_path):
    env = dict(os.environ, LABKIT_HOME=str(tmp_path / "home"))
    lab = tmp_path / "lab.yml"
    lab.write_text("name: locktest\nstudents: [a]\ncontainers: [busybox]\nvm: {enabled: false}\n")
    holder = subprocess.Popen([sys.executable, "-c", HOLD], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = subprocess.run([LABKIT, "down", "-f", str(lab)], env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 7  # the lab is busy (EXIT_CODES)
        assert "lab 'locktest' is busy: labkit up (pid" in p.stderr and str(holder.pid) in p.stderr
    finally:
        holder.kill()   # a crash: no clean-up runs
        holder.wait()
    from labkit import api

    os.environ["LABKIT_HOME"] = env["LABKIT_HOME"]
    try:
        with api.lab_lock("locktest", "down"):
            pass
    finally:
        del os.environ["LABKIT_HOME"]


pytestmark = pytest.mark.integration  # runs `labkit down` against the real engine
