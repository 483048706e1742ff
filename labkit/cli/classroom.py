"""The instructor's tools during a class: ``reset`` (one student's hosts made again) and
``checkpoint save|restore|list|delete``."""
from __future__ import annotations

import json
import sys
import time

import click

from labkit import api
from labkit.api import checkpoint as cp_api
from labkit.api.reset import preview
from labkit.cli.common import handle_errors, lab_options, progress, select
from labkit.cli.render import cell, out, plural, recap, say, table
from labkit.cli.render import quiet as silent
from labkit.errors import UsageError


def _confirm(lines: list[str], question: str, yes: bool) -> None:
    """Say what will be lost; go on only with --yes or a 'y' typed at a terminal."""
    for line in lines:
        say(f"  {line}")
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} (not asked: no terminal)", "add --yes to go ahead from a script")
    if not click.confirm(question, default=False):
        raise UsageError("nothing was changed (not confirmed)")


@click.command("reset")
@lab_options
@click.option("--student", required=True, help="The student whose hosts to make again.")
@click.argument("hosts", nargs=-1)
@click.option("--yes", is_flag=True, help="Do not ask (scripts): what is lost is still said.")
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@handle_errors
def reset(lab_file: str | None, lab_name: str | None, student: str, hosts: tuple[str, ...], yes: bool, verbose: int,
          quiet: bool) -> None:
    """Make one student's hosts (all, or HOSTS: debian12, vm, ...) again from their image or
    box, with the lab's content; every other host stays as it is."""
    lab = select(lab_file, lab_name, quiet=quiet)
    say(f"labkit reset: lab '{lab.name}', student {student}:")
    _confirm(preview(lab, student, list(hosts) or None), f"Reset these hosts of {student}?", yes)
    t0 = time.monotonic()
    with progress(verbose, quiet, f"labkit reset {student}") as on_event:
        res = api.reset(lab, student, list(hosts) or None, log=silent if quiet else say, on_event=on_event,
                        verbosity=max(0, verbose - 1), show_output=bool(verbose))
    if res.up.run is not None:
        say(recap(res.up.run))
    if res.up.converge:
        say("your content " + recap(res.up.converge.run))
    say(f"labkit reset: {student}'s {', '.join(t.short for t in res.targets)} made again "
        f"({time.monotonic() - t0:.0f}s)")


@click.group("checkpoint")
def checkpoint_group() -> None:
    """Keep a student's hosts as they are now, and bring them back later."""


def _who(students: tuple[str, ...], every: bool) -> list[str] | None:
    if students and every:
        raise UsageError("give --student or --all-students, not both")
    return list(students) or None


_student = click.option("--student", "students", multiple=True, help="This student (repeat for more).")
_every = click.option("--all-students", "every", is_flag=True, help="Every student of the lab.")


@checkpoint_group.command("save")
@lab_options
@_student
@_every
@click.argument("name")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@handle_errors
def cp_save(lab_file: str | None, lab_name: str | None, students: tuple[str, ...], every: bool, name: str,
            quiet: bool) -> None:
    """Keep the student's running hosts as checkpoint NAME (containers as images, the VM as a
    libvirt snapshot of its disk and memory)."""
    lab = select(lab_file, lab_name, quiet=quiet)
    t0 = time.monotonic()
    saved = cp_api.save(lab, _who(students, every), name, every=every, log=silent if quiet else say)
    say(f"labkit checkpoint: {name} saved for {plural(len(saved), 'student')} "
        f"({_size(sum(c.bytes for c in saved))}, {time.monotonic() - t0:.0f}s)")


@checkpoint_group.command("restore")
@lab_options
@_student
@_every
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask (scripts): what is lost is still said.")
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@handle_errors
def cp_restore(lab_file: str | None, lab_name: str | None, students: tuple[str, ...], every: bool, name: str,
               yes: bool, verbose: int, quiet: bool) -> None:
    """Bring the student's hosts back to checkpoint NAME; the lab's content then runs on them."""
    lab = select(lab_file, lab_name, quiet=quiet)
    who = _who(students, every)
    chosen = [c for c in cp_api.checkpoints(lab, None if every else who) if c.name == name]
    _confirm([f"{c.student}: {', '.join(c.hosts)} go back to {name} ({_when(c.created)}); what changed since "
              "is lost" for c in chosen], f"Restore checkpoint {name}?", yes)
    t0 = time.monotonic()
    with progress(verbose, quiet, f"labkit checkpoint restore {name}") as on_event:
        res = cp_api.restore(lab, who, name, every=every, log=silent if quiet else say, on_event=on_event,
                             verbosity=max(0, verbose - 1), show_output=bool(verbose))
    if res.converge:
        say("your content " + recap(res.converge.run))
    say(f"labkit checkpoint: {name} restored ({time.monotonic() - t0:.0f}s)")


@checkpoint_group.command("list")
@lab_options
@_student
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def cp_list(lab_file: str | None, lab_name: str | None, students: tuple[str, ...], as_json: bool) -> None:
    """The lab's checkpoints: student, name, when, hosts and the disk they use."""
    lab = select(lab_file, lab_name, quiet=True)
    found = cp_api.checkpoints(lab, list(students) or None)
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in found], indent=2))
        return
    if not found:
        say(f"lab '{lab.name}': no checkpoint")
        return
    t = table(f"lab {lab.name}: checkpoints", ["student", "name", "saved", "hosts", "disk"], keys=["student"])
    for c in found:
        t.add_row(cell(c.student), cell(c.name), _when(c.created), cell(" ".join(c.hosts)), _size(c.bytes))
    out.print(t)
    say(f"{plural(len(found), 'checkpoint')}, {_size(sum(c.bytes for c in found))} in all")


@checkpoint_group.command("delete")
@lab_options
@_student
@_every
@click.argument("name")
@handle_errors
def cp_delete(lab_file: str | None, lab_name: str | None, students: tuple[str, ...], every: bool, name: str) -> None:
    """Remove checkpoint NAME (its images and VM snapshots)."""
    lab = select(lab_file, lab_name, quiet=True)
    gone = cp_api.delete(lab, _who(students, every), name, every=every)
    say(f"labkit checkpoint: {name} deleted for {', '.join(c.student for c in gone)} "
        f"({_size(sum(c.bytes for c in gone))} freed)")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _size(n: int) -> str:
    x = float(n)
    for unit in ("B", "KiB", "MiB"):
        if x < 1024:
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} GiB"
