"""Real ansible-runner runs against localhost (no container engine needed)."""
import pytest

from labkit.ansible.runner import _failure_from, _without_warnings, run_playbook, script_facts
from labkit.errors import PlaybookFailed

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


POLL = """
- hosts: lab_servers
  gather_facts: false
  tasks:
    - name: Read the setting
      ansible.builtin.assert:
        that: lookup('ansible.builtin.config', 'DEFAULT_INTERNAL_POLL_INTERVAL') == 0.01
"""


def test_labkits_own_runs_read_its_ansible_cfg_not_the_users(tmp_path, labkit_home, monkeypatch):
    """playbooks/ansible.cfg (the main loop's poll interval) is what labkit's own runs read, also
    when the user has a ~/.ansible.cfg of their own."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".ansible.cfg").write_text("[defaults]\ninternal_poll_interval = 0.5\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    pb = tmp_path / "poll.yml"
    pb.write_text(POLL)
    assert run_playbook(str(pb), lab="t1").total("ok") == 1


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


SLOW = """
- hosts: lab_servers
  gather_facts: false
  tasks:
    - name: Ensure a long task
      ansible.builtin.command: sleep 300
"""


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_interrupted_run_leaves_no_process_behind(tmp_path, labkit_home, signame):
    """Ctrl-C or SIGTERM during a run stops ansible-playbook and what it started."""
    import os
    import signal
    import threading
    import time

    from labkit.procs import descendants as _descendants

    pb = tmp_path / "slow.yml"
    pb.write_text(SLOW)
    seen = {}

    def interrupt():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            procs = _descendants(os.getpid())
            cmds = [open(f"/proc/{p}/cmdline", "rb").read() for p in procs if os.path.exists(f"/proc/{p}")]
            if any(b"sleep\x00300" in c for c in cmds):
                seen["procs"] = procs
                break
            time.sleep(0.2)
        os.kill(os.getpid(), getattr(signal, signame))

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises((KeyboardInterrupt, PlaybookFailed)):
        run_playbook(str(pb), lab="t1")
        time.sleep(30)  # the run may report "canceled" instead of raising
    assert seen.get("procs"), "the long task never started"
    left = [p for p in seen["procs"] if os.path.exists(f"/proc/{p}")
            and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not left, f"left running: {left}"


def test_a_playbook_that_does_not_parse_is_named_with_ansibles_words(tmp_path, labkit_home):
    pb = tmp_path / "broken.yml"
    pb.write_text("- hosts: lab_servers\n  tasks:\n    - name: Ensure x: y\n      ansible.builtin.debug: {}\n")
    with pytest.raises(PlaybookFailed) as ei:
        run_playbook(str(pb), lab="t1")
    assert "YAML parsing failed" in ei.value.message or "Syntax Error" in ei.value.message
    assert "Warning: " not in ei.value.message  # Python's warnings (cryptography's, here) say nothing of it


def test_pythons_warnings_are_left_out_of_ansibles_words():
    lines = ["/v/ansible/_ssh_agent.py:18: CryptographyDeprecationWarning: DSA is deprecated.",
             "  from cryptography.hazmat.primitives.asymmetric.dsa import (",
             "[ERROR]: couldn't resolve module/action 'x'", "  indented line of Ansible's own",
             "x.py:3: UserWarning: once", "Origin: /tmp/site.yml:3:7"]
    assert _without_warnings(lines) == ["[ERROR]: couldn't resolve module/action 'x'", "  indented line of Ansible's own",
                                        "Origin: /tmp/site.yml:3:7"]


def test_script_facts_read_from_a_shell_tasks_output():
    """Role student_env's converge script sets no fact: it prints labkit-fact lines (words)."""
    lines = ["kernel=6.1", "labkit-fact: labkit_packages_unavailable= curl  git",
             "labkit-fact: labkit_packages_applets=", "labkit-fact: other=1", "labkit-fact: labkit_x y=1",
             "labkit-changed: motd"]
    assert script_facts(lines) == {"labkit_packages_unavailable": ["curl", "git"], "labkit_packages_applets": []}
    assert script_facts(None) == {} and script_facts("labkit-fact: labkit_a=b") == {}

