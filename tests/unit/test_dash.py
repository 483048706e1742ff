"""The dashboard's pure logic (labkit/api/watch.py, labkit/door/dash.py, the last grades and the
instructor's credential): cgroup figures from a made-up hierarchy (v1 and v2), `virsh domstats`
parsed, the session log read incrementally, CPU % between readings, requests checked, grades
merged per student, CSV cells that a spreadsheet would run kept as text. The real thing, with
the engines, `labkit serve` and a browser, is tests/integration/test_dashboard.py."""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from labkit.access import creds
from labkit.api import watch
from labkit.door.dash import grade_summary, parse_request
from labkit.engines.base import HostRow
from labkit.lab.spec import Lab
from labkit.observe.grade import Check, Grade, csv_text, keep_last, read_last

ID1, ID2 = "a" * 64, "b" * 64


def put(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_tree(root: Path) -> None:
    put(root / "memory/docker" / ID1 / "memory.usage_in_bytes", "10485760\n")
    put(root / "memory/docker" / ID1 / "memory.stat", "cache 100\ntotal_inactive_file 2097152\n")
    put(root / "cpuacct/docker" / ID1 / "cpuacct.usage", "3000000000\n")
    put(root / "cpuacct/cpuacct.usage", "0\n")
    put(root / "memory/lxc.payload.labkit-c-s01-alpine/memory.usage_in_bytes", "4096\n")
    put(root / "memory/lxc.payload.labkit-c-s01-alpine/memory.stat", "total_inactive_file 0\n")


def test_cgroups_v1_memory_less_inactive_cache_and_cpu_seconds(tmp_path: Path) -> None:
    v1_tree(tmp_path)
    cg = watch.Cgroups(str(tmp_path))
    assert not cg.v2 and cg.cpu == f"{tmp_path}/cpuacct"
    assert cg.read(ID1) == (10485760 - 2097152, 3.0)
    assert cg.read("name:labkit-c-s01-alpine") == (4096, None)  # LXC, by name; no CPU file here
    assert cg.read(ID2) == (None, None)


def test_cgroups_v2_and_a_new_container_found_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put(tmp_path / "cgroup.controllers", "cpu memory\n")
    scope = tmp_path / "system.slice" / f"docker-{ID1}.scope"
    put(scope / "memory.current", "5000\n")
    put(scope / "memory.stat", "anon 4000\ninactive_file 1000\n")
    put(scope / "cpu.stat", "usage_usec 2500000\nuser_usec 1\n")
    cg = watch.Cgroups(str(tmp_path))
    assert cg.v2 and cg.read(ID1) == (4000, 2.5)
    walks = []
    real = cg.walk
    monkeypatch.setattr(cg, "walk", lambda: (walks.append(1), real())[1])
    assert cg.read(ID2) == (None, None) and len(walks) == 1  # a new id: looked for at once
    assert cg.read(ID2) == (None, None) and len(walks) == 1  # still missing: not again before REINDEX
    other = tmp_path / "machine.slice" / f"libpod-{ID2}.scope"
    put(other / "memory.current", "300\n")
    put(other / "memory.stat", "inactive_file 500\n")  # more cache than usage: all of it counted
    cg.tried.clear()
    assert cg.read(ID2) == (300, None)


def test_domstats_parsed_per_domain() -> None:
    text = """Domain: 'labkit-c-s01-vm'
  cpu.time=12500000000
  cpu.user=1
  balloon.current=1048576
  balloon.rss=524288

Domain: 'labkit-c-s02-vm'
  balloon.current=1048576
"""
    assert watch.domstats(text) == {"labkit-c-s01-vm": (524288 * 1024, 12.5), "labkit-c-s02-vm": (None, None)}


def test_cpu_percent_needs_two_readings() -> None:
    watch._cpu.clear()
    assert watch._cpu_percent("k", 100.0, 10.0) is None
    assert watch._cpu_percent("k", 102.0, 11.0) == 50.0  # 1 s of CPU in 2 s: half a core
    assert watch._cpu_percent("k", 104.0, 1.0) is None  # a new container under the same key: no figure
    assert watch._cpu_percent("none", 104.0, None) is None


def line(when: float, event: str, student: str) -> str:
    return json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(when)), "event": event,
                       "student": student}) + "\n"


def test_activity_reads_only_new_lines_and_not_the_dashboards_own(tmp_path: Path) -> None:
    log = tmp_path / "sessions.log"
    t = float(int(time.time()))
    log.write_text(line(t - 60, "login", "s01") + line(t - 30, "open", "s01") + "not json\n" + '[1, 2]\n')
    act = watch.Activity(log)
    assert act.read() == {"s01": (t - 30, "open")}
    offset = act.offset
    with open(log, "a") as f:
        f.write(line(t - 10, "dash-action", "s02") + line(t - 5, "refused", "s02") + '{"time": "half')
    assert act.read() == {"s01": (t - 30, "open"), "s02": (t - 5, "refused")}
    assert act.offset > offset and act.offset < log.stat().st_size  # the half line: read whole next time
    log.unlink()
    log.write_text(line(t, "login", "s03"))  # a new file: read from its start
    assert act.read() == {"s03": (t, "login")}


def test_class_view_students_by_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    v1_tree(tmp_path / "cg")
    lab = Lab.model_validate({"name": "c", "students": ["s01", "s02"], "containers": ["debian:12"],
                              "vm": {"enabled": True}})

    def row(student: str, short: str, state: str, role: str = "container", local: bool = True) -> HostRow:
        return HostRow(name=f"labkit-c-{student}-{short}", role=role, student=student, distro="debian:12",
                       state=state, image="", spec="", server="here" if local else "far", local=local,
                       engine="docker" if role == "container" else "")

    rows = [(row("s01", "debian12", "running"), ID1), (row("s02", "debian12", "running", local=False), ID2),
            (row("s01", "vm", "shutoff", role="vm"), ""), (row("s03", "debian12", "running"), ID1)]
    monkeypatch.setattr(watch, "_rows", lambda lab, servers: rows)
    monkeypatch.setattr(watch, "_cgroups", watch.Cgroups(str(tmp_path / "cg")))
    t = float(int(time.time()))
    put(creds.access_dir("c") / "sessions.log", line(t - 100, "login", "s02"))
    v = watch.class_view(lab, [], sessions=[("s02", t - 3)])
    assert v["columns"] == ["debian12", "vm"] and [s["student"] for s in v["students"]] == ["s01", "s02"]
    s01, s02 = v["students"]
    assert s01["hosts"]["debian12"]["memory"] == 10485760 - 2097152 and s01["hosts"]["debian12"]["id"] == ID1[:12]
    assert s01["hosts"]["vm"]["state"] == "shutoff" and s01["hosts"]["vm"]["memory"] is None
    assert s02["hosts"]["debian12"]["memory"] is None  # another lab server's: '-' on the page
    assert s01["last_activity"] is None and s02["last_activity"] == t - 3 and s02["open_sessions"] == 1
    assert v["cost"]["hosts"] == 4 and v["cost"]["measured"] == 1


def test_parse_request_takes_the_labs_names_only() -> None:
    students, cols = ["s01", "s02"], ["debian12", "vm"]
    assert parse_request({"action": "reset", "student": "s02", "hosts": ["debian12", "debian12"]}, students,
                         cols) == ("reset", "s02", ["debian12"], "")
    assert parse_request({"action": "grade", "student": "s01", "hosts": ["vm"]}, students, cols) == \
        ("grade", "s01", [], "")
    assert parse_request({"action": "restore", "student": "s01", "checkpoint": "stage2"}, students, cols) == \
        ("restore", "s01", [], "stage2")
    for bad in ([], {"action": "rm", "student": "s01"}, {"action": "reset", "student": "../s01"},
                {"action": "reset", "student": "s01", "hosts": ["labkit-c-s02-debian12"]},
                {"action": "reset", "student": "s01", "hosts": "debian12"},
                {"action": "restore", "student": "s01"}, {"action": "restore", "student": "s01", "checkpoint": "a\nb"}):
        with pytest.raises(ValueError):
            parse_request(bad, students, cols)


def grade_of(student: str, outcome: str, message: str = "") -> Grade:
    return Grade(student, [Check("test_page[debian12]", outcome, 1.0, message)])


def test_last_grades_merge_per_student(tmp_path: Path) -> None:
    path = tmp_path / "grade" / "last.json"
    keep_last(path, [grade_of("s01", "passed"), grade_of("s02", "failed", "gone")], when=100.0)
    keep_last(path, [grade_of("s02", "passed")], when=200.0)  # s02 graded again alone
    got = read_last(path)
    assert {s: (t, g.score) for s, (t, g) in got.items()} == {"s01": (100.0, 1.0), "s02": (200.0, 1.0)}
    path.write_text("{not json")
    assert read_last(path) == {}


def test_csv_cells_a_spreadsheet_would_run_stay_text() -> None:
    g = Grade("s01", [Check("=HYPERLINK(\"x\")", "failed", 1.0)], ["@SUM(A1)", "+1"])
    rows = list(csv.reader(io.StringIO(csv_text([g], {"s01": 0.0}))))
    assert rows[0] == ["student", "graded", "score", "out_of", "notes", "'=HYPERLINK(\"x\")"]
    assert rows[1] == ["s01", "1970-01-01T00:00:00Z", "0", "1", "'@SUM(A1); +1", "failed"]
    assert list(csv.reader(io.StringIO(csv_text([g]))))[0][:2] == ["student", "score"]  # `labkit grade -o`'s


def test_grade_summary_caps_the_failures() -> None:
    g = Grade("s01", [Check(f"t{i}", "failed", 1.0, "<b>x</b>") for i in range(25)] + [Check("ok", "passed", 2.0)])
    s = grade_summary(5.0, g)
    assert (s["score"], s["out_of"], len(s["failures"]), s["more"]) == (2.0, 27.0, 20, 5)
    assert s["failures"][0] == {"name": "t0", "message": "<b>x</b>"}  # as it is: the page sets it as text


def test_the_instructor_credential_is_shown_once_and_rotates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    assert creds.instructor("c") is None and creds.instructor_mtime("c") == 0.0
    first = creds.make_instructor("c")
    assert first and creds.make_instructor("c") is None  # shown once
    e = creds.instructor("c")
    assert e is not None and first not in (creds.access_dir("c") / "instructor.json").read_text()
    assert creds.check_password(e, first) and not creds.check_password(e, first + "x")
    assert (creds.access_dir("c") / "instructor.json").stat().st_mode & 0o777 == 0o600
    second = creds.make_instructor("c", rotate=True)
    assert second and second != first and not creds.check_password(creds.instructor("c"), first)
    assert creds.entries("c") == {}  # nobody's student credential
