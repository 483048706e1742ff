"""The ansible-runner wrapper: one private_data_dir per lab, events to progress, status checked.

ansible-runner returns, it does not raise: every run's status and rc are checked
here, and a failed run raises PlaybookFailed naming the failed hosts and tasks
and keeping its artifacts. Successful runs' artifacts are rotated.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LabkitError, PlaybookFailed
from .paths import ansible_root, lab_dir, playbooks_dir, roles_dir, vagrant_home

EventHandler = Callable[[dict], Any]
KEEP_ARTIFACTS = 10


@dataclass
class Failure:
    host: str
    task: str
    msg: str
    unreachable: bool = False

    def __str__(self) -> str:
        kind = "unreachable" if self.unreachable else "failed"
        return f"[{self.host}] {self.task}: {kind}: {self.msg}"


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
) -> RunResult:
    """Run ``playbooks/<playbook>`` (or an absolute path) with ansible-runner for ``lab``; check the outcome.

    Returns a RunResult; raises PlaybookFailed when the run failed, timed out or was
    cancelled, naming the failed hosts and tasks.
    """
    import ansible_runner

    pb = Path(playbook) if Path(playbook).is_absolute() else playbooks_dir() / playbook
    if not pb.is_file():
        raise LabkitError(f"playbook not found: {pb}", "is labkit installed completely?")
    private = lab_dir(lab) / "runner"
    private.mkdir(parents=True, exist_ok=True)
    if inventory is None:
        inventory = str(ansible_root() / "inventories" / "local")
    elif isinstance(inventory, Path):
        inventory = str(inventory)

    venv_bin = str(Path(sys.executable).parent)
    envvars = {
        # ansible-runner and the docker/vagrant modules run from labkit's venv
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "ANSIBLE_ROLES_PATH": str(roles_dir()),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
        # the lab_vm role drives Vagrant with labkit's private VAGRANT_HOME and libvirt's system URI
        "VAGRANT_HOME": str(vagrant_home()),
        "LIBVIRT_DEFAULT_URI": "qemu:///system",
        "VAGRANT_CHECKPOINT_DISABLE": "1",
        "VAGRANT_DEFAULT_PROVIDER": "libvirt",
    }
    failures: list[Failure] = []
    host_facts: dict[str, dict] = {}

    def handler(event: dict) -> bool:
        f = _failure_from(event)
        if f:
            failures.append(f)
        if event.get("event") == "runner_on_ok":
            data = event.get("event_data") or {}
            res = data.get("res") or {}
            facts = res.get("ansible_facts") or {}
            mine = {k: v for k, v in facts.items() if k.startswith("labkit_")}
            if mine:
                host_facts.setdefault(data.get("host", "?"), {}).update(mine)
        if on_event:
            on_event(event)
        return True  # keep the event in artifacts

    t0 = time.monotonic()
    r = ansible_runner.run(
        private_data_dir=str(private),
        project_dir=str(playbooks_dir()),
        playbook=str(pb),
        inventory=inventory,
        extravars=extravars or {},
        envvars=envvars,
        limit=limit,
        forks=forks,
        verbosity=verbosity,
        quiet=not show_output,
        event_handler=handler,
        rotate_artifacts=KEEP_ARTIFACTS,
        suppress_env_files=True,
        timeout=timeout,
    )
    secs = time.monotonic() - t0
    artifacts = Path(r.config.artifact_dir)
    result = RunResult(playbook, r.status, r.rc if r.rc is not None else -1, r.stats or {}, artifacts, secs,
                       failures, host_facts)
    if r.status != "successful" or result.rc != 0:
        if not failures and r.status in ("timeout", "canceled"):
            failures.append(Failure("-", playbook, f"run {r.status}"))
        detail = "\n  ".join(str(f) for f in failures[:20]) or f"status {r.status}, rc {result.rc}"
        hosts = sorted({f.host for f in failures})
        raise PlaybookFailed(
            f"{playbook} failed on {', '.join(hosts) or 'the lab server'} (status {r.status}, rc {result.rc}):\n  "
            + detail,
            f"full output kept in {artifacts}/stdout; rerun with -v for Ansible's own output",
            failures=failures,
            artifacts=artifacts,
        )
    return result
