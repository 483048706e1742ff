"""The lab's life: ``up``, ``down``, ``run``, ``test``, ``inventory``."""
from __future__ import annotations

import json
import os
import shlex
import tempfile
import time
from pathlib import Path

import click

from labkit import api
from labkit.ansible.runner import EventHandler, handlers_forced
from labkit.api.converge import ContentFailed
from labkit.api.planning import PlanReport
from labkit.api.query import inventory_env
from labkit.cli.common import handle_errors, lab_options, parse_extra, progress, select, trust_option
from labkit.cli.render import cell, err, facts_table, out, plan_table, plural, recap, say
from labkit.cli.render import quiet as silent
from labkit.errors import CheckFailed, LabkitError, NotUp, UsageError
from labkit.lab.spec import Lab
from labkit.log import Log
from labkit.observe import junit as junit_mod
from labkit.observe.junit import StepLog


def show_plan(rep: PlanReport, as_json: bool) -> None:
    """`up --plan` / `down --plan`: one row per change, grouped by server and student."""
    if as_json:
        click.echo(json.dumps(rep.as_dict(), indent=2))
        return
    if not rep.changes:
        say(f"labkit {rep.verb} --plan: lab '{rep.lab}': nothing to do"
            + (" (every planned host is there and running)" if rep.verb == "up" else " (nothing of the lab exists)"))
        return
    out.print(plan_table(rep))
    counts: dict[str, int] = {}
    for c in rep.changes:
        counts[c.action] = counts.get(c.action, 0) + 1
    say("plan: " + ", ".join(f"{n} to {a}" for a, n in counts.items()) + "; nothing was changed")


force_handlers_option = click.option(
    "--force-handlers", is_flag=True,
    help="Run the handlers a task notified even after a later task failed (Ansible's --force-handlers; "
         "also ANSIBLE_FORCE_HANDLERS=1).")


@click.command()
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
                   "made inside a host by hand); the lab's own content runs again too.")
@click.option("--no-content-cache", "no_content_cache", is_flag=True,
              help="Converge the lab's content on every host from its base image (no lab image per distro).")
@force_handlers_option
@trust_option
@handle_errors
def up(lab_file: str | None, lab_name: str | None, students: tuple[str, ...], build: bool, with_facts: bool, verbose: int, quiet: bool, inventory: str | None, plan_only: bool, as_json: bool, full: bool, no_content_cache: bool, force_handlers: bool, trust: bool) -> None:
    """Create and provision the lab's hosts (idempotent), then show the facts."""
    lab = select(lab_file, lab_name, default_ok=True, quiet=quiet, trust=trust)
    if plan_only or as_json:
        show_plan(api.plan(lab, "up", students=list(students) or None, inventory=inventory), as_json)
        return
    log = silent if quiet else say
    log(f"labkit up: lab '{lab.name}', {len(lab.students)} student(s), "
        f"{len(lab.containers)} container(s)" + (" and a VM" if lab.vm.enabled else "") + " each")
    with progress(verbose, quiet, f"labkit up {lab.name}") as on_event, handlers_forced(force_handlers):
        res = api.up(lab, students=list(students) or None, build=build, log=log, on_event=on_event,
                     verbosity=max(0, verbose - 1), show_output=bool(verbose), with_facts=with_facts,
                     inventory=inventory, full=full, content_cache=not no_content_cache)
    if res.run is None:
        say(f"recap: up to date: nothing changed since the full run of "
             f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(res.up_to_date or 0))}, playbook "
             + ("and your content " if api.has_content(lab) else "") + "skipped "
             f"({res.seconds:.1f}s; `labkit up --full` runs it anyway)")
    else:
        say(recap(res.run))
    if res.converge:
        if res.converge.prepare:
            say("prepare " + recap(res.converge.prepare))
        say("your content " + recap(res.converge.run))
    for w in res.warnings:
        err.print(f"[yellow]warning:[/] {cell(w)}", markup=True)
    if with_facts and res.facts:
        out.print(facts_table(res.facts, lab.name))


@click.command()
@lab_options
@click.option("--student", "students", multiple=True, help="Remove this student's hosts only (repeatable).")
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@click.option("-i", "--inventory", type=click.Path(exists=True), help="The lab servers (default: those of `labkit up`).")
@click.option("--plan", "plan_only", is_flag=True, help="Only show what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="With --plan: print the plan as JSON.")
@handle_errors
def down(lab_file: str | None, lab_name: str | None, students: tuple[str, ...], verbose: int, quiet: bool, inventory: str | None, plan_only: bool, as_json: bool) -> None:
    """Remove everything that carries the lab's labels, from any state (idempotent)."""
    try:
        lab = select(lab_file, lab_name, quiet=quiet)
    except NotUp as e:  # idempotent: nothing up is nothing to remove
        if as_json:
            click.echo(json.dumps({"lab": None, "verb": "down", "servers": [], "changes": []}))
        else:
            say(f"labkit down: {e.message}: nothing to take down")
        return
    if plan_only or as_json:
        show_plan(api.plan(lab, "down", students=list(students) or None, inventory=inventory), as_json)
        return
    with progress(verbose, quiet, f"labkit down {lab.name}") as on_event:
        res = api.down(lab, students=list(students) or None, log=silent if quiet else say, on_event=on_event,
                       show_output=bool(verbose), inventory=inventory)
    vms = sum(1 for r in res.removed_vms if r.startswith("domain "))
    say(f"labkit down: lab '{res.lab}': removed {plural(res.removed_containers, 'container')}, "
         f"{plural(res.removed_networks, 'network')}, {plural(vms, 'VM')}")


@click.command("run")
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
@force_handlers_option
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@trust_option
@handle_errors
def run_(lab_file: str | None, lab_name: str | None, playbooks: tuple[str, ...], students: tuple[str, ...], limit: str | None, extra: tuple[str, ...], tags: str | None, skip_tags: str | None, check: bool, diff: bool, idempotence: bool, force_handlers: bool, verbose: int, quiet: bool, trust: bool) -> None:
    """Run playbooks (default: the lab file's playbooks and roles) on the live lab's hosts."""
    lab = select(lab_file, lab_name, quiet=quiet, trust=trust)
    if not playbooks and not (lab.provision.playbooks or lab.provision.roles):
        raise UsageError(f"lab '{lab.name}' has no provision.playbooks or provision.roles",
                         "name a playbook: `labkit run site.yml`, or add them to the lab file")
    with progress(verbose, quiet, f"labkit run {lab.name}") as on_event, handlers_forced(force_handlers):
        res = api.converge(lab, list(playbooks) or None, students=list(students) or None, limit=limit,
                           extra_vars=parse_extra(extra), tags=tags, skip_tags=skip_tags, check=check, diff=diff,
                           idempotence=idempotence, on_event=on_event, verbosity=max(0, verbose - 1),
                           show_output=bool(verbose))
    say(recap(res.run))
    if diff and res.run:
        for c in res.run.changes:
            if c.diff:
                say(f"--- {c}\n{c.diff}")
    if res.idempotence:
        say("idempotence: " + recap(res.idempotence).removeprefix("recap: ") + ": nothing changed the second time")


_NEXT = {"up": "up", "prepare": "up", "converge": "run", "idempotence": "run --idempotence", "verify": "verify"}


@click.command("test")
@lab_options
@click.option("--student", "students", multiple=True, help="Only this student's hosts (repeatable).")
@click.option("--build/--no-build", default=False, help="Build missing local images and the box.")
@click.option("--keep", is_flag=True, help="Leave the lab up afterwards (default: `labkit down`).")
@click.option("--junit", type=click.Path(dir_okay=False),
              help="Write one JUnit file, whatever happens: a case per step (up, prepare, converge, idempotence, "
                   "verify) with the failure's message, then the facts and your tests.")
@click.option("-i", "--inventory", type=click.Path(exists=True), help="Spread the students over these lab_servers.")
@force_handlers_option
@click.option("-v", "--verbose", count=True, help="Show Ansible's own output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the result.")
@trust_option
@handle_errors
def test_(lab_file: str | None, lab_name: str | None, students: tuple[str, ...], build: bool, keep: bool, junit: str | None, inventory: str | None, force_handlers: bool, verbose: int, quiet: bool, trust: bool) -> None:
    """Like `molecule test`: up, prepare, converge, idempotence, verify (facts and your tests), down."""
    if junit:
        _writable(junit)
    steps = StepLog()
    lab: Lab | None = None
    with tempfile.TemporaryDirectory(prefix="labkit-test-") as work:
        verify_junit = Path(work) / "verify.xml"
        try:
            lab = select(lab_file, lab_name, default_ok=True, quiet=quiet, trust=trust)
            with handlers_forced(force_handlers):
                _test_steps(lab, steps, list(students) or None, build=build, keep=keep, inventory=inventory,
                            verbose=verbose, quiet=quiet, verify_junit=verify_junit if junit else None)
        except BaseException as e:
            if steps[steps.current].outcome not in ("failed", "error"):
                steps.failed(steps.current, e)
            raise
        finally:
            if junit:
                try:
                    junit_mod.write(junit, lab.name if lab else "-", steps.steps.values(), [verify_junit])
                except OSError as e:  # never in place of the step's own error
                    err.print(f"[yellow]warning:[/] --junit {cell(junit)}: not written: {cell(str(e))}", markup=True)
    say("labkit test: passed")


def _writable(path: str) -> None:
    """--junit FILE: its folder is made now, and must be writable, before anything runs."""
    folder = Path(path).resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--junit {path}: cannot make its folder {folder}: {e.strerror}",
                         "give a path in a folder you can write to") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--junit {path}: cannot write in {folder}", "give a path in a folder you can write to")


def _test_steps(lab: Lab, steps: StepLog, students: list[str] | None, *, build: bool, keep: bool,
                inventory: str | None, verbose: int, quiet: bool, verify_junit: Path | None) -> None:
    """The steps of `labkit test`, each recorded in ``steps``; down at the end unless ``keep``."""
    log = silent if quiet else say
    try:
        with progress(verbose, quiet, f"labkit test {lab.name}") as on_event:
            log(f"labkit test: lab '{lab.name}': step 1/4 up (create, provision, prepare, converge)")
            _up_step(lab, steps, students, build=build, inventory=inventory, verbose=verbose, log=log,
                     on_event=on_event)
            if lab.provision.playbooks or lab.provision.roles:
                log("labkit test: step 2/4 idempotence (a second converge must change nothing)")
                with steps.step("idempotence"):
                    idem = api.idempotence(lab, students=students, on_event=on_event,
                                           verbosity=max(0, verbose - 1), show_output=bool(verbose))
                say("idempotence " + recap(idem.idempotence))
            else:
                steps.skipped("idempotence", "the lab file has no provision.playbooks or provision.roles")
        log("labkit test: step 3/4 verify (K1..K12" + (" and your tests)" if lab.tests else ")"))
        with steps.step("verify"):
            results = api.verify(lab, None, verify_junit)
            failed = [r for r in results if r.outcome == "failed"]
            for r in failed:
                err.print(f"[bold red]FAIL[/] {r.fact} {cell(r.host)}: {cell(r.detail)}", markup=True)
            say(f"verify: {len(results) - len(failed)} passed, {len(failed)} failed")
            if failed:
                raise CheckFailed(f"{len(failed)} check(s) failed: " + ", ".join(
                    f"{r.fact} on {r.host}" + (f" ({r.detail})" if r.fact == "tests" else "") for r in failed[:5])
                    + (" ..." if len(failed) > 5 else ""))
    except LabkitError as e:
        step = steps.current
        e.message = f"labkit test: step {step} failed: {e.message}"
        nxt = (f"the lab is kept: look with `labkit shell`, rerun the step with `labkit {_NEXT[step]}`, "
               "`labkit down` when done" if keep else "rerun with --keep to look at the hosts")
        e.hint = f"{e.hint}; {nxt}" if e.hint else nxt
        raise
    finally:
        if not keep:
            log("labkit test: step 4/4 down")
            try:
                api.down(lab, students=students, log=log)
            except LabkitError as e:  # the step's own error says more; say this one too
                err.print(f"[yellow]warning:[/] down after the test: {cell(e.message)}", markup=True)


def _up_step(lab: Lab, steps: StepLog, students: list[str] | None, *, build: bool, inventory: str | None,
             verbose: int, log: Log, on_event: EventHandler | None) -> None:
    """`labkit up` with the lab's content: steps up (labkit's own playbook), prepare
    (provision.prepare) and converge (the playbooks and roles), told apart by ContentFailed."""
    p = lab.provision
    nothing = {"prepare": "the lab file has no provision.prepare",
               "converge": "the lab file has no provision.playbooks or provision.roles"}
    t0 = time.monotonic()
    steps.current = "up"
    try:
        res = api.up(lab, students=students, build=build, log=log, on_event=on_event,
                     verbosity=max(0, verbose - 1), show_output=bool(verbose), with_facts=False,
                     inventory=inventory, full=True)
    except ContentFailed as e:  # labkit's own part went well: the lab's own Ansible failed
        done = e.done.prepare.seconds if e.done.prepare else 0.0
        steps.passed("up", time.monotonic() - t0 - done - e.seconds)
        if e.done.prepare:
            steps.passed("prepare", done)
        elif not p.prepare:
            steps.skipped("prepare", nothing["prepare"])
        steps.current = e.step
        steps.failed(e.step, e, e.seconds)
        raise
    conv = res.converge
    steps.passed("up", res.run.seconds if res.run else time.monotonic() - t0)
    for name, run in (("prepare", conv.prepare if conv else None), ("converge", conv.run if conv else None)):
        if run is not None and (name == "prepare" or p.playbooks or p.roles):
            steps.passed(name, run.seconds)
        else:
            steps.skipped(name, nothing[name])
    say(recap(res.run) + (f"; your content: {recap(conv.run).removeprefix('recap: ')}"
                          if conv and conv.run else ""))


@click.command("inventory")
@lab_options
@click.option("--format", "fmt", type=click.Choice(["yaml", "ini", "json"]), default="yaml", show_default=True)
@click.option("--path", "path_only", is_flag=True, help="Print the path of the inventory file labkit keeps current.")
@click.option("--servers", is_flag=True, help="Include the lab servers (group lab_servers).")
@click.option("--env", "as_env", is_flag=True,
              help="Print shell `export` lines for plain pytest/testinfra and Molecule-style tests: "
                   "MOLECULE_INVENTORY_FILE, ANSIBLE_INVENTORY, ... (`eval \"$(labkit inventory --env)\"`).")
@trust_option
@handle_errors
def inventory_(lab_file: str | None, lab_name: str | None, fmt: str, path_only: bool, servers: bool, as_env: bool, trust: bool) -> None:
    """The lab's hosts as an Ansible inventory (for ansible, ansible-playbook, testinfra, Molecule)."""
    if path_only and as_env:
        raise UsageError("--path and --env print different things", "give one of them")
    lab = select(lab_file, lab_name, trust=trust)
    text, path = api.inventory(lab, fmt, with_servers=servers)
    if as_env:
        for key, value in inventory_env(lab, path).items():
            click.echo(f"export {key}={shlex.quote(value)}")
        return
    click.echo(str(path) if path_only else text.rstrip("\n"))


