from labkit.progress import TaskLines


def ev(kind, **data):
    return {"event": kind, "event_data": data}


def test_one_line_per_task_names_changed_and_failed_hosts():
    lines = []
    p = TaskLines(lines.append)
    p(ev("playbook_on_play_start", play="Provision"))
    p(ev("playbook_on_task_start", task="Ensure X"))
    p(ev("runner_on_ok", host="a", res={"changed": True}))
    p(ev("runner_on_ok", host="b", res={"changed": False}))
    p(ev("runner_on_failed", host="c", res={"msg": "boom"}))
    p(ev("runner_on_failed", host="d", res={}, ignore_errors=True))
    p(ev("playbook_on_stats"))
    assert lines[0] == "play: Provision"
    assert "Ensure X" in lines[1]
    assert "changed=1" in lines[1] and "ok=1" in lines[1] and "failed=1" in lines[1] and "ignored=1" in lines[1]
    assert "changed: a" in lines[1] and "FAILED: c" in lines[1]
