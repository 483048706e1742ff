"""Runs of one lab at once, in two processes: each keeps its own temp folder (real ansible-runner
runs against localhost)."""
import os
import subprocess
import sys
import time

from labkit.ansible.runner import run_tmp
from labkit.paths import lab_dir

QUICK = """
- hosts: lab_servers
  gather_facts: false
  tasks:
    - name: Say this run is done
      ansible.builtin.command: touch {{ out }}
      changed_when: true
"""


SLOW_COPY = """
- hosts: lab_servers
  gather_facts: false
  tasks:
    - name: Say this run has started
      ansible.builtin.file:
        path: "{{ out }}.started"
        state: touch
        mode: "0600"
    - name: Wait for the other run to end
      ansible.builtin.wait_for:
        path: "{{ other_done }}"
        timeout: 60
    - name: Copy a content (its temp file is in this machine's temp folder of the run)
      ansible.builtin.copy:
        content: "made by the slow run\\n"
        dest: "{{ out }}"
        mode: "0600"
"""

RUN = """
import sys
from labkit.ansible.runner import run_playbook
run_playbook(sys.argv[1], lab="t1", extravars={"other_done": sys.argv[2], "out": sys.argv[3]})
"""


def test_two_runs_for_one_lab_at_once_keep_their_own_temp_folders(tmp_path, labkit_home):
    """Two processes run playbooks for one lab at once (``labkit prepare`` of two classrooms is
    lab ``_servers`` both times): the run that ends first must not remove the other's temp
    files. Before, both used one folder and the first to end emptied it under the other."""
    slow, quick = tmp_path / "slow.yml", tmp_path / "quick.yml"
    slow.write_text(SLOW_COPY)
    quick.write_text(QUICK)
    done, out = tmp_path / "quick-done", tmp_path / "out.txt"
    env = {**os.environ, "LABKIT_HOME": os.environ["LABKIT_HOME"]}
    stale = run_tmp("t1").parent / "999999999"  # a process that is gone left it
    stale.mkdir(parents=True)
    a = subprocess.Popen([sys.executable, "-c", RUN, str(slow), str(done), str(out)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the quick run starts once the slow one is running, and ends while it waits
    started = tmp_path / "out.txt.started"
    for _ in range(600):
        if started.exists() or a.poll() is not None:
            break
        time.sleep(0.1)
    assert started.exists(), a.communicate()[0] if a.poll() is not None else "the slow run did not start"
    b = subprocess.run([sys.executable, "-c", RUN, str(quick), str(tmp_path / "unused"), str(done)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert b.returncode == 0, b.stdout + b.stderr
    assert done.exists()
    said, _ = a.communicate(timeout=120)
    assert a.returncode == 0, f"the quick run removed the slow run's temp files:\n{said}"
    assert out.read_text() == "made by the slow run\n"
    assert not stale.exists(), "a gone process's temp folder was left"
    assert not (lab_dir("t1") / "runner" / "tmp").exists(), "the runs' temp folders were left"
