"""The ansible-runner wrapper: one private_data_dir per lab, events to progress, status checked.

ansible-runner returns, it does not raise: every run's status and rc are checked
here, and a failed run raises PlaybookFailed naming the failed hosts and tasks
and keeping its artifacts. Successful runs' artifacts are rotated.
"""
from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from labkit import procs
from labkit.ansible import labvars
from labkit.errors import Failure, InternalError, PlaybookFailed
from labkit.paths import ansible_root, lab_dir, libvirt_uri, playbooks_dir, roles_dir, vagrant_home

EventHandler = Callable[[dict], Any]
KEEP_ARTIFACTS = 10

# `--force-handlers` of `labkit up`, `run` and `test`: every playbook run in the block runs the
# handlers its tasks notified even after a task failed (Ansible's own --force-handlers)
_FORCE_HANDLERS: ContextVar[bool] = ContextVar("labkit_force_handlers", default=False)
_TRUE = ("1", "true", "yes", "on", "y", "t")


@contextlib.contextmanager
def handlers_forced(on: bool = True) -> Iterator[None]:
    """Within the block, every ``run_playbook`` (of this thread) passes ``--force-handlers``."""
    token = _FORCE_HANDLERS.set(on or _FORCE_HANDLERS.get())
    try:
        yield
    finally:
        _FORCE_HANDLERS.reset(token)


def forcing_handlers() -> bool:
    """Whether runs now force handlers: ``handlers_forced``, or Ansible's own setting
    ``ANSIBLE_FORCE_HANDLERS`` in the environment (ansible-runner passes it on)."""
    return _FORCE_HANDLERS.get() or os.environ.get("ANSIBLE_FORCE_HANDLERS", "").strip().lower() in _TRUE


@dataclass
class Change:
    """A task that reported changed on a host (with its diff when the run asked for one)."""

    host: str
    task: str
    diff: str = ""

    def __str__(self) -> str:
        return f"[{self.host}] {self.task}"


@dataclass
class RunResult:
    playbook: str
    status: str
    rc: int
    stats: dict
    artifacts: Path
    seconds: float
    failures: list[Failure] = field(default_factory=list)
    host_facts: dict[str, dict] = field(default_factory=dict)  # set_stats / labkit_* results by host
    changes: list[Change] = field(default_factory=list)  # every task that reported changed, per host

    def changed_hosts(self) -> dict[str, int]:
        """Per host, how many tasks changed (ansible-runner's stats, not matched text)."""
        return {h: n for h, n in (self.stats.get("changed") or {}).items() if n}

    def total(self, key: str) -> int:
        """Sum of a recap counter over hosts: ``total('changed')``."""
        return sum((self.stats.get(key) or {}).values())

    @property
    def changed(self) -> int:
        return self.total("changed")


def _short(msg: Any, limit: int = 400) -> str:
    text = str(msg).strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure_from(event: dict) -> Failure | None:
    data = event.get("event_data") or {}
    kind = event.get("event")
    if kind not in ("runner_on_failed", "runner_on_unreachable"):
        return None
    if data.get("ignore_errors"):
        return None
    res = data.get("res") or {}
    msg = res.get("msg") or res.get("reason") or "failed"
    detail = res.get("stderr") or res.get("module_stderr") or res.get("stdout") or ""
    if detail and str(detail).strip() not in str(msg):
        msg = f"{msg}: {str(detail).strip()[-300:]}"
    if res.get("results"):  # a loop: name the items that failed
        bad = [r for r in res["results"] if r.get("failed")]
        if bad:
            msg = "; ".join(f"{r.get('item', '')!s:.60}: {r.get('msg', '')}" for r in bad[:3])
    return Failure(data.get("host", "?"), data.get("task", "?"), _short(msg),
                   unreachable=(kind == "runner_on_unreachable"))


def connection_plugins() -> str:
    """ANSIBLE_CONNECTION_PLUGINS with labkit's own (``labkit_lxc``) first, then Ansible's
    default places: for every Ansible labkit runs (playbooks, the user's testinfra tests)."""
    return os.pathsep.join([str(playbooks_dir() / "connection_plugins"), "~/.ansible/plugins/connection",
                            "/usr/share/ansible/plugins/connection"])


FACTS = "facts"          # the lab's fact cache (jsonfile), in its state folder
FACT_CACHE_SECONDS = 7200


def fact_cache_env(lab: str) -> dict[str, str]:
    """Ansible's fact cache for the runs of a lab's own content: facts gathered once are kept
    in the lab's state folder (jsonfile) and a play's fact gathering is skipped for a host whose
    facts are cached (``gathering = smart``) for FACT_CACHE_SECONDS. ``drop_facts`` forgets them
    (``up`` does for every host its own run changed or remade, ``up --full`` for all)."""
    return {"ANSIBLE_GATHERING": "smart", "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(lab_dir(lab) / FACTS),
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": str(FACT_CACHE_SECONDS)}


def drop_facts(lab: str, hosts: Iterable[str] | None = None) -> None:
    """Forget the cached facts of ``hosts`` (all of the lab's when None)."""
    d = lab_dir(lab) / FACTS
    if hosts is None:
        shutil.rmtree(d, ignore_errors=True)
        return
    for h in hosts:
        if h and "/" not in h and not h.startswith("."):
            (d / h).unlink(missing_ok=True)


def run_tmp(lab: str) -> Path:
    """The TMPDIR of this process's runs for ``lab`` on this machine: a folder of the run,
    removed after it. It is the process's own (``runner/tmp/PID``): two runs for one lab at once
    (``labkit prepare`` of two classrooms: both are lab ``_servers``) never share it."""
    return lab_dir(lab) / "runner" / "tmp" / str(os.getpid())


def _fresh_tmp(lab: str) -> Path:
    """This run's empty temp folder. The folders of processes that are gone (a SIGKILL of labkit
    left them) are removed first; those of runs still going are left alone."""
    tmp = run_tmp(lab)
    for d in list(tmp.parent.iterdir()) if tmp.parent.is_dir() else []:
        if d != tmp and not (d.name.isdigit() and procs.alive(int(d.name))):
            shutil.rmtree(d, ignore_errors=True)
            with contextlib.suppress(OSError):
                d.unlink()  # a file in the folder's place
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700, parents=True)
    return tmp


def _drop_tmp(tmp: Path) -> None:
    """Remove the run's temp folder, and their parent when no other run has one there."""
    shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(OSError):
        tmp.parent.rmdir()


def run_playbook(
    playbook: str,
    *,
    lab: str,
    inventory: str | Path | dict | None = None,
    extravars: dict | None = None,
    limit: str | None = None,
    forks: int = 20,
    verbosity: int = 0,
    on_event: EventHandler | None = None,
    show_output: bool = False,
    timeout: int | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
    cmdline: str | None = None,
    env: dict[str, str] | None = None,
    project_dir: str | Path | None = None,
) -> RunResult:
    """Run ``playbooks/<playbook>`` (or an absolute path) with ansible-runner for ``lab``; check the outcome.

    Returns a RunResult; raises PlaybookFailed when the run failed, timed out or was
    cancelled, naming the failed hosts and tasks.
    """
    import ansible_runner  # heavy (all of ansible-runner): loaded when a playbook runs, not with labkit

    pb = Path(playbook) if Path(playbook).is_absolute() else playbooks_dir() / playbook
    if not pb.is_file():
        raise InternalError(f"playbook not found: {pb}", "is labkit installed completely?")
    private = lab_dir(lab) / "runner"
    private.mkdir(parents=True, exist_ok=True)
    # Ansible's and its modules' temp files on this machine (AnsiballZ payloads, Vagrant's)
    # go into a folder of the run, emptied after it, even when a signal stopped the modules
    # before they could clean up (and at the next run after a SIGKILL of labkit itself)
    tmp = _fresh_tmp(lab)
    # the extra variables as a YAML file of the run (-e @FILE), not ansible-runner's JSON on the
    # command line: YAML keeps a lab file's values tagged !unsafe (labkit.ansible.labvars)
    ev_file: str | None = None
    if extravars:
        evp = tmp / "extravars.yml"  # the run's own: another run for the lab may be going
        fd = os.open(evp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(labvars.dump(extravars))
        ev_file = str(evp)
    if inventory is None:
        inventory = str(ansible_root() / "inventories" / "local")
    elif isinstance(inventory, Path):
        inventory = str(inventory)

    venv_bin = str(Path(sys.executable).parent)
    envvars = {
        # ansible-runner and the docker/vagrant modules run from labkit's venv
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "ANSIBLE_ROLES_PATH": str(roles_dir()),
        # labkit's own connection plugin (labkit_lxc: LXC containers) for every playbook labkit
        # runs, the lab's own too
        "ANSIBLE_CONNECTION_PLUGINS": connection_plugins(),
        # lab servers' host keys are checked (~/.ssh/known_hosts, pinned by `labkit prepare`); a
        # VM's own connection settings say otherwise for the VM (its key is new at every boot)
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        "TMPDIR": str(tmp),
        "ANSIBLE_LOCAL_TEMP": str(tmp),
        # the lab_vm role drives Vagrant with labkit's private VAGRANT_HOME and libvirt's system URI
        "VAGRANT_HOME": str(vagrant_home()),
        "LIBVIRT_DEFAULT_URI": libvirt_uri(),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
        **(env or {}),
    }
    failures: list[Failure] = []
    host_facts: dict[str, dict] = {}
    changes: list[Change] = []

    def handler(event: dict) -> bool:
        record(event, failures, host_facts, changes)
        if on_event:
            on_event(event)
        return True  # keep the event in artifacts

    # Ctrl-C or SIGTERM: stop ansible-playbook and everything it started (vagrant included)
    # while they are still ours to find, then tell ansible-runner to cancel.
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        interrupted.append(signum)
        procs.stop_descendants()

    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    forced = forcing_handlers()
    if _FORCE_HANDLERS.get():
        cmdline = " ".join(x for x in (cmdline, "--force-handlers") if x)
    t0 = time.monotonic()
    try:
        r = _run(ansible_runner, private, pb, inventory, ev_file, envvars, limit, forks, verbosity,
                 show_output, handler, timeout, lambda: bool(interrupted),
                 {"tags": tags, "skip_tags": skip_tags, "cmdline": cmdline,
                  "project_dir": str(project_dir) if project_dir else None})
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        _drop_tmp(tmp)
    if interrupted:
        raise KeyboardInterrupt(f"{playbook} interrupted by signal {interrupted[0]}")
    if r.status in ("canceled", "timeout"):
        procs.stop_descendants()
    secs = time.monotonic() - t0
    res = _result(r, playbook, secs, failures, host_facts, changes, forced)
    res.changes = changes
    return res


def record(event: dict, failures: list[Failure], host_facts: dict[str, dict], changes: list[Change]) -> None:
    """What one event of a run tells: a failure, a changed task, labkit's facts of a host."""
    f = _failure_from(event)
    if f:
        failures.append(f)
    if event.get("event") == "runner_on_ok":
        data = event.get("event_data") or {}
        res = data.get("res") or {}
        if res.get("changed"):
            changes.append(Change(data.get("host", "?"), data.get("task", ""), _diff_text(res)))
        facts = res.get("ansible_facts") or {}
        mine = {k: v for k, v in facts.items() if k.startswith("labkit_")}
        mine.update(script_facts(res.get("stdout_lines")))
        if mine:
            host_facts.setdefault(data.get("host", "?"), {}).update(mine)


def script_facts(lines: object) -> dict[str, list[str]]:
    """The facts a shell task reports in its output, one ``labkit-fact: labkit_<name>=<words>``
    line each (role student_env's converge script, which sets no fact itself: a ``set_fact``
    is one more worker per host). Each value is its words, as a list."""
    out: dict[str, list[str]] = {}
    for line in lines if isinstance(lines, list) else []:
        if isinstance(line, str) and line.startswith("labkit-fact: labkit_") and "=" in line:
            name, _, value = line[len("labkit-fact: "):].partition("=")
            if name.replace("_", "").isalnum():
                out[name] = value.split()
    return out


def _diff_text(res: dict) -> str:
    """A task result's --diff output as unified-ish text (before/after per file)."""
    diffs = res.get("diff")
    if not diffs:
        return ""
    out = []
    for d in diffs if isinstance(diffs, list) else [diffs]:
        if not isinstance(d, dict):
            continue
        if d.get("prepared"):
            out.append(str(d["prepared"]))
            continue
        before, after = str(d.get("before", "")), str(d.get("after", ""))
        if before != after:
            out += difflib.unified_diff(before.splitlines(), after.splitlines(),
                                        str(d.get("before_header", "before")), str(d.get("after_header", "after")),
                                        lineterm="")
    return "\n".join(out)


def _run(ansible_runner: ModuleType, private: Path, pb: Path, inventory: str | dict | None,
         extravars: str | None, envvars: dict[str, str], limit: str | None, forks: int, verbosity: int,
         show_output: bool, handler: Callable[[dict], bool], timeout: int | None, cancel: Callable[[], bool],
         more: dict[str, str | None] | None = None) -> Any:  # ansible_runner.Runner (ansible-runner has no types)
    more = {k: v for k, v in (more or {}).items() if v}
    return ansible_runner.run(
        private_data_dir=str(private),
        project_dir=more.pop("project_dir", None) or str(playbooks_dir()),
        playbook=str(pb),
        inventory=inventory,
        extravars=extravars or {},  # the path of a YAML file, or nothing
        envvars=envvars,
        limit=limit,
        forks=forks,
        verbosity=verbosity,
        quiet=not show_output,
        event_handler=handler,
        rotate_artifacts=KEEP_ARTIFACTS,
        suppress_env_files=True,
        timeout=timeout,
        cancel_callback=cancel,
        **more,
    )


def _lost_handlers_hint(failures: list[Failure], changes: list[Change]) -> str:
    """After a failed run without --force-handlers: a failed host whose tasks changed something
    first lost the handlers those changes notified, and the next run, finding the changes made,
    notifies none of them again. Said so, with the way out."""
    failed = {f.host for f in failures if not f.unreachable}
    changed = sorted({c.host for c in changes if c.host in failed})
    if not changed:
        return ""
    return (f"{', '.join(changed)} changed something before failing: any handler those changes notified did "
            "not run, and a next run that finds the changes made will not notify it again; `--force-handlers` "
            "(Ansible's) runs notified handlers even after a failed task")


def _result(r: Any, playbook: str, secs: float, failures: list[Failure], host_facts: dict,
            changes: list[Change] | None = None, forced: bool = False) -> RunResult:
    artifacts = Path(r.config.artifact_dir)
    result = RunResult(playbook, r.status, r.rc if r.rc is not None else -1, r.stats or {}, artifacts, secs,
                       failures, host_facts)
    if r.status != "successful" or result.rc != 0:
        if not failures and r.status in ("timeout", "canceled"):
            failures.append(Failure("-", playbook, f"run {r.status}"))
        if not failures:  # failed before any task ran (a syntax error, a bad inventory): say what Ansible said
            try:
                lines = [ln for ln in (artifacts / "stdout").read_text(errors="replace").splitlines() if ln.strip()]
            except OSError:
                lines = []
            said = [re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in _without_warnings(lines)[:6]]
            if said:
                failures.append(Failure("-", playbook, " / ".join(said)))
        raise failed(playbook, r.status, result.rc, failures, artifacts, host_facts, changes or [], forced,
                     result.stats)
    return result


def _without_warnings(lines: list[str]) -> list[str]:
    """Ansible's output without Python's warnings (``FILE.py:N: SomeWarning: ...`` and the line
    of source it quotes), which say nothing about the run."""
    out: list[str] = []
    skip = False
    for ln in lines:
        if re.search(r"\.py:\d+: \w*Warning: ", ln):
            skip = True
            continue
        if skip and ln.startswith((" ", "\t")):
            skip = False
            continue
        skip = False
        out.append(ln)
    return out


def failed(playbook: str, status: str, rc: int, failures: list[Failure], artifacts: Path, host_facts: dict,
           changes: list[Change], forced: bool, stats: dict | None = None) -> PlaybookFailed:
    """The error of a failed run of ``playbook``, naming its failed hosts and tasks."""
    detail = "\n  ".join(str(f) for f in failures[:20]) or f"status {status}, rc {rc}"
    hosts = sorted({f.host for f in failures})
    lost = "" if forced else _lost_handlers_hint(failures, changes)
    return PlaybookFailed(
        f"{playbook} failed on {', '.join(hosts) or 'the lab server'} (status {status}, rc {rc}):\n  " + detail,
        f"full output kept in {artifacts}/stdout; rerun with -v for Ansible's own output" + (f"; {lost}" if lost else ""),
        failures=failures,
        artifacts=artifacts,
        host_facts=host_facts,
        stats=stats,
    )
