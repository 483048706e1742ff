"""What a live lab is: ``status``, ``facts``, ``verify``, ``report``, ``shell``."""
from __future__ import annotations

import json
import subprocess
import sys

import click

from labkit import api
from labkit.cli.common import handle_errors, lab_options, select, trust_option
from labkit.cli.render import cell, err, facts_table, grade_table, out, say, status_table, verify_table
from labkit.errors import NotUp


@click.command()
@lab_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def status(lab_file: str | None, lab_name: str | None, as_json: bool) -> None:
    """List the lab's hosts and their states (exit 8 when none of them exists: not up)."""
    lab = select(lab_file, lab_name)
    st = api.status(lab)
    if as_json:
        click.echo(json.dumps(st, indent=2))
    elif st["hosts"]:
        out.print(status_table(lab.name, st))
        say(f"networks: {', '.join(st['networks']) or '(none)'}")
    if not st["hosts"]:  # after `down`: nothing of the lab is there (stopped hosts are listed, exit 0)
        raise NotUp(f"lab '{lab.name}' is not up: none of its {len(st['missing'])} host(s) exists"
                    + (" (networks left: " + ", ".join(st["networks"]) + ")" if st["networks"] else ""),
                    f"bring it up with `labkit up{f' -f {lab_file}' if lab_file else ''}`")


@click.command()
@lab_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def facts(lab_file: str | None, lab_name: str | None, as_json: bool) -> None:
    """Side-by-side table: lab server vs each host (distro, kernel, boot_id, PID 1, package manager)."""
    lab = select(lab_file, lab_name)
    rows = api.facts(lab)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        out.print(facts_table(rows, lab.name))


@click.command()
@lab_options
@click.option("--fact", "only", multiple=True, help="Check only this fact (K1..K12; repeatable).")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write a JUnit XML file (one case per fact and host).")
@click.option("--tests", "tests", multiple=True, type=click.Path(exists=True),
              help="Also run these pytest/testinfra tests on the lab's hosts (default: the lab file's tests:).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@trust_option
@handle_errors
def verify(lab_file: str | None, lab_name: str | None, only: tuple[str, ...], junit: str | None, tests: tuple[str, ...], as_json: bool, trust: bool) -> None:
    """Check the kernel-sharing facts K1..K12 (and your own tests) on the live lab (exit 1 when any fails)."""
    lab = select(lab_file, lab_name, trust=trust)
    results = api.verify(lab, list(only) or None, junit, list(tests) or None)
    failed = [r for r in results if r.outcome == "failed"]
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        out.print(verify_table(lab.name, results))
        say(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        sys.exit(1)


@click.command()
@lab_options
@click.option("-o", "--output", "out_dir", default="labkit-report", show_default=True,
              type=click.Path(file_okay=False), help="Folder for report.md, report.html and chart.png.")
@click.option("--checks/--no-checks", default=True, help="Include the K1..K12 checks (labkit verify).")
@click.option("--junit-dir", type=click.Path(file_okay=False), help="Also write one JUnit file per student here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report's data as JSON.")
@trust_option
@handle_errors
def report(lab_file: str | None, lab_name: str | None, out_dir: str, checks: bool, junit_dir: str | None, as_json: bool, trust: bool) -> None:
    """Facts and measurements as Markdown and a self-contained HTML page with a chart (K8, K9)."""
    lab = select(lab_file, lab_name, trust=trust)
    res = api.report(lab, out_dir, with_checks=checks, junit_dir=junit_dir)
    if as_json:
        click.echo(json.dumps(res.data, indent=2))
    else:
        for f in res.files:
            say(f"wrote {f}")
    failed = [c for c in res.data.get("checks") or [] if c.get("outcome") == "failed"]
    if failed:  # the page is written either way; CI still learns that a fact failed
        err.print(f"[bold red]{len(failed)} check(s) failed[/]: "
                  + ", ".join(sorted({f"{c['fact']} on {c['host']}" for c in failed})), markup=True)
        sys.exit(1)


@click.command(context_settings={"ignore_unknown_options": True})
@lab_options
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--student", help="Whose host (default: the lab's first student).")
@click.option("--root", is_flag=True, help="As root instead of the student account.")
@handle_errors
def shell(lab_file: str | None, lab_name: str | None, host: str, command: tuple[str, ...], student: str | None, root: bool) -> None:
    """Open a shell on a lab host as the student (HOST: debian12, busybox, vm, or a full name)."""
    lab = select(lab_file, lab_name)
    argv = api.shell_command(lab, host, student, root, list(command) or None)
    try:
        rc = subprocess.run(argv).returncode
    except KeyboardInterrupt:
        rc = 130
    if command and rc in (126, 127):  # the host has no such command (or cannot run it)
        tip = ("BusyBox has sh and its applets, no bash: `labkit shell busybox sh -c '...'`"
               if "busybox" in host else f"`labkit shell {host}` opens a shell there to look around")
        err.print(f"[yellow]hint:[/] {cell(command[0])!s} could not be run on the host (exit {rc}); {cell(tip)}",
                  markup=True)
    sys.exit(rc)




@click.command()
@lab_options
@click.option("--student", "students", multiple=True, help="Only this student (repeat for more).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Write grades.csv, grades.html and junit-<student>.xml into this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@trust_option
@handle_errors
def grade(lab_file: str | None, lab_name: str | None, students: tuple[str, ...], out_dir: str | None,
          as_json: bool, trust: bool) -> None:
    """Grade each student: the lab file's tests on that student's hosts only, a score per
    student (@pytest.mark.points(N), 1 by default) and each failure's message."""
    lab = select(lab_file, lab_name, trust=trust)
    grades = api.grade(lab, list(students) or None, out_dir)
    if as_json:
        click.echo(json.dumps([g.as_dict() for g in grades], indent=2))
        return
    out.print(grade_table(lab.name, grades))
    for g in grades:
        for c in g.checks:
            if c.outcome == "failed":
                say(f"{g.student}: {c.name}: {c.message}")
    if out_dir:
        say(f"grades written to {out_dir}: grades.csv, grades.html, junit-<student>.xml")
