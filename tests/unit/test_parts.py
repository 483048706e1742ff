"""labkit.ansible.parts: one run of prepare and the content told apart as two, from its events
(ansible-runner's, as a real run sends them: the play starts, then each task's result)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from labkit.ansible import parts
from labkit.ansible.runner import RunResult
from labkit.errors import PlaybookFailed

A, B = "labkit-p-s01-debian12", "labkit-p-s02-debian12"
MARK = "prepare done"


def play(name: str) -> dict:
    return {"event": "playbook_on_play_start", "event_data": {"name": name, "play": name}}


def res(kind: str, host: str, task: str = "t", changed: bool = False, **data: object) -> dict:
    return {"event": f"runner_on_{kind}", "event_data": {"host": host, "task": task, "res": {"changed": changed,
                                                                                         "msg": task}, **data}}


def run(events: list[dict]) -> parts.Parts:
    ticks = iter(range(0, 1000, 10))
    t = parts.Parts(["prepare", "converge"], [MARK], clock=lambda: float(next(ticks)))
    for e in events:
        t(e)
    return t


def whole(stats: dict) -> RunResult:
    return RunResult("both.yml", "successful", 0, stats, Path("/nonexistent"), 30.0)


def total(**per_key: dict) -> dict:
    return {k: per_key.get(k, {}) for k in parts.KEYS}


MARK_SKIP = [play("labkit: " + MARK), res("skipped", A, "labkit: stop here when prepare failed on a host")]


def test_a_run_that_ended_well_is_two_results_as_two_runs_would_have_been():
    events = [play("Prepare"), {"event": "runner_on_start", "event_data": {"host": A}},
              res("ok", A), res("ok", B, changed=True), res("skipped", B),
              *MARK_SKIP,
              play("Converge"), res("ok", A, changed=True), res("ok", B),
              res("failed", B, "ignored one", changed=True, ignore_errors=True)]
    t = run(events)
    ansible = total(ok={A: 2, B: 3}, changed={A: 1, B: 2}, skipped={A: 1, B: 1}, ignored={B: 1})
    pre, conv = parts.results(t, ["prepare.yml", "site.yml"], whole(ansible))
    assert pre.playbook == "prepare.yml" and conv.playbook == "site.yml"
    assert pre.stats["ok"] == {A: 1, B: 1} and pre.stats["changed"] == {B: 1} and pre.stats["skipped"] == {B: 1}
    assert conv.stats["ok"] == {A: 1, B: 2} and conv.stats["changed"] == {A: 1, B: 1} and conv.stats["ignored"] == {B: 1}
    assert pre.total("failures") == conv.total("failures") == 0
    # the parts and the mark's own skip add up to Ansible's recap of the whole run
    for key in ("ok", "changed", "skipped", "ignored"):
        assert pre.total(key) + conv.total(key) + (key == "skipped") == sum(ansible[key].values()), key
    assert [c.host for c in pre.changes] == [B] and [c.host for c in conv.changes] == [A]
    # the first part's seconds run from the start to the mark (Ansible's own start is prepare's)
    assert pre.seconds == 10.0 and conv.seconds == 10.0


def test_a_failure_in_prepare_stops_at_the_mark_and_is_prepares_own():
    events = [play("Prepare"), res("ok", A), res("failed", B, "Boom"),
              play("labkit: " + MARK), res("failed", A, "labkit: stop here when prepare failed on a host"),
              play("Converge")]
    t = run(events)
    e = PlaybookFailed("both.yml failed", failures=[], stats=total(ok={A: 1}, failures={A: 1, B: 1}))
    i, err, done = parts.failure(t, ["prepare.yml", "site.yml"], e)
    assert i == 0 and done == []
    assert [(f.host, f.task) for f in err.failures] == [(B, "Boom")]  # not the mark's failure on A
    assert err.message.startswith(f"prepare.yml failed on {B} (status failed, rc 2)")
    assert err.stats["failures"] == {B: 1} and err.stats["ok"] == {A: 1}


def test_a_failure_in_the_content_keeps_prepare_as_done():
    events = [play("Prepare"), res("ok", A), res("ok", B), *MARK_SKIP,
              play("Converge"), res("ok", A, changed=True), res("unreachable", B, "Gather")]
    t = run(events)
    e = PlaybookFailed("both.yml failed", stats=total(ok={A: 2, B: 1}, changed={A: 1}, dark={B: 1}, skipped={A: 1}))
    i, err, done = parts.failure(t, ["prepare.yml", "site.yml"], e)
    assert i == 1 and [d.playbook for d in done] == ["prepare.yml"] and done[0].stats["ok"] == {A: 1, B: 1}
    assert [(f.host, f.unreachable) for f in err.failures] == [(B, True)]
    assert "(status failed, rc 4)" in err.message and err.stats["dark"] == {B: 1}
    assert err.host_facts == {} and [c.host for c in err.failures] == [B]


def test_a_rescued_failure_counts_as_rescued_and_the_last_failure_as_the_one_that_stopped_the_host():
    # A: a block's rescue took its failure in prepare; B: rescued once, then failed in the content
    events = [play("Prepare"), res("failed", A, "in a block"), res("ok", A, "rescue"), res("failed", B, "in a block"),
              res("ok", B, "rescue"), *MARK_SKIP, play("Converge"), res("ok", A), res("failed", B, "Boom")]
    t = run(events)
    e = PlaybookFailed("both.yml failed", stats=total(ok={A: 2, B: 1}, failures={B: 1}, rescued={A: 1, B: 1},
                                                      skipped={A: 1}))
    i, err, done = parts.failure(t, ["prepare.yml", "site.yml"], e)
    assert i == 1
    assert done[0].stats["rescued"] == {A: 1, B: 1} and done[0].stats["failures"] == {}
    assert err.stats["failures"] == {B: 1} and [f.task for f in err.failures] == ["Boom"]


def test_an_ignored_unreachable_host_counts_as_ok_and_ignored():
    events = [play("Prepare"), res("unreachable", A), *MARK_SKIP, play("Converge"), res("ok", A)]
    pre, conv = parts.results(run(events), ["p", "s"], whole(total(ok={A: 2}, ignored={A: 1}, skipped={A: 1})))
    assert pre.stats["dark"] == {} and pre.stats["ok"] == {A: 1} and pre.stats["ignored"] == {A: 1}
    assert conv.stats["ok"] == {A: 1}


def test_a_play_of_the_users_named_like_a_later_mark_does_not_start_a_part():
    t = parts.Parts(["a", "b", "c"], ["one", "two"])
    for e in [play("labkit: two"), res("ok", A), play("labkit: one"), res("ok", A), play("labkit: two"), res("ok", B)]:
        t(e)
    assert [len(p.events) for p in t.parts] == [1, 0, 0] and t.current == 2 and len(t.mark_events) == 2


def test_events_go_on_to_the_progress_handler_and_no_task_means_no_part_ran():
    seen: list[dict] = []
    t = parts.Parts(["prepare", "converge"], [MARK], seen.append)
    t(play("Prepare"))
    assert seen == [play("Prepare")] and not parts.ran_a_task(t)
    t(res("skipped", A))
    assert parts.ran_a_task(t)
    with pytest.raises(ValueError, match="one more than the marks"):
        parts.Parts(["one"], [MARK])


def test_the_mark_play_fails_once_when_a_host_left_the_run_and_runs_whatever_the_tags():
    p = parts.mark_play(MARK, "prepare")
    assert p["name"] == "labkit: prepare done" and p["hosts"] == "all" and p["gather_facts"] is False
    (task,) = p["tasks"]
    assert task["run_once"] is True and task["tags"] == ["always"] and "ansible.builtin.fail" in task
    assert task["when"] == "ansible_play_hosts_all | difference(ansible_play_hosts) | length > 0"
    assert "prepare failed on {{ ansible_play_hosts_all | difference(ansible_play_hosts) | join(', ') }}" in \
        task["ansible.builtin.fail"]["msg"]
    yaml.safe_load(yaml.safe_dump([p]))  # a plain play: no object YAML cannot write
