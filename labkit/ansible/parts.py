"""One ansible-playbook run told apart in parts, as if each part had been a run of its own.

``labkit up`` runs the lab's ``provision.prepare`` and its content in one run: each host's
connection (Mitogen's interpreter in it) and Ansible's own start are paid once, not twice (40
students, webclass, plain ansible-playbook with Mitogen: 9.3 s + 35.4 s as two runs, 35.7 s as
one). The run's playbook puts a play of labkit's between the parts, a *mark* (``mark_play``):
it stops the run when a host failed or went unreachable in the part before it, so the next
part runs only where the previous one ended well on every host, as two runs did. ``Parts``
watches the run's events and gives each part what a run of its own would have: its recap
counts, failures, changed tasks, labkit facts and seconds.

The counts come from the part's task events, reconciled with Ansible's own recap of the whole
run (``split``): a failure event of a host whose recap has no failure was rescued
(a block's ``rescue``), one whose recap has no ``unreachable`` was ignored
(``ignore_unreachable``); of a host that did fail, its last failure is the one that stopped it,
earlier ones were rescued. The marks' own events (a skipped task each) are left out.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from labkit.ansible.runner import Change, RunResult, failed, forcing_handlers, record
from labkit.errors import Failure, PlaybookFailed

KEYS = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
# the events of a task's result on a host (runner_on_start, the async polls and the items of a
# loop are not results of their own)
RESULTS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")
MARK_PREFIX = "labkit: "


def mark_play(name: str, step: str) -> dict[str, Any]:
    """The play between two parts: when a host failed or was unreachable in the parts before it
    (Ansible leaves such a host out of the plays after), it fails once, which stops the run.
    Runs on the controller only (``fail``), whatever the tags asked for."""
    return {"name": MARK_PREFIX + name, "hosts": "all", "gather_facts": False,
            "tasks": [{"name": f"{MARK_PREFIX}stop here when {step} failed on a host",
                       "ansible.builtin.fail": {
                           "msg": f"{step} failed on {{{{ ansible_play_hosts_all | difference(ansible_play_hosts) "
                                  "| join(', ') }}: the run stops before the next step"},
                       "when": "ansible_play_hosts_all | difference(ansible_play_hosts) | length > 0",
                       "run_once": True, "tags": ["always"]}]}


@dataclass
class Part:
    """What one part's events said."""

    name: str  # the step it is (`prepare`, `converge`): ContentFailed.step when it fails
    seconds: float = 0.0
    events: list[dict] = field(default_factory=list)  # the task results: runner_on_* of the part


class Parts:
    """An event handler (ansible-runner's) for a run whose plays named ``MARK_PREFIX + mark``
    begin the parts after the first: ``Parts(["prepare", "converge"], ["prepare done"])``.
    ``on_event`` gets every event, as it would without it."""

    def __init__(self, names: Sequence[str], marks: Sequence[str], on_event: Callable[[dict], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if len(names) != len(marks) + 1:
            raise ValueError("one name per part: one more than the marks")
        self.parts = [Part(n) for n in names]
        self._marks = [MARK_PREFIX + m for m in marks]
        self._on_event = on_event
        self._clock = clock
        self._t = clock()
        self.current = 0          # the index of the part the run is in
        self.in_mark = False      # whether the run is in a mark's play now (its events left out)
        self.stopped_at_mark = False  # a mark stopped the run: the part before it failed
        self.mark_events: list[dict] = []  # the marks' own results (left out of every part)

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            name = data.get("name") or data.get("play") or ""
            if name in self._marks[self.current:self.current + 1]:
                self._close()
                self.current += 1
                self.in_mark = True
            else:
                self.in_mark = False
        elif kind in RESULTS:
            if self.in_mark:
                self.mark_events.append(event)
                if kind == "runner_on_failed":
                    self.stopped_at_mark = True
            else:
                self.parts[self.current].events.append(event)
        if self._on_event:
            self._on_event(event)
        return True

    def _close(self) -> None:
        now = self._clock()
        self.parts[self.current].seconds += now - self._t
        self._t = now

    def finish(self) -> None:
        """The run ended: the time since the last mark is the current part's."""
        self._close()

    @property
    def failed_part(self) -> int:
        """The part the run failed in: the one before the mark that stopped it, else the current one."""
        return self.current - 1 if self.stopped_at_mark else self.current


def split(parts: Sequence[Part], total: dict[str, dict[str, int]],
          mark_events: Sequence[dict] = ()) -> list[dict[str, dict[str, int]]]:
    """Each part's recap (Ansible's keys: ok, changed, failures, dark, skipped, rescued, ignored,
    per host), from its events, reconciled with ``total`` (the whole run's recap, ansible-runner's
    ``stats``; the failure of a mark that stopped the run, in ``mark_events``, is not a part's)
    as the module's docstring says."""
    failed_total = dict(total.get("failures") or {})
    for ev in mark_events:
        data = ev.get("event_data") or {}
        if ev.get("event") == "runner_on_failed" and not data.get("ignore_errors"):
            h = str(data.get("host", "?"))
            failed_total[h] = failed_total.get(h, 0) - 1
    out: list[dict[str, dict[str, int]]] = [{k: {} for k in KEYS} for _ in parts]
    last_failed: dict[str, int] = {}  # host -> the part of its last failure event
    last_dark: dict[str, int] = {}
    failures: dict[tuple[int, str], int] = {}
    darks: dict[tuple[int, str], int] = {}

    def add(i: int, key: str, host: str, n: int = 1) -> None:
        out[i][key][host] = out[i][key].get(host, 0) + n

    for i, part in enumerate(parts):
        for ev in part.events:
            kind = ev.get("event")
            data = ev.get("event_data") or {}
            host = str(data.get("host", "?"))
            res = data.get("res") or {}
            if kind == "runner_on_ok":
                add(i, "ok", host)
                if res.get("changed"):
                    add(i, "changed", host)
            elif kind == "runner_on_skipped":
                add(i, "skipped", host)
            elif kind == "runner_on_failed":
                if data.get("ignore_errors"):
                    add(i, "ok", host)
                    add(i, "ignored", host)
                    if res.get("changed"):
                        add(i, "changed", host)
                else:
                    failures[(i, host)] = failures.get((i, host), 0) + 1
                    last_failed[host] = i
            elif kind == "runner_on_unreachable":
                darks[(i, host)] = darks.get((i, host), 0) + 1
                last_dark[host] = i
    for (i, host), n in failures.items():
        stopped = failed_total.get(host, 0) > 0 and last_failed[host] == i
        if stopped:
            add(i, "failures", host)
        if n - stopped:
            add(i, "rescued", host, n - stopped)
    for (i, host), n in darks.items():
        stopped = bool((total.get("dark") or {}).get(host)) and last_dark[host] == i
        if stopped:
            add(i, "dark", host)
        if n - stopped:
            add(i, "ok", host, n - stopped)
            add(i, "ignored", host, n - stopped)
    return out


def _result(part: Part, playbook: str, stats: dict[str, dict[str, int]], artifacts: Any) -> tuple[RunResult, list[Failure]]:
    failures: list[Failure] = []
    facts: dict[str, dict] = {}
    changes: list[Change] = []
    for ev in part.events:
        record(ev, failures, facts, changes)
    return RunResult(playbook, "successful", 0, stats, artifacts, part.seconds, [], facts, changes), failures


def results(tracker: Parts, playbooks: Sequence[str], whole: RunResult) -> list[RunResult]:
    """A run that ended well, as one RunResult per part (``playbooks``: each part's name in its
    errors and recap, as its own run would have had)."""
    tracker.finish()
    stats = split(tracker.parts, whole.stats, tracker.mark_events)
    return [_result(p, pb, st, whole.artifacts)[0] for p, pb, st in zip(tracker.parts, playbooks, stats, strict=True)]


def failure(tracker: Parts, playbooks: Sequence[str], e: PlaybookFailed) -> tuple[int, PlaybookFailed, list[RunResult]]:
    """A run that failed: the part it failed in, that part's own error (its failures only, as its
    own run would have raised) and the parts before it, which ended well."""
    tracker.finish()
    i = tracker.failed_part
    stats = split(tracker.parts, e.stats, tracker.mark_events)
    done = [_result(p, pb, st, e.artifacts)[0] for p, pb, st in zip(tracker.parts[:i], playbooks, stats, strict=False)]
    part, failures = _result(tracker.parts[i], playbooks[i], stats[i], e.artifacts)
    # the failures that stopped a host (a block's rescue took the others)
    failures = [f for f in failures if stats[i]["dark" if f.unreachable else "failures"].get(f.host)]
    rc = 4 if failures and all(f.unreachable for f in failures) else 2  # ansible-playbook's
    err = failed(playbooks[i], "failed", rc, failures or e.failures, part.artifacts, part.host_facts, part.changes,
                 forcing_handlers(), stats[i])
    return i, err, done


def ran_a_task(tracker: Parts) -> bool:
    """Whether any task of the run reported a result (a run that failed before: Ansible could
    not read a playbook or the inventory)."""
    return bool(tracker.mark_events) or any(p.events for p in tracker.parts)
