"""Turn ansible-runner events into progress lines (plain, one line per finished task)."""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

Write = Callable[[str], None]


class TaskLines:
    """One line per task once it finished on every host: its name, counts, elapsed time.

    Changed and failed hosts are named; ``ok`` hosts are only counted.
    """

    def __init__(self, write: Write = print):
        self.write = write
        self.task: str | None = None
        self.t0 = time.monotonic()
        self.counts: Counter = Counter()
        self.changed: list[str] = []
        self.failed: list[str] = []

    def _flush(self) -> None:
        if self.task is None or not self.counts:
            self.task = None
            return
        secs = time.monotonic() - self.t0
        parts = [f"{k}={v}" for k, v in sorted(self.counts.items())]
        line = f"  {self.task}  [{' '.join(parts)}] {secs:.1f}s"
        if self.changed:
            line += "\n      changed: " + ", ".join(self.changed[:8]) + (" ..." if len(self.changed) > 8 else "")
        if self.failed:
            line += "\n      FAILED: " + ", ".join(self.failed)
        self.write(line)
        self.task = None

    def __call__(self, event: dict) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self._flush()
            self.write(f"play: {data.get('play', '')}")
        elif kind == "playbook_on_task_start":
            self._flush()
            self.task, self.t0 = data.get("task", ""), time.monotonic()
            self.counts, self.changed, self.failed = Counter(), [], []
        elif kind.startswith("runner_on_") and kind not in ("runner_on_start",) and self.task is not None:
            host = data.get("host", "?")
            res = data.get("res") or {}
            if kind == "runner_on_ok":
                if res.get("changed"):
                    self.counts["changed"] += 1
                    self.changed.append(host)
                else:
                    self.counts["ok"] += 1
            elif kind == "runner_on_skipped":
                self.counts["skipped"] += 1
            elif kind in ("runner_on_failed", "runner_on_unreachable"):
                if data.get("ignore_errors"):
                    self.counts["ignored"] += 1
                else:
                    self.counts["failed"] += 1
                    self.failed.append(host)
        elif kind in ("playbook_on_stats",):
            self._flush()
