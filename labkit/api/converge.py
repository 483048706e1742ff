"""The lab file's own Ansible (lesson content, the role under test) on the live lab's hosts:
``labkit run``, ``test``'s converges, and the content step of ``up``. Never on a lab server:
the inventory holds the lab's hosts only. Facts are cached between the runs of one lab
(``labkit.ansible.runner.fact_cache_env``)."""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from labkit.ansible import inventory as inv_mod
from labkit.ansible import labvars, mitogen, parts
from labkit.ansible.runner import EventHandler as OnEvent
from labkit.ansible.runner import RunResult, fact_cache_env, run_playbook, run_tmp
from labkit.api.discover import engines, hosts, ssh_configs
from labkit.api.select import check_students, lab_lock
from labkit.errors import IdempotenceFailed, NotUp, PlaybookFailed, SpecError, UsageError
from labkit.lab.spec import Lab
from labkit.paths import lab_dir, roles_dir
from labkit.servers.base import Server

# the play between provision.prepare and the content in their one run (labkit.ansible.parts)
PREPARED = "prepare done"


@dataclass
class ConvergeResult:
    run: RunResult | None                  # the converge
    prepare: RunResult | None = None       # provision.prepare, when run
    idempotence: RunResult | None = None   # the second converge, when asked for


class ContentFailed(PlaybookFailed):
    """A run of the lab file's own Ansible failed: ``step`` says which (``prepare``: provision.prepare,
    ``converge``: the playbooks and roles, ``idempotence``: their second run); ``seconds``: how
    long it ran; ``done``: the runs of this converge that ended well before it. Exit code 5, as
    any failed playbook."""

    def __init__(self, e: PlaybookFailed, step: str, seconds: float, done: ConvergeResult) -> None:
        super().__init__(e.message, e.hint, failures=e.failures, artifacts=e.artifacts, host_facts=e.host_facts,
                         stats=e.stats)
        self.step = step
        self.seconds = seconds
        self.done = done


def has_content(lab: Lab) -> bool:
    p = lab.provision
    return bool(p.playbooks or p.roles or p.prepare)


def _site(lab: Lab, playbooks: list[str] | None, pattern: str) -> Path:
    """One playbook that imports the user's playbooks and applies the lab's roles (one run,
    one recap)."""
    plays: list[dict[str, Any]] = [{"import_playbook": str(Path(pb).resolve())}
                         for pb in (playbooks if playbooks is not None else lab.provision.playbooks)]
    if playbooks is None:
        for i, r in enumerate(lab.provision.roles):
            rvars = labvars.data(f"provision.roles[{i}].vars", r.vars, lab.trusted)
            plays.append({"name": f"Apply role {r.role}", "hosts": r.hosts or pattern,
                          "roles": [{"role": r.role, **({"vars": rvars} if rvars else {})}]})
    d = lab_dir(lab.name) / "converge"
    d.mkdir(exist_ok=True)
    f = d / ("site.yml" if playbooks is None else "run.yml")
    f.write_text("---\n# written by labkit for this run\n" + labvars.dump(plays))
    return f


def _extra_vars(lab: Lab, more: dict[str, Any] | None) -> dict[str, Any]:
    ev = lab.provision.extra_vars
    if isinstance(ev, str):  # @FILE
        p = Path(ev[1:])
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise SpecError(f"provision.extra_vars: {p}: cannot read it: {e}") from None
        if not isinstance(data, dict):
            raise SpecError(f"provision.extra_vars: {p}: expected a mapping of variables")
        ev = data
    # the command line's -e is the user's own: as ansible-playbook takes it
    return {**labvars.data("provision.extra_vars", ev, lab.trusted), **(more or {})}


def converge(lab: Lab, playbooks: list[str] | None = None, **opts: Any) -> ConvergeResult:
    """Run the user's playbooks (``playbooks``, else the lab file's playbooks and roles) on the
    live lab's hosts — never on a lab server: the inventory holds the lab's hosts only.

    Options (``_converge``): students, limit, extra_vars, tags, skip_tags, check, diff,
    idempotence (converge a second time, skipping ``molecule-idempotence-notest``, and raise
    IdempotenceFailed, exit 6, naming each host and task that changed), prepare,
    on_event, verbosity, show_output.
    """
    check_students(lab, opts.get("students"))
    for pb in playbooks or []:
        if not Path(pb).is_file():
            raise UsageError(f"{pb}: playbook not found", "give a path to a playbook file")
    with lab_lock(lab.name, "run"), engines(lab.name) as svs:
        return converge_on(lab, svs, playbooks, **opts)


def converge_on(lab: Lab, svs: list[Server], playbooks: list[str] | None = None, *, students: list[str] | None = None,
              limit: str | None = None, extra_vars: dict | None = None, tags: str | None = None,
              skip_tags: str | None = None, check: bool = False, diff: bool = False, idempotence: bool = False,
              prepare: bool = False, on_event: OnEvent | None = None, verbosity: int = 0, show_output: bool = False,
              first: bool = True, only: Sequence[str] | None = None) -> ConvergeResult:
    """converge() with the lab locked and its engines reachable (``labkit up`` calls it so).
    ``first=False``: only the idempotence converge (the first one already ran). ``students``
    and ``only`` (hosts by full name: ``reset``) make the inventory of those hosts alone."""
    pattern = lab.provision.hosts
    if limit:
        pattern = f"{pattern}:&{limit}"
    skips = [*lab.provision.skip_tags, *(skip_tags.split(",") if skip_tags else [])]
    strategy = mitogen.run_env(lab.provision.mitogen, run_tmp(lab.name))
    env = {"ANSIBLE_ROLES_PATH": os.pathsep.join([*lab.provision.roles_path, str(roles_dir())]),
           **fact_cache_env(lab.name), **strategy}
    if lab.provision.collections_path:
        env["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join(lab.provision.collections_path)
    cmdline = " ".join(x for x in ("--check" if check else "", "--diff" if diff else "") if x) or None
    res = ConvergeResult(None)
    rows = [h for h in hosts(lab.name, students or None, servers=svs)
            if h.state == "running" and (only is None or h.name in only)]
    if not rows:
        raise NotUp(f"lab '{lab.name}' has no running hosts", "bring it up with `labkit up`")
    inv = inv_mod.build(rows, ssh_configs(lab.name, rows), labvars.group_vars(lab.provision.group_vars, lab.trusted),
                        mitogen=bool(strategy))
    inv_path = lab_dir(lab.name) / "converge" / "hosts.yml"
    inv_path.parent.mkdir(exist_ok=True)
    inv_mod.write_to(inv_path, inv)
    ev = _extra_vars(lab, extra_vars)

    def go(pb: Path, skip: list[str], step: str, handler: OnEvent | None = on_event) -> RunResult:
        t0 = time.monotonic()
        try:
            return run_playbook(str(pb), lab=lab.name, inventory=inv_path, extravars=ev, limit=pattern,
                                tags=tags, skip_tags=",".join(dict.fromkeys(skip)) or None, cmdline=cmdline,
                                env=env, project_dir=pb.parent, on_event=handler, verbosity=verbosity,
                                show_output=show_output)
        except PlaybookFailed as e:  # which of the lab's runs failed: `labkit test` names the step
            raise ContentFailed(e, step, time.monotonic() - t0, res) from None

    site = _site(lab, playbooks, lab.provision.hosts)
    pre = _site_of(lab, lab.provision.prepare, "prepare.yml") \
        if prepare and lab.provision.prepare and playbooks is None else None
    if pre and first:  # one run for both steps (labkit.ansible.parts), told apart as two
        both = _site_of(lab, [str(pre), parts.mark_play(PREPARED, "prepare"), str(site)], "prepare-site.yml")
        tracker = parts.Parts(["prepare", "converge"], [PREPARED], on_event)
        try:
            whole = go(both, skips, "prepare", tracker)
        except ContentFailed as e:
            if parts.ran_a_task(tracker):
                i, err, done = parts.failure(tracker, [str(pre), str(site)], e)
                res.prepare = done[0] if done else None
                raise ContentFailed(err, tracker.parts[i].name, tracker.parts[i].seconds, res) from None
            # Ansible could not start the run (a playbook it cannot read): each step alone, as it
            # always was, so that the error is the step's own
            res.prepare = go(pre, skips, "prepare")
            res.run = go(site, skips, "converge")
        else:
            res.prepare, res.run = parts.results(tracker, [str(pre), str(site)], whole)
    else:
        if pre:
            res.prepare = go(pre, skips, "prepare")
        if first:
            res.run = go(site, skips, "converge")
    if idempotence or not first:
        res.idempotence = go(site, [*skips, "molecule-idempotence-notest"], "idempotence")
        changed = res.idempotence.changed_hosts()
        if changed:
            lines = [str(c) + (f"\n{c.diff}" if diff and c.diff else "") for c in res.idempotence.changes]
            raise IdempotenceFailed(
                f"not idempotent: the second converge changed {sum(changed.values())} task(s) on "
                f"{', '.join(sorted(changed))}:\n  " + "\n  ".join(lines),
                "make those tasks report ok when nothing is to do (or tag them molecule-idempotence-notest); "
                f"`labkit run --idempotence{' --diff' if not diff else ''}` shows it again")
    return res


def idempotence(lab: Lab, **opts: Any) -> ConvergeResult:
    """Only the second converge of the lab file's content: exit 6 naming what changed."""
    with lab_lock(lab.name, "run"), engines(lab.name) as svs:
        return converge_on(lab, svs, None, first=False, **opts)


def _site_of(lab: Lab, playbooks: Sequence[str | dict[str, Any]], name: str) -> Path:
    """A playbook of labkit's that imports ``playbooks`` (paths) in order, with labkit's own
    plays (dicts) between them."""
    d = lab_dir(lab.name) / "converge"
    d.mkdir(exist_ok=True)
    f = d / name
    f.write_text("---\n" + yaml.safe_dump([p if isinstance(p, dict) else {"import_playbook": p} for p in playbooks],
                                          sort_keys=False))
    return f
