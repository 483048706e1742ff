"""labkit's command line: thin click commands over ``labkit.api.verbs``.

This is the only place that prints errors and exits: library code raises
LabkitError(message, hint, exit_code); tracebacks go to the debug log.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
import traceback

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labkit.api import verbs as api
from labkit.errors import EXIT_CODES, CheckFailed, LabkitError, NotUp, UsageError
from labkit.images import build as images_mod
from labkit.lab import catalog
from labkit.paths import PKG_DIR, state_dir

# CI logs and pipes are not terminals: give tables room instead of rich's 80 columns
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)
log = logging.getLogger("labkit")


def _debug_log(exc: BaseException) -> str:
    path = state_dir() / "debug.log"
    with path.open("a") as f:
        f.write("".join(traceback.format_exception(exc)))
    return str(path)


def handle_errors(fn):
    """Turn LabkitError into message + hint on stderr and its exit code; never a traceback."""
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except LabkitError as e:
            err.print(f"[bold red]error:[/] {escape(e.message)}", markup=True)
            if e.hint:
                err.print(f"[yellow]hint:[/] {escape(e.hint)}", markup=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted: run the same command again to converge, or `labkit down` to clean up")
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug: keep the traceback out of the student's way
            path = _debug_log(e)
            err.print(f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e))}", markup=True)
            err.print(f"[yellow]hint:[/] the traceback is in {path}; please report it", markup=True)
            sys.exit(70)
    return wrapper


def lab_options(fn):
    fn = click.option("-f", "--file", "lab_file", type=click.Path(dir_okay=False),
                      help="Lab file. Default: ./lab.yml, else the one lab that is up "
                           "(else, for up/doctor/bundle, the built-in default lab).")(fn)
    fn = click.option("--lab", "lab_name",
                      help="Name of a lab that is up (instead of -f; or set $LABKIT_LAB).")(fn)
    return fn


def _lab(lab_file, lab_name, *, default_ok: bool = False, quiet: bool = False):
    """The lab a command acts on; always says which one and why (on stderr, so --json
    output stays clean)."""
    sel = api.select_lab(lab_file, lab_name, default_ok=default_ok)
    if not quiet:
        err.print(f"lab '{sel.lab.name}' ({sel.why})", markup=False)
    return sel.lab


def _say(msg: str) -> None:
    out.print(msg, markup=False)


def _quiet(_msg: str) -> None:
    pass


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


# --------------------------------------------------------------------------- rendering

def _yesno(v) -> str:
    return "-" if v is None else ("yes" if v else "NO")


def facts_table(rows) -> Table:
    several = len([r for r in rows if r.role == "server"]) > 1
    t = Table(title="kernel-sharing facts: lab server vs lab hosts", title_justify="left")
    from labkit.observe.verify import engine_label

    cols = ["host", "role", "engine", "os-release", "kernel release", "same kernel", "same boot_id", "PID 1",
            "pkg manager", "virt", "uid map"] + (["lab server"] if several else [])
    for col in cols:
        t.add_column(col)
    for r in rows:
        distro = f"{r.os_id} {r.os_version}".strip() or (f"none ({r.distro})" if not r.error else "")
        extra = [r.server] if several else []
        if r.error:
            t.add_row(r.host, r.role, engine_label(r), "[red]unreadable[/]", escape(r.error), "", "", "", "", "", "",
                      *extra)
            continue
        t.add_row(r.host, r.role, engine_label(r), distro, r.kernel_release, _yesno(r.same_kernel),
                  _yesno(r.same_boot), r.pid1, r.pkg_mgr, r.virt, uid_map_words(r.uid_map), *extra)
    return t


def uid_map_words(uid_map: str) -> str:
    """/proc/1/uid_map in a few words: ``none`` for the identity map (no user namespace of its
    own), else ``0->1001, 1->100000 (65536)``: uid 0 inside is uid 1001 outside, and so on."""
    parts = [p.split() for p in uid_map.split(";") if len(p.split()) == 3]
    if not parts:
        return "-"
    if parts == [["0", "0", "4294967295"]]:
        return "none (host ids)"
    return ", ".join(f"{a}->{b}" + (f" ({n})" if n != "1" else "") for a, b, n in parts)


@contextlib.contextmanager
def _progress(verbose: int, quiet: bool, title: str):
    """The event handler for a run: a live per-host view on a terminal, one line per event
    otherwise (CI logs, pipes), nothing with -q, Ansible's own output with -v."""
    from labkit.cli.progress import HostLines, LiveHosts

    if verbose or quiet:
        yield None
    elif sys.stdout.isatty():
        with LiveHosts(out, title) as live:
            yield live
    else:
        yield HostLines(_say)


def _show_plan(rep, as_json: bool) -> None:
    """`up --plan` / `down --plan`: one row per change, grouped by server and student."""
    if as_json:
        click.echo(json.dumps(rep.as_dict(), indent=2))
        return
    if not rep.changes:
        _say(f"labkit {rep.verb} --plan: lab '{rep.lab}': nothing to do"
             + (" (every planned host is there and running)" if rep.verb == "up" else " (nothing of the lab exists)"))
        return
    t = Table(title=f"labkit {rep.verb} --plan: lab '{rep.lab}'", title_justify="left")
    for col in ("server", "student", "action", "kind", "name", "why"):
        t.add_column(col)
    for c in rep.changes:
        t.add_row(c.server, c.student, c.action, c.kind, c.name, escape(c.why))
    out.print(t)
    counts: dict[str, int] = {}
    for c in rep.changes:
        counts[c.action] = counts.get(c.action, 0) + 1
    _say("plan: " + ", ".join(f"{n} to {a}" for a, n in counts.items()) + "; nothing was changed")


def _recap(run) -> str:
    keys = ("ok", "changed", "failures", "dark", "skipped")
    return "recap: " + " ".join(f"{k}={run.total(k)}" for k in keys) + f"  ({run.seconds:.1f}s)"


# --------------------------------------------------------------------------- commands

def _exit_codes_epilog() -> str:
    return "\b\nExit codes:\n" + "\n".join(f"  {code:>3}  {what}" for code, what in EXIT_CODES.items())


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=_exit_codes_epilog())
@click.version_option(package_name="labkit")
def main():
    """labkit: matched lab hosts (a Vagrant VM and containers of several distros per student),
    provisioned by Ansible, and the kernel-sharing facts checked side by side."""
    logging.basicConfig(level=logging.WARNING)
    import signal

    def _terminate(signum, _frame):  # SIGTERM behaves like Ctrl-C: clean-ups run, nothing half-made is left
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)


@main.command()
@lab_options
@click.option("--student", "students", multiple=True, help="Act on this student only (repeatable).")
@click.option("--build/--no-build", default=False, help="Build missing local images and the box (default: error saying how).")
@click.option("--facts/--no-facts", "with_facts", default=True, help="Show the facts table at the end.")
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output (-vv... for more).")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@click.option("-i", "--inventory", type=click.Path(exists=True),
              help="Spread the students over this inventory's lab_servers (remembered for later commands).")
@click.option("--plan", "plan_only", is_flag=True, help="Only show what would be created, started or recreated.")
@click.option("--json", "as_json", is_flag=True, help="With --plan: print the plan as JSON.")
@click.option("--full", is_flag=True,
              help="Run the playbook even when nothing changed since the last full run (repairs changes "
                   "made inside a host by hand).")
@handle_errors
def up(lab_file, lab_name, students, build, with_facts, verbose, quiet, inventory, plan_only, as_json, full):
    """Create and provision the lab's hosts (idempotent), then show the facts."""
    lab = _lab(lab_file, lab_name, default_ok=True, quiet=quiet)
    if plan_only or as_json:
        _show_plan(api.plan(lab, "up", students=list(students) or None, inventory=inventory), as_json)
        return
    say = _quiet if quiet else _say
    say(f"labkit up: lab '{lab.name}', {len(lab.students)} student(s), "
        f"{len(lab.containers)} container(s)" + (" and a VM" if lab.vm.enabled else "") + " each")
    with _progress(verbose, quiet, f"labkit up {lab.name}") as on_event:
        res = api.up(lab, students=list(students) or None, build=build, log=say, on_event=on_event,
                     verbosity=max(0, verbose - 1), show_output=bool(verbose), with_facts=with_facts,
                     inventory=inventory, full=full)
    if res.run is None:
        _say(f"recap: up to date: nothing changed since the full run of "
             f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(res.up_to_date or 0))}, playbook skipped "
             f"({res.seconds:.1f}s; `labkit up --full` runs it anyway)")
    else:
        _say(_recap(res.run))
    if res.converge:
        if res.converge.prepare:
            _say("prepare " + _recap(res.converge.prepare))
        _say("your content " + _recap(res.converge.run))
    for w in res.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", markup=True)
    if with_facts and res.facts:
        out.print(facts_table(res.facts))


@main.command()
@lab_options
@click.option("--student", "students", multiple=True, help="Remove this student's hosts only (repeatable).")
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@click.option("-i", "--inventory", type=click.Path(exists=True), help="The lab servers (default: those of `labkit up`).")
@click.option("--plan", "plan_only", is_flag=True, help="Only show what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="With --plan: print the plan as JSON.")
@handle_errors
def down(lab_file, lab_name, students, verbose, quiet, inventory, plan_only, as_json):
    """Remove everything that carries the lab's labels, from any state (idempotent)."""
    try:
        lab = _lab(lab_file, lab_name, quiet=quiet)
    except NotUp as e:  # idempotent: nothing up is nothing to remove
        if as_json:
            click.echo(json.dumps({"lab": None, "verb": "down", "servers": [], "changes": []}))
        else:
            _say(f"labkit down: {e.message}: nothing to take down")
        return
    if plan_only or as_json:
        _show_plan(api.plan(lab, "down", students=list(students) or None, inventory=inventory), as_json)
        return
    with _progress(verbose, quiet, f"labkit down {lab.name}") as on_event:
        res = api.down(lab, students=list(students) or None, log=_quiet if quiet else _say, on_event=on_event,
                       show_output=bool(verbose), inventory=inventory)
    vms = sum(1 for r in res.removed_vms if r.startswith("domain "))
    _say(f"labkit down: lab '{res.lab}': removed {_n(res.removed_containers, 'container')}, "
         f"{_n(res.removed_networks, 'network')}, {_n(vms, 'VM')}")


@main.command("run")
@lab_options
@click.argument("playbooks", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--student", "students", multiple=True, help="Only this student's hosts (repeatable).")
@click.option("-l", "--limit", help="Further limit the hosts (an Ansible pattern: debian12, vms, student_s01, ...).")
@click.option("-e", "--extra-vars", "extra", multiple=True, help="KEY=VALUE or YAML/JSON (repeatable).")
@click.option("-t", "--tags", help="Only tasks with these tags (comma-separated).")
@click.option("--skip-tags", help="Skip tasks with these tags (added to provision.skip_tags).")
@click.option("-C", "--check", is_flag=True, help="Check mode: change nothing, say what would change.")
@click.option("-D", "--diff", is_flag=True, help="Show what files and templates change.")
@click.option("--idempotence", is_flag=True, help="Converge a second time: exit 6 naming what changed again.")
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@handle_errors
def run_(lab_file, lab_name, playbooks, students, limit, extra, tags, skip_tags, check, diff, idempotence,
         verbose, quiet):
    """Run playbooks (default: the lab file's playbooks and roles) on the live lab's hosts."""
    lab = _lab(lab_file, lab_name, quiet=quiet)
    if not playbooks and not (lab.provision.playbooks or lab.provision.roles):
        raise UsageError(f"lab '{lab.name}' has no provision.playbooks or provision.roles",
                         "name a playbook: `labkit run site.yml`, or add them to the lab file")
    with _progress(verbose, quiet, f"labkit run {lab.name}") as on_event:
        res = api.converge(lab, list(playbooks) or None, students=list(students) or None, limit=limit,
                           extra_vars=_parse_extra(extra), tags=tags, skip_tags=skip_tags, check=check, diff=diff,
                           idempotence=idempotence, on_event=on_event, verbosity=max(0, verbose - 1),
                           show_output=bool(verbose))
    _say(_recap(res.run))
    if diff and res.run:
        for c in res.run.changes:
            if c.diff:
                _say(f"--- {c}\n{c.diff}")
    if res.idempotence:
        _say("idempotence: " + _recap(res.idempotence).removeprefix("recap: ") + ": nothing changed the second time")


def _parse_extra(items) -> dict:
    """``-e KEY=VALUE`` or ``-e '{"k": 1}'`` (YAML/JSON), like ansible-playbook."""
    import yaml

    out: dict = {}
    for it in items:
        if it.lstrip().startswith("{"):
            try:
                data = yaml.safe_load(it)
            except yaml.YAMLError as e:
                raise UsageError(f"-e {it}: not valid YAML/JSON: {e}") from None
            out.update(data if isinstance(data, dict) else {})
        elif "=" in it:
            k, v = it.split("=", 1)
            out[k.strip()] = v
        else:
            raise UsageError(f"-e {it}: expected KEY=VALUE or a YAML/JSON mapping")
    return out


_NEXT = {"up": "up", "idempotence": "run --idempotence", "verify": "verify"}


@main.command("test")
@lab_options
@click.option("--student", "students", multiple=True, help="Only this student's hosts (repeatable).")
@click.option("--build/--no-build", default=False, help="Build missing local images and the box.")
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards (default: `labkit down`).")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write one JUnit file: the facts and your tests.")
@click.option("-i", "--inventory", type=click.Path(exists=True), help="Spread the students over these lab_servers.")
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@handle_errors
def test_(lab_file, lab_name, students, build, keep, junit, inventory, verbose, quiet):
    """Like `molecule test`: up, prepare, converge, idempotence, verify (facts and your tests), down."""
    lab = _lab(lab_file, lab_name, default_ok=True, quiet=quiet)
    say = _quiet if quiet else _say
    step = "up"
    try:
        with _progress(verbose, quiet, f"labkit test {lab.name}") as on_event:
            say(f"labkit test: lab '{lab.name}': step 1/4 up (create, provision, prepare, converge)")
            res = api.up(lab, students=list(students) or None, build=build, log=say, on_event=on_event,
                         verbosity=max(0, verbose - 1), show_output=bool(verbose), with_facts=False,
                         inventory=inventory, full=True)
            _say(_recap(res.run) + (f"; your content: {_recap(res.converge.run).removeprefix('recap: ')}"
                                    if res.converge and res.converge.run else ""))
            if api.has_content(lab):
                step = "idempotence"
                say("labkit test: step 2/4 idempotence (a second converge must change nothing)")
                idem = api.idempotence(lab, students=list(students) or None, on_event=on_event,
                                       verbosity=max(0, verbose - 1), show_output=bool(verbose))
                _say("idempotence " + _recap(idem.idempotence))
        step = "verify"
        say("labkit test: step 3/4 verify (K1..K12" + (" and your tests)" if lab.tests else ")"))
        results = api.verify(lab, None, junit)
        failed = [r for r in results if r.outcome == "failed"]
        for r in failed:
            err.print(f"[bold red]FAIL[/] {r.fact} {escape(r.host)}: {escape(r.detail)}", markup=True)
        _say(f"verify: {len(results) - len(failed)} passed, {len(failed)} failed")
        if failed:
            raise CheckFailed(f"{len(failed)} check(s) failed")
    except LabkitError as e:
        e.message = f"labkit test: step {step} failed: {e.message}"
        nxt = (f"the lab is kept: look with `labkit shell`, rerun the step with `labkit {_NEXT[step]}`, "
               "`labkit down` when done" if keep else "rerun with --keep to look at the hosts")
        e.hint = f"{e.hint}; {nxt}" if e.hint else nxt
        raise
    finally:
        if not keep:
            say("labkit test: step 4/4 down")
            try:
                api.down(lab, students=list(students) or None, log=say)
            except LabkitError as e:  # the step's own error says more; say this one too
                err.print(f"[yellow]warning:[/] down after the test: {escape(e.message)}", markup=True)
    _say("labkit test: passed")


@main.command("inventory")
@lab_options
@click.option("--format", "fmt", type=click.Choice(["yaml", "ini", "json"]), default="yaml", show_default=True)
@click.option("--path", "path_only", is_flag=True, help="Print the path of the inventory file labkit keeps current.")
@click.option("--servers", is_flag=True, help="Include the lab servers (group lab_servers).")
@handle_errors
def inventory_(lab_file, lab_name, fmt, path_only, servers):
    """The lab's hosts as an Ansible inventory (for ansible, ansible-playbook, testinfra, Molecule)."""
    lab = _lab(lab_file, lab_name)
    text, path = api.inventory(lab, fmt, with_servers=servers)
    click.echo(str(path) if path_only else text.rstrip("\n"))


@main.command()
@lab_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def status(lab_file, lab_name, as_json):
    """List the lab's hosts and their states."""
    lab = _lab(lab_file, lab_name)
    st = api.status(lab)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    t = Table(title=f"lab '{lab.name}' on {', '.join(st['servers'])}", title_justify="left")
    for col in ("host", "role", "engine", "student", "distro", "state", "lab server"):
        t.add_column(col)

    def eng(h: dict) -> str:
        if h["role"] == "vm":
            return "libvirt"
        return h.get("engine", "docker") + (f" (rootless, {h['user']})" if h.get("user") else "")

    for h in st["hosts"]:
        t.add_row(h["name"], h["role"], eng(h), h["student"], h["distro"], h["state"], h.get("server", "localhost"))
    for m in st["missing_hosts"]:
        t.add_row(m["name"], m["role"], eng(m), m["student"], m["distro"], "[yellow]missing[/]")
    out.print(t)
    _say(f"networks: {', '.join(st['networks']) or '(none)'}")


@main.command()
@lab_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def facts(lab_file, lab_name, as_json):
    """Side-by-side table: lab server vs each host (distro, kernel, boot_id, PID 1, package manager)."""
    lab = _lab(lab_file, lab_name)
    rows = api.facts(lab)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        out.print(facts_table(rows))


@main.command()
@lab_options
@click.option("--fact", "only", multiple=True, help="Check only this fact (K1..K12; repeatable).")
@click.option("--junit", type=click.Path(dir_okay=False), help="Write a JUnit XML file (one case per fact and host).")
@click.option("--tests", "tests", multiple=True, type=click.Path(exists=True),
              help="Also run these pytest/testinfra tests on the lab's hosts (default: the lab file's tests:).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def verify(lab_file, lab_name, only, junit, tests, as_json):
    """Check the kernel-sharing facts K1..K12 (and your own tests) on the live lab (exit 1 when any fails)."""
    from labkit.observe.checks import FACTS

    lab = _lab(lab_file, lab_name)
    results = api.verify(lab, list(only) or None, junit, list(tests) or None)
    failed = [r for r in results if r.outcome == "failed"]
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        t = Table(title=f"lab '{lab.name}': kernel-sharing facts", title_justify="left")
        for col in ("fact", "host", "engine", "result", "detail"):
            t.add_column(col, overflow="fold")
        style = {"passed": "[green]pass[/]", "failed": "[bold red]FAIL[/]", "skipped": "[yellow]n/a[/]"}
        last = None
        for r in results:
            fact = f"{r.fact} {FACTS.get(r.fact, 'your own tests')}" if r.fact != last else ""
            last = r.fact
            t.add_row(fact, r.host, getattr(r, "engine", "") or "-", style.get(r.outcome, r.outcome), escape(r.detail))
        out.print(t)
        _say(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        sys.exit(1)


@main.command()
@lab_options
@click.option("-o", "--output", "out_dir", default="labkit-report", show_default=True,
              type=click.Path(file_okay=False), help="Folder for report.md, report.html and chart.png.")
@click.option("--checks/--no-checks", default=True, help="Include the K1..K12 checks (labkit verify).")
@click.option("--junit-dir", type=click.Path(file_okay=False), help="Also write one JUnit file per student here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report's data as JSON.")
@handle_errors
def report(lab_file, lab_name, out_dir, checks, junit_dir, as_json):
    """Facts and measurements as Markdown and a self-contained HTML page with a chart (K8, K9)."""
    lab = _lab(lab_file, lab_name)
    res = api.report(lab, out_dir, with_checks=checks, junit_dir=junit_dir)
    if as_json:
        click.echo(json.dumps(res.data, indent=2))
    else:
        for f in res.files:
            _say(f"wrote {f}")
    failed = [c for c in res.data.get("checks") or [] if c.get("outcome") == "failed"]
    if failed:  # the page is written either way; CI still learns that a fact failed
        err.print(f"[bold red]{len(failed)} check(s) failed[/]: "
                  + ", ".join(sorted({f"{c['fact']} on {c['host']}" for c in failed})), markup=True)
        sys.exit(1)


@main.command(context_settings={"ignore_unknown_options": True})
@lab_options
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--student", help="Whose host (default: the lab's first student).")
@click.option("--root", is_flag=True, help="As root instead of the student account.")
@handle_errors
def shell(lab_file, lab_name, host, command, student, root):
    """Open a shell on a lab host as the student (HOST: debian12, busybox, vm, or a full name)."""
    import subprocess

    lab = _lab(lab_file, lab_name)
    argv = api.shell_command(lab, host, student, root, list(command) or None)
    try:
        rc = subprocess.run(argv).returncode
    except KeyboardInterrupt:
        rc = 130
    if command and rc in (126, 127):  # the host has no such command (or cannot run it)
        tip = ("BusyBox has sh and its applets, no bash: `labkit shell busybox sh -c '...'`"
               if "busybox" in host else f"`labkit shell {host}` opens a shell there to look around")
        err.print(f"[yellow]hint:[/] {escape(command[0])!s} could not be run on the host (exit {rc}); {escape(tip)}",
                  markup=True)
    sys.exit(rc)


@main.command()
@lab_options
@click.option("--build", is_flag=True, help="Check for `labkit up --build`: missing local images and the box "
              "count as buildable (warn), not as failures.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def doctor(lab_file, lab_name, build, as_json):
    """Check this machine for everything `labkit up` needs for this lab (images, box, memory,
    CPU, disk); print the fix for each problem; exit 1 when `up` would fail."""
    from labkit.doctor import machine as doc

    lab = _lab(lab_file, lab_name, default_ok=True)
    checks = doc.run_for_lab(lab, build=build)
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        marks = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]",
                 "skipped": "[dim]skipped[/]"}
        t = Table(title=f"labkit doctor (lab '{lab.name}')", title_justify="left")
        for col in ("check", "", "detail", "fix"):
            t.add_column(col, overflow="fold")
        for c in checks:
            t.add_row(c.name, marks[c.status], escape(c.detail), escape(c.fix))
        out.print(t)
    blocking = [c for c in checks if c.status == "fail"]
    verb = "labkit up --build" if build else "labkit up"
    if blocking:
        err.print(f"[bold red]{len(blocking)} problem(s) block `{verb}`:[/] "
                  + ", ".join(c.name for c in blocking), markup=True)
        sys.exit(1)
    warns = [c.name for c in checks if c.status == "warn"]
    skipped = [c.name for c in checks if c.status == "skipped"]
    err.print(f"nothing blocks `{verb}`" + (f"; warnings: {', '.join(warns)}" if warns else "")
              + (f"; not checked: {', '.join(skipped)}" if skipped else ""), markup=False)


@main.command()
@click.argument("path", default="lab.yml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@handle_errors
def init(path, force):
    """Write a commented lab file to start from (default: ./lab.yml)."""
    from pathlib import Path

    from labkit.lab.spec import load_lab

    p = Path(path)
    if p.exists() and not force:
        raise UsageError(f"{p} exists", "pass --force to overwrite it, or give another path")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text((PKG_DIR / "templates" / "lab.yml").read_text())
    load_lab(p)  # what we write must itself be valid
    _say(f"wrote {p}: edit it, then `labkit up -f {p}`")


@main.command()
@handle_errors
def schema():
    """Print the lab file's JSON schema (for editor completion)."""
    from labkit.lab.spec import schema as lab_schema

    click.echo(json.dumps(lab_schema(), indent=2))


# --------------------------------------------------------------------------- images

@main.group()
def images():
    """Base images: build offline (Debian, BusyBox), pull (registry distros), list, remove."""


@images.command("build")
@click.argument("distros", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even when the image is up to date.")
@handle_errors
def images_build(distros, force):
    """Build local images (default: every offline distro of the catalogue)."""
    refs = list(distros) or catalog.names("local")
    images_mod.build(refs, force=force, log=_say)


@images.command("pull")
@click.argument("distros", nargs=-1, required=True)
@click.option("--registry", help="Pull through this registry (mirror), e.g. localhost:5000.")
@handle_errors
def images_pull(distros, registry):
    """Pull registry-backed distros (ubuntu, fedora, alpine, rockylinux, amazonlinux, ...)."""
    images_mod.pull(distros, registry or catalog.default_registry(), log=_say)


@images.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def images_list(as_json):
    """The catalogue with each image's state on this machine."""
    rows = images_mod.list_images()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="distro catalogue", title_justify="left")
    for col in ("distro", "image", "source", "status", "size"):
        t.add_column(col)
    for r in rows:
        size = f"{r['size'] / 1e6:.0f} MB" if r["size"] else ""
        t.add_row(r["distro"], r["image"], r["source"], r["status"], size)
    out.print(t)


@images.command("rm")
@click.argument("distros", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Remove every local (offline-built) image.")
@handle_errors
def images_rm(distros, all_):
    """Remove images by distro reference."""
    refs = list(distros) or (catalog.names("local") if all_ else [])
    if not refs:
        raise UsageError("name the distros to remove, or pass --all", "e.g. `labkit images rm debian:11`")
    images_mod.remove(refs, log=_say)


@main.command()
@click.option("-i", "--inventory", required=True, type=click.Path(exists=True),
              help="Inventory whose group lab_servers lists the servers (see inventories/classroom/).")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False, exists=True),
              help="Offline bundle (labkit bundle create) whose images every server gets; its Debian "
                   "packages, when it has them, are installed from it alone (never a mirror).")
@click.option("--podman", is_flag=True,
              help="Also install and set up Podman on every server (labs with `engine: podman` containers there).")
@click.option("--lxc", is_flag=True,
              help="Also install and set up LXC on every server (labs with `engine: lxc` containers there).")
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@handle_errors
def prepare(inventory, bundle_dir, podman, lxc, verbose, quiet):
    """Prepare lab servers: engine running, Python for Ansible's docker modules, images (and the
    servers' missing Debian packages) from a bundle; with --podman, Podman too; with --lxc, LXC."""
    with _progress(verbose, quiet, "labkit prepare") as on_event:
        res = api.prepare(inventory, bundle_dir, log=_say, on_event=on_event, show_output=bool(verbose),
                          podman=podman, lxc=lxc)
    _say(_recap(res))


# --------------------------------------------------------------------------- bundle

@main.group()
def bundle():
    """Offline bundles: images and box as files with checksums, for other lab servers."""


@bundle.command("create")
@lab_options
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--box/--no-box", "with_box", default=True, help="Include the lab's Vagrant box.")
@click.option("-i", "--inventory", type=click.Path(exists=True),
              help="Carry Debian packages for the release and architecture of each of these lab servers "
                   "(asked over SSH, or their labkit_release/labkit_arch variables).")
@click.option("--release", "releases", multiple=True, metavar="CODENAME",
              help="Debian release of the lab servers (repeatable; default: this machine's).")
@click.option("--arch", "arches", multiple=True, metavar="ARCH",
              help="Debian architecture of the lab servers (repeatable; default: this machine's).")
@click.option("--debs/--no-debs", "with_debs", default=True,
              help="Include the lab servers' Debian packages, with their dependencies, as an apt repository.")
@click.option("--wheels/--no-wheels", "with_wheels", default=True,
              help="Include labkit's wheel and its pinned dependencies (pip install --no-index).")
@click.option("--python", "python", metavar="X.Y",
              help="CPython version of the wheels (default: the first release's, bookworm: 3.11).")
@click.option("--mirror", metavar="URL", help="Debian mirror for the packages (default: this machine's).")
@handle_errors
def bundle_create(lab_file, lab_name, directory, with_box, inventory, releases, arches, with_debs, with_wheels,
                  python, mirror):
    """Save the lab's local images (and box), the lab servers' Debian packages and labkit's
    wheelhouse into DIRECTORY with a manifest and SHA256SUMS: all an offline classroom needs."""
    from labkit.images import bundle as bundle_mod

    lab = _lab(lab_file, lab_name, default_ok=True)
    refs = [c.distro for c in lab.containers if c.spec.source == "local"]
    targets: list = []
    if with_debs:
        if inventory:
            targets += bundle_mod.targets_from_inventory(inventory, log=_say).values()
        if releases or arches or not inventory:
            targets += bundle_mod.targets_from_options(list(releases), list(arches))
        targets = list(dict.fromkeys(targets))
    elif releases or arches:
        raise UsageError("--release/--arch name the Debian packages to carry, and --no-debs carries none",
                         "drop one of them")
    bundle_mod.create(directory, refs, lab.vm.box if (with_box and lab.vm.enabled) else None, log=_say,
                      apt_targets=targets, wheels=with_wheels, python=python, mirror=mirror)


@bundle.command("load")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@handle_errors
def bundle_load(directory):
    """Verify a bundle's checksums and load its images and box on this server."""
    from labkit.images import bundle as bundle_mod

    bundle_mod.load(directory, log=_say)


# --------------------------------------------------------------------------- box

@main.group()
def box():
    """The Vagrant box of the lab VM, built offline from Debian packages."""


@box.command("build")
@click.argument("name", default="labkit/debian12")
@click.option("--force", is_flag=True, help="Rebuild even when the box is up to date.")
@handle_errors
def box_build(name, force):
    """Build the box (Debian bookworm, cloud kernel, systemd, sshd, python3) and add it to Vagrant."""
    from labkit.vm import boxes

    info = boxes.build_box(name, force=force, log=_say)
    state = "up to date, skipped" if info.cached else f"built in {info.seconds:.0f}s"
    _say(f"{info.name}: {state} ({info.size / 2**20:.0f} MiB, {info.path})")


@box.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def box_list(as_json):
    """Boxes in labkit's private VAGRANT_HOME."""
    from labkit.vm import boxes

    rows = boxes.list_boxes()
    for r in rows:
        r["size"] = boxes.box_size(r["name"])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="Vagrant boxes (labkit)", title_justify="left")
    for col in ("name", "provider", "version", "size"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r.get("provider", ""), r.get("version", ""), f"{r['size'] / 2**20:.0f} MiB")
    out.print(t)


@box.command("rm")
@click.argument("name", default="labkit/debian12")
@handle_errors
def box_rm(name):
    """Remove the box from Vagrant and its volume from libvirt's pool."""
    from labkit.vm import boxes

    boxes.remove_box(name, log=_say)


if __name__ == "__main__":  # pragma: no cover
    main()
