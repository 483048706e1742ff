"""Grades from the lab file's own tests, run per student on that student's hosts only:
a matrix of students by checks (a test; per host when it is parametrised over hosts), a
score per student (points per test: ``@pytest.mark.points(N)``, 1 by default), each
failure's message; written as CSV (one row per student), an HTML page (sortable, printable)
and one JUnit file per student. The last grade of each student is kept (``last.json``, merged:
grading one student keeps the others'), for the dashboard of `labkit serve`."""
from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.paths import locked_beside


@dataclass
class Check:
    name: str       # the test's name, with ``[host]`` when it runs per host
    outcome: str    # passed, failed, skipped
    points: float
    message: str = ""


@dataclass
class Grade:
    student: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # hosts down, tests that could not run
    junit: str = ""

    @property
    def score(self) -> float:
        return sum(c.points for c in self.checks if c.outcome == "passed")

    @property
    def out_of(self) -> float:
        return sum(c.points for c in self.checks if c.outcome != "skipped")

    def as_dict(self) -> dict[str, Any]:
        return {"student": self.student, "score": self.score, "out_of": self.out_of, "notes": self.notes,
                "junit": self.junit, "checks": [asdict(c) for c in self.checks]}


def from_dict(d: dict[str, Any]) -> Grade:
    """A grade back from ``as_dict`` (what last.json keeps); fields of the wrong type are dropped."""
    checks = []
    for c in d.get("checks") or []:
        if isinstance(c, dict):
            try:
                checks.append(Check(str(c.get("name", "")), str(c.get("outcome", "")), float(c.get("points", 0)),
                                    str(c.get("message", ""))))
            except (TypeError, ValueError):
                continue
    notes = [str(n) for n in d.get("notes") or [] if isinstance(n, str)]
    return Grade(str(d.get("student", "")), checks, notes, str(d.get("junit") or ""))


def read_last(path: Path) -> dict[str, tuple[float, Grade]]:
    """The last grade of each student kept in ``path`` (last.json), with when it was made."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for student, rec in (data.items() if isinstance(data, dict) else ()):
        if isinstance(rec, dict) and isinstance(rec.get("grade"), dict):
            try:
                when = float(rec.get("time", 0) or 0)
            except (TypeError, ValueError):
                when = 0.0
            out[str(student)] = (when, from_dict(rec["grade"]))
    return out


def keep_last(path: Path, grades: Sequence[Grade], when: float | None = None) -> None:
    """Merge ``grades`` into ``path`` (last.json): each student's replaces their own, the others'
    stay. Written whole and renamed, under a lock."""
    when = time.time() if when is None else when
    with locked_beside(path):
        data = {s: {"time": t, "grade": g.as_dict()} for s, (t, g) in read_last(path).items()}
        data.update({g.student: {"time": when, "grade": g.as_dict()} for g in grades})
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)


def checks_of(junit: Path, prefix: str) -> list[Check]:
    """The checks of one student's test run (its JUnit file); host names lose ``prefix``
    (``labkit-LAB-STUDENT-``), so every student's matrix has the same columns."""
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        name = re.sub(r"\[(?:ansible://)?([^\]]+)\]$", lambda m: f"[{m.group(1).removeprefix(prefix)}]", name)
        points = 1.0
        for prop in case.iter("property"):
            if prop.get("name") == "points":
                try:
                    points = float(prop.get("value") or 1)
                except ValueError:
                    pass
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        outcome = "failed" if bad is not None else "skipped" if case.find("skipped") is not None else "passed"
        message = ((bad.get("message") or "").strip().splitlines() or [""])[0][:500] if bad is not None else ""
        out.append(Check(name, outcome, points, message))
    return out


def columns(grades: Sequence[Grade]) -> list[str]:
    return list(dict.fromkeys(c.name for g in grades for c in g.checks))


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: one starting like a formula (=, +, -, @, a tab or
    a carriage return; test names and notes can carry students' text) gets a leading quote."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_text(grades: Sequence[Grade], when: dict[str, float] | None = None) -> str:
    """One row per student; with ``when`` (student: epoch), a ``graded`` column (UTC) after the
    student."""
    cols = columns(grades)
    out = io.StringIO()
    w = csv.writer(out)
    at = ["graded"] if when is not None else []
    w.writerow(["student", *at, "score", "out_of", "notes", *(_cell(c) for c in cols)])
    for g in grades:
        by = {c.name: c.outcome for c in g.checks}
        stamp = ([time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when[g.student])) if g.student in when else ""]
                 if when is not None else [])
        w.writerow([_cell(g.student), *stamp, f"{g.score:g}", f"{g.out_of:g}", _cell("; ".join(g.notes)),
                    *(by.get(c, "-") for c in cols)])
    return out.getvalue()


_SORT = """
document.querySelectorAll('th').forEach((th, i) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
  const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
  const key = r => { const t = r.cells[i].dataset.v ?? r.cells[i].textContent; return isNaN(t) ? t : +t; };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * dir).forEach(r => body.appendChild(r));
}));
"""


def html_page(lab: str, grades: Sequence[Grade]) -> str:
    e = html.escape
    cols = columns(grades)
    mark = {"passed": ("ok", "#1a7f37"), "failed": ("FAIL", "#cf222e"), "skipped": ("skip", "#777")}
    head = "".join(f"<th title='{e(c)}'>{e(c)}</th>" for c in cols)
    rows = []
    for g in grades:
        by = {c.name: c for c in g.checks}
        cells = []
        for c in cols:
            ch = by.get(c)
            word, color = mark.get(ch.outcome, ("-", "#777")) if ch else ("-", "#777")
            title = f" title='{e(ch.message)}'" if ch and ch.message else ""
            cells.append(f"<td style='color:{color}'{title}>{word}</td>")
        rows.append(f"<tr><td>{e(g.student)}</td><td data-v='{g.score:g}'>{g.score:g} / {g.out_of:g}</td>"
                    f"<td>{e('; '.join(g.notes))}</td>{''.join(cells)}</tr>")
    failures = "".join(
        f"<li><b>{e(g.student)}</b> {e(c.name)}: <code>{e(c.message)}</code></li>"
        for g in grades for c in g.checks if c.outcome == "failed")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>labkit {e(lab)}: grades</title>"
            "<style>body{font-family:sans-serif;margin:1cm} table{border-collapse:collapse} "
            "th,td{border:1px solid #ccc;padding:4px 8px;font-size:0.9em} th{cursor:pointer;background:#f3f3f3} "
            "@media print{th{cursor:default}}</style></head><body>"
            f"<h1>Lab {e(lab)}: grades</h1><p>{len(grades)} students; click a column to sort.</p>"
            f"<table><thead><tr><th>student</th><th>score</th><th>notes</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            f"<h2>Failures</h2><ul>{failures or '<li>none</li>'}</ul>"
            f"<script>{_SORT}</script></body></html>\n")
