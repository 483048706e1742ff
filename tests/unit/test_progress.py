from labkit.cli.progress import HostLines


def ev(kind, **data):
    return {"event": kind, "event_data": data}


def test_one_line_per_host_change_or_failure_with_hosts_interleaved():
    lines = []
    p = HostLines(lines.append)
    p(ev("playbook_on_play_start", play="Provision"))
    p(ev("runner_on_start", host="vm", task="Ensure the VM is running", task_uuid="t1"))
    p(ev("runner_on_start", host="c1", task="Ensure X", task_uuid="t2"))
    p(ev("runner_on_ok", host="c1", task="Ensure X", task_uuid="t2", res={"changed": False}))
    p(ev("runner_on_failed", host="c2", task="Ensure Y", task_uuid="t3", res={"msg": "boom\nmore"}))
    p(ev("runner_on_failed", host="c3", task="Ensure Y", task_uuid="t3", res={}, ignore_errors=True))
    p(ev("runner_on_ok", host="vm", task="Ensure the VM is running", task_uuid="t1", res={"changed": True}))
    p(ev("playbook_on_stats"))
    assert lines[0] == "play: Provision"
    assert lines[1] == "  [c2] FAILED: Ensure Y: boom"
    assert lines[2] == "  [c3] failed (ignored): Ensure Y"
    assert lines[3].startswith("  [vm] changed: Ensure the VM is running (") and lines[3].endswith("s)")
    # no counts of its own: the command prints Ansible's recap once, so no two ok= disagree
    assert lines[4].startswith("playbook done in ") and "ok=" not in lines[4]
    assert len(lines) == 5


def test_live_view_shows_each_host_with_its_task_and_counts():
    import io

    from rich.console import Console

    from labkit.cli.progress import LiveHosts

    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=150)
    with LiveHosts(con, "labkit up demo") as live:
        live(ev("playbook_on_play_start", play="Create and provision every lab host"))
        live(ev("runner_on_start", host="vm", task="Ensure the VM is running"))
        live(ev("runner_on_start", host="c1", task="Ensure X"))
        live(ev("runner_on_ok", host="c1", task="Ensure X", res={"changed": True}))
        live(ev("runner_on_failed", host="c2", task="Ensure Y", res={}))
        live(ev("playbook_on_stats"))
    text = buf.getvalue()
    assert "Create and provision every lab host" in text
    assert "vm" in text and "c1" in text and "FAILED: Ensure Y" in text and "done" in text
