"""Turn ansible-runner events into progress lines, one per host and change.

Works with Ansible's free strategy (labkit's up.yml), where hosts run different tasks at
the same time: every line names its host. Unchanged results are only counted; changed,
failed and unreachable ones are printed with the time their task took on that host.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from rich.console import Console
from rich.live import Live
from rich.table import Table

from labkit.cli.render import cell

Write = Callable[[str], None]


class HostLines:
    """Plain, line-per-event progress (CI logs, pipes)."""

    def __init__(self, write: Write = print) -> None:
        self.write = write
        self.started: dict[tuple[str, str], float] = {}
        self.counts: Counter[str] = Counter()
        self.t0 = time.monotonic()

    def _elapsed(self, data: dict) -> str:
        t = self.started.pop((data.get("host", ""), data.get("task_uuid", "")), None)
        return f" ({time.monotonic() - t:.1f}s)" if t is not None else ""

    def __call__(self, event: dict) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host", "?")
        task = data.get("task", "")
        if kind == "playbook_on_play_start":
            self.write(f"play: {data.get('play', '')}")
        elif kind == "runner_on_start":
            self.started[(host, data.get("task_uuid", ""))] = time.monotonic()
        elif kind == "runner_on_ok":
            res = data.get("res") or {}
            if res.get("changed"):
                self.counts["changed"] += 1
                self.write(f"  [{host}] changed: {task}{self._elapsed(data)}")
            else:
                self.counts["ok"] += 1
                self._elapsed(data)
        elif kind == "runner_on_skipped":
            self.counts["skipped"] += 1
            self._elapsed(data)
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            what = "unreachable" if kind == "runner_on_unreachable" else "FAILED"
            if data.get("ignore_errors"):
                self.counts["ignored"] += 1
                what = "failed (ignored)"
            else:
                self.counts["failed"] += 1
            msg = str((data.get("res") or {}).get("msg", "")).strip().splitlines()
            self.write(f"  [{host}] {what}: {task}{self._elapsed(data)}" + (f": {msg[0][:200]}" if msg else ""))
        elif kind == "playbook_on_stats":
            # the counts are Ansible's own recap, printed once by the command (not a second,
            # differently counted ok= here)
            self.write(f"playbook done in {time.monotonic() - self.t0:.1f}s")


class LiveHosts:
    """A live view for terminals (rich): one line per host with its current task, its
    ok/changed/failed counts and the time since it started."""

    def __init__(self, console: Console, title: str = "labkit") -> None:
        self.console = console
        self.title = title
        self.t0 = time.monotonic()
        self.play = ""
        self.hosts: dict[str, dict[str, Any]] = {}
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveHosts:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.live.update(self._render())
        self.live.stop()
        return False

    def _host(self, name: str) -> dict[str, Any]:
        return self.hosts.setdefault(name, {"task": "", "ok": 0, "changed": 0, "failed": 0,
                                            "t0": time.monotonic(), "t1": None})

    def _render(self) -> Table:
        t = Table(title=f"{cell(self.title)}: {cell(self.play)}  ({time.monotonic() - self.t0:.0f}s)", title_justify="left",
                  expand=False)
        for col in ("host", "current task", "ok", "changed", "failed", "time"):
            t.add_column(col)
        for name, h in self.hosts.items():
            end = h["t1"] or time.monotonic()
            failed = f"[bold red]{h['failed']}[/]" if h["failed"] else "0"
            t.add_row(cell(name), cell(h["task"][:60]), str(h["ok"]), str(h["changed"]), failed, f"{end - h['t0']:.0f}s")
        return t

    def __call__(self, event: dict) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host")
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "")
        elif kind == "runner_on_start" and host:
            self._host(host)["task"] = data.get("task", "")
        elif kind == "runner_on_ok" and host:
            h = self._host(host)
            h["changed" if (data.get("res") or {}).get("changed") else "ok"] += 1
        elif kind in ("runner_on_failed", "runner_on_unreachable") and host and not data.get("ignore_errors"):
            h = self._host(host)
            h["failed"] += 1
            h["task"] = "FAILED: " + data.get("task", "")
        elif kind == "playbook_on_stats":
            for h in self.hosts.values():
                h["t1"] = h["t1"] or time.monotonic()
                if not h["task"].startswith("FAILED"):
                    h["task"] = "done"
        self.live.update(self._render())
