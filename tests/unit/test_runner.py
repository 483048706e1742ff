"""Real ansible-runner runs against localhost (no container engine needed)."""
import pytest

from labkit.errors import PlaybookFailed
from labkit.runner import _failure_from, run_playbook

OK = """
- hosts: lab_servers
  gather_facts: false
  tasks:
    - name: Say hello
      ansible.builtin.command: echo hello
      changed_when: false
"""

BAD = """
- hosts: lab_servers
  gather_facts: false
  tasks:
    - name: Ensure the impossible
      ansible.builtin.command: sh -c 'echo to-stderr >&2; exit 3'
"""


def test_successful_run_returns_stats(tmp_path, labkit_home):
    pb = tmp_path / "ok.yml"
    pb.write_text(OK)
    r = run_playbook(str(pb), lab="t1")
    assert r.status == "successful" and r.rc == 0
    assert r.total("ok") == 1 and r.changed == 0
    assert r.artifacts.is_dir()


def test_failed_run_raises_naming_host_task_and_keeps_artifacts(tmp_path, labkit_home):
    pb = tmp_path / "bad.yml"
    pb.write_text(BAD)
    with pytest.raises(PlaybookFailed) as ei:
        run_playbook(str(pb), lab="t1")
    e = ei.value
    assert "[localhost] Ensure the impossible" in e.message
    assert "to-stderr" in e.message
    assert e.failures[0].host == "localhost"
    assert (e.artifacts / "stdout").is_file()


def test_failure_parsing_of_loops_and_ignored():
    assert _failure_from({"event": "runner_on_failed", "event_data": {"ignore_errors": True}}) is None
    f = _failure_from({"event": "runner_on_failed", "event_data": {
        "host": "h", "task": "T", "res": {"msg": "One or more items failed",
                                          "results": [{"failed": True, "item": "x", "msg": "nope"}]}}})
    assert f.host == "h" and "x: nope" in f.msg
    u = _failure_from({"event": "runner_on_unreachable", "event_data": {"host": "h", "task": "T",
                                                                         "res": {"msg": "ssh down"}}})
    assert u.unreachable and "unreachable" in str(u)
