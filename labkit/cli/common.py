"""What every command shares: errors turned into a message, a hint and an exit code; the lab
options and the lab a command acts on; the progress view of a run."""
from __future__ import annotations

import contextlib
import functools
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import click
import yaml

from labkit import api
from labkit.ansible import labvars
from labkit.ansible.runner import EventHandler
from labkit.cli.progress import HostLines, LiveHosts
from labkit.cli.render import cell, err, out, say
from labkit.errors import LabkitError, UsageError
from labkit.lab.spec import Lab
from labkit.paths import state_dir

F = TypeVar("F", bound=Callable[..., Any])


def _debug_log(exc: BaseException) -> str:
    path = state_dir() / "debug.log"
    with path.open("a") as f:
        f.write("".join(traceback.format_exception(exc)))
    return str(path)


def handle_errors(fn: F) -> F:
    """Turn LabkitError into message + hint on stderr and its exit code; never a traceback."""
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return fn(*a, **kw)
        except LabkitError as e:
            err.print(f"[bold red]error:[/] {cell(e.message)}", markup=True)
            if e.hint:
                err.print(f"[yellow]hint:[/] {cell(e.hint)}", markup=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted: run the same command again to converge, or `labkit down` to clean up")
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug: keep the traceback out of the student's way
            path = _debug_log(e)
            err.print(f"[bold red]internal error:[/] {type(e).__name__}: {cell(str(e))}", markup=True)
            err.print(f"[yellow]hint:[/] the traceback is in {path}; please report it", markup=True)
            sys.exit(70)
    return wrapper  # type: ignore[return-value]


def lab_options(fn: F) -> F:
    fn = click.option("-f", "--file", "lab_file", type=click.Path(dir_okay=False),
                      help="Lab file. Default: ./lab.yml, else the one lab that is up "
                           "(else, for up/doctor/bundle, the built-in default lab).")(fn)
    fn = click.option("--lab", "lab_name",
                      help="Name of a lab that is up (instead of -f; or set $LABKIT_LAB).")(fn)
    return fn


def trust_option(fn: F) -> F:
    return click.option(
        "--trust", is_flag=True,
        help="Trust the lab file as code: its variables may steer Ansible (ansible_* connection "
             "variables, Jinja in values) and its tests' folder may hold conftest.py and pytest "
             "settings (also LABKIT_TRUST=1). See the docs' Security page.")(fn)


def select(lab_file: str | None, lab_name: str | None, *, default_ok: bool = False, quiet: bool = False,
           trust: bool = False) -> Lab:
    """The lab a command acts on; always says which one and why (on stderr, so --json
    output stays clean). ``trust``: ``--trust`` (or ``LABKIT_TRUST=1``) for this command."""
    sel = api.select_lab(lab_file, lab_name, default_ok=default_ok)
    lab = sel.lab.with_trust(labvars.trusted(trust))
    if not quiet:
        err.print(f"lab '{lab.name}' ({sel.why}" + (", trusted as code" if lab.trusted else "") + ")", markup=False)
    return lab


@contextlib.contextmanager
def progress(verbose: int, quiet: bool, title: str) -> Iterator[EventHandler | None]:
    """The event handler for a run: a live per-host view on a terminal, one line per event
    otherwise (CI logs, pipes), nothing with -q, Ansible's own output with -v."""
    if verbose or quiet:
        yield None
    elif sys.stdout.isatty():
        with LiveHosts(out, title) as live:
            yield live
    else:
        yield HostLines(say)


def parse_extra(items: Iterable[str]) -> dict[str, Any]:
    """``-e KEY=VALUE`` or ``-e '{"k": 1}'`` (YAML/JSON), like ansible-playbook."""
    out_: dict[str, Any] = {}
    for it in items:
        if it.lstrip().startswith("{"):
            try:
                data = yaml.safe_load(it)
            except yaml.YAMLError as e:
                raise UsageError(f"-e {it}: not valid YAML/JSON: {e}") from None
            out_.update(data if isinstance(data, dict) else {})
        elif "=" in it:
            k, v = it.split("=", 1)
            out_[k.strip()] = v
        else:
            raise UsageError(f"-e {it}: expected KEY=VALUE or a YAML/JSON mapping")
    return out_
