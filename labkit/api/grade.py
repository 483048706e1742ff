"""``grade``: the lab file's tests, per student, on that student's hosts only."""
from __future__ import annotations

import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labkit import names
from labkit.ansible import inventory as inv_mod
from labkit.ansible import labvars
from labkit.api.discover import engines, hosts, ssh_configs, vm_ssh
from labkit.api.planning import context
from labkit.api.select import check_students
from labkit.errors import LabkitError, UsageError
from labkit.lab.spec import Lab
from labkit.observe.grade import Grade, checks_of, csv_text, html_page, keep_last, read_last
from labkit.observe.verify import run_user_tests
from labkit.paths import lab_dir
from labkit.plan.model import make_plan


def last_file(lab: str) -> Path:
    return lab_dir(lab) / "grade" / "last.json"


def last_grades(lab: str) -> dict[str, tuple[float, Grade]]:
    """The last grade of each student of ``lab`` (``grade`` keeps it; one student's grading
    keeps the others'), with when it was made (epoch)."""
    return read_last(last_file(lab))


def grade(lab: Lab, students: Sequence[str] | None = None, out_dir: str | Path | None = None,
          jobs: int = 4) -> list[Grade]:
    """Run the lab file's ``tests:`` for each student (default: all) on that student's
    running hosts alone (an inventory of theirs only), ``jobs`` students at a time. A
    student whose hosts are down is graded on what runs, and their grade says which are
    down. With ``out_dir``: grades.csv, grades.html and junit-<student>.xml there. Each
    student's grade is kept as their last (``last_grades``)."""
    if not lab.tests:
        raise UsageError(f"lab '{lab.name}' has no tests: to grade", "list your testinfra files under tests: in the lab file")
    check_students(lab, list(students) if students else None)
    who = list(students) if students else list(lab.students)
    work = lab_dir(lab.name) / "grade"
    with engines(lab.name) as svs:  # open while the tests run: remote servers' tunnels
        rows = hosts(lab.name, servers=svs)
        planned = make_plan(lab, context(lab, svs)).hosts
        cfgs = ssh_configs(lab.name, [r for r in rows if r.state == "running"])
        gv = labvars.group_vars(lab.provision.group_vars, lab.trusted)

        def one(student: str) -> Grade:
            prefix = names.lab_prefix(lab.name, student)
            mine = [r for r in rows if r.student == student]
            up = [r for r in mine if r.state == "running"]
            g = Grade(student)
            found = {r.name for r in mine}
            g.notes += [f"{h.name.removeprefix(prefix)} missing" for h in planned
                        if h.student == student and h.name not in found]
            g.notes += [f"{r.name.removeprefix(prefix)} {r.state}" for r in mine if r.state != "running"]
            if not up:
                g.notes.append("no host running: nothing graded")
                return g
            d = work / student
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            inv = inv_mod.write_to(d / "hosts.yml", inv_mod.build(up, cfgs, gv))
            try:
                _, junit = run_user_tests(list(lab.tests), inv, lab.provision.hosts, d, trust=lab.trusted)
            except LabkitError as e:
                g.notes.append(f"the tests could not run: {e.message.splitlines()[0]}")
                return g
            g.checks = checks_of(junit, prefix)
            g.junit = str(junit)
            return g

        # one shared connection per VM of the graded students while their tests run
        with vm_ssh(lab.name, [r for r in rows if r.student in who]) as vm, \
                ThreadPoolExecutor(max_workers=max(1, min(jobs, len(who)))) as pool:
            cfgs = vm.settings(cfgs)
            grades = list(pool.map(one, who))
    keep_last(last_file(lab.name), grades)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "grades.csv").write_text(csv_text(grades))
        (out / "grades.html").write_text(html_page(lab.name, grades))
        for g in grades:
            if g.junit:
                shutil.copyfile(g.junit, out / f"junit-{g.student}.xml")
                g.junit = str(out / f"junit-{g.student}.xml")
    return grades
