"""Everything the CLI shows, in one place: the consoles, the tables and the one-line summaries.

Tables never cut what identifies a row (the host, the check, the fact): those columns keep
their full width and never wrap; the other columns give way on a narrow terminal."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labkit import names
from labkit.ansible.runner import RunResult
from labkit.api.planning import PlanReport
from labkit.doctor.check import Check
from labkit.engines.capabilities import label
from labkit.observe.checks import FACTS
from labkit.observe.facts import HostFacts
from labkit.observe.grade import Grade
from labkit.observe.results import CheckResult
from labkit.observe.verify import engine_label


def _pipe_width() -> int:
    """CI logs and pipes are not terminals: tables get 200 columns instead of rich's 80, or more
    when $COLUMNS asks (never fewer: a library may set COLUMNS=80 in the environment a child
    inherits, as curses does for Ansible's display)."""
    try:
        return max(200, int(os.environ.get("COLUMNS", "0")))
    except ValueError:
        return 200


# emoji=False: text such as a fingerprint's ":CD:" stays text, never an emoji
out = Console(highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else _pipe_width())
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


# What hosts say is the students' (root in their containers and VMs: os-release, errors, test
# output): shown as text, never as terminal control. C0 and C1 controls but tab and newline, and
# the bidirectional overrides that reorder what a line seems to say, become visible escapes.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f, *range(0x80, 0xa0))}
_CONTROLS.update({c: f"\\u{c:04x}" for c in (*range(0x202a, 0x202f), *range(0x2066, 0x206a))})


def plain(text: object) -> str:
    """``text`` with terminal controls shown as escapes (``\\x1b``), tabs and newlines kept."""
    return str(text).translate(_CONTROLS)


def cell(text: object) -> str:
    """``text`` for rich markup: controls shown as escapes, markup brackets escaped."""
    return escape(plain(text))


def say(msg: str) -> None:
    out.print(plain(msg), markup=False)


def quiet(_msg: str) -> None:
    pass


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def yesno(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "NO")


def table(title: str, columns: Sequence[str], keys: Iterable[str] = (), widths: dict[str, int] | None = None) -> Table:
    """A table whose ``keys`` columns (what identifies a row) are never cut or wrapped: they keep
    ``widths`` (their longest value); every other column folds when the terminal is narrow."""
    t = Table(title=title, title_justify="left")
    keep = set(keys)
    for col in columns:
        if col in keep:
            t.add_column(col, no_wrap=True, min_width=max(len(col), (widths or {}).get(col, 0)))
        else:
            t.add_column(col, overflow="fold")
    return t


def host_label(host: str, student: str, lab: str | None) -> str:
    """A host as ``labkit shell`` names it: ``debian12``, ``vm``, ``busybox`` (the lab's prefix
    and the student dropped); a lab server, or a host of another lab, by its full name."""
    if lab and student:
        prefix = names.lab_prefix(lab, student)
        if host.startswith(prefix):
            return host[len(prefix):]
    return host


def fitted(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int,
           drop_first: Sequence[str]) -> list[int]:
    """The indexes of the columns to show on a terminal ``width`` wide: all when they fit (each
    column its widest cell, and the borders), else leave out ``drop_first`` in that order until
    they do. Identifying columns are never in ``drop_first``."""
    def need(cols: list[int]) -> int:
        return 1 + sum(3 + max([len(columns[i])] + [len(r[i]) for r in rows]) for i in cols)

    show = list(range(len(columns)))
    for name in drop_first:
        if need(show) <= width:
            break
        if name in columns:
            show.remove(columns.index(name))
    return show


# on a narrow terminal the facts table leaves these out first, in this order (`--json` has all)
FACTS_DROP = ("uid map", "virt", "pkg manager", "os-release", "engine", "kernel release", "PID 1", "role")


def facts_table(rows: Sequence[HostFacts], lab: str | None = None, width: int | None = None) -> Table:
    """The kernel-sharing facts side by side: the lab server(s), then each host. The host is
    named as `labkit shell` takes it and never cut; on a narrow terminal the least telling
    columns are left out (the title says which)."""
    several_servers = len([r for r in rows if r.role == "server"]) > 1
    several_students = len({r.student for r in rows if r.student}) > 1
    cols = (["host"] + (["student"] if several_students else [])
            + ["role", "engine", "os-release", "kernel release", "same kernel", "same boot_id", "PID 1",
               "pkg manager", "virt", "uid map"] + (["lab server"] if several_servers else []))
    cells = []
    for r in rows:
        head = [host_label(r.host, r.student, lab)] + ([r.student] if several_students else [])
        extra = [r.server] if several_servers else []
        if r.error:
            cells.append([*head, r.role, engine_label(r), "unreadable", r.error, "", "", "", "", "", "", *extra])
            continue
        distro = f"{r.os_id} {r.os_version}".strip() or f"none ({r.distro})"
        cells.append([*head, r.role, engine_label(r), distro, r.kernel_release, yesno(r.same_kernel),
                      yesno(r.same_boot), r.pid1, r.pkg_mgr, r.virt, uid_map_words(r.uid_map), *extra])
    show = fitted(cols, cells, width if width is not None else out.width, FACTS_DROP)
    left_out = [c for i, c in enumerate(cols) if i not in show]
    title = "kernel-sharing facts: lab server vs lab hosts" + (
        f" (left out for width: {', '.join(left_out)}; `labkit facts --json` has them)" if left_out else "")
    t = table(title, [cols[i] for i in show], keys=["host", "student"],
              widths={c: max(len(r[cols.index(c)]) for r in cells) for c in ("host", "student") if c in cols})
    for r, row in zip(rows, cells, strict=True):
        shown = [cell(row[i]) for i in show]
        if r.error and cols.index("os-release") in show:
            shown[show.index(cols.index("os-release"))] = "[red]unreadable[/]"
        t.add_row(*shown)
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


def _engine_of(h: dict[str, Any]) -> str:
    return "libvirt" if h["role"] == "vm" else label(h.get("engine"), h.get("user", ""))


def status_table(lab: str, st: dict[str, Any]) -> Table:
    rows = [(h["name"], h["role"], _engine_of(h), h["student"], h["distro"], h["state"], h.get("server", "localhost"))
            for h in st["hosts"]]
    missing = [(m["name"], m["role"], _engine_of(m), m["student"], m["distro"], "missing", "")
               for m in st["missing_hosts"]]
    t = table(f"lab '{lab}' on {', '.join(st['servers'])}",
              ("host", "role", "engine", "student", "distro", "state", "lab server"), keys=["host"],
              widths={"host": max((len(r[0]) for r in rows + missing), default=4)})
    for r in rows:
        t.add_row(*(cell(x) for x in r))
    for r in missing:  # the state in yellow: markup of labkit's own, the values escaped
        t.add_row(*(cell(x) for x in r[:5]), "[yellow]missing[/]", "")
    return t


def verify_table(lab: str, results: Sequence[CheckResult]) -> Table:
    t = table(f"lab '{lab}': kernel-sharing facts", ("fact", "host", "engine", "result", "detail"),
              keys=["host"], widths={"host": max((len(r.host) for r in results), default=4)})
    style = {"passed": "[green]pass[/]", "failed": "[bold red]FAIL[/]", "skipped": "[yellow]n/a[/]"}
    last = None
    for r in results:
        fact = f"{r.fact} {FACTS.get(r.fact, 'your own tests')}" if r.fact != last else ""
        last = r.fact
        t.add_row(cell(fact), cell(r.host), getattr(r, "engine", "") or "-", style.get(r.outcome, r.outcome), cell(r.detail))
    return t


def doctor_table(lab: str, checks: Sequence[Check]) -> Table:
    marks = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]", "skipped": "[dim]skipped[/]"}
    t = table(f"labkit doctor (lab '{lab}')", ("check", "", "detail", "fix"), keys=["check"],
              widths={"check": min(40, max((len(c.name) for c in checks), default=5))})
    for c in checks:
        t.add_row(cell(c.name), marks[c.status], cell(c.detail), cell(c.fix))
    return t


def images_table(rows: Sequence[dict[str, Any]]) -> Table:
    t = table("distro catalogue", ("distro", "image", "source", "status", "size"), keys=["distro"])
    for r in rows:
        t.add_row(r["distro"], r["image"], r["source"], r["status"], f"{r['size'] / 1e6:.0f} MB" if r["size"] else "")
    return t


def boxes_table(rows: Sequence[dict[str, Any]]) -> Table:
    t = table("Vagrant boxes (labkit)", ("name", "provider", "version", "size"), keys=["name"])
    for r in rows:
        t.add_row(r["name"], r.get("provider", ""), r.get("version", ""), f"{r['size'] / 2**20:.0f} MiB")
    return t


def plan_table(rep: PlanReport) -> Table:
    t = table(f"labkit {rep.verb} --plan: lab '{rep.lab}'", ("server", "student", "action", "kind", "name", "why"),
              keys=["name"], widths={"name": max((len(c.name) for c in rep.changes), default=4)})
    for c in rep.changes:
        t.add_row(*(cell(x) for x in (c.server, c.student, c.action, c.kind, c.name, c.why)))
    return t


def recap(run: RunResult | None) -> str:
    if run is None:
        return "recap: nothing run"
    keys = ("ok", "changed", "failures", "dark", "skipped")
    return "recap: " + " ".join(f"{k}={run.total(k)}" for k in keys) + f"  ({run.seconds:.1f}s)"


def grade_table(lab: str, grades: Sequence[Grade]) -> Table:
    t = table(f"lab '{lab}': grades", ("student", "score", "passed", "failed", "notes"), keys=["student"])
    for g in grades:
        t.add_row(cell(g.student), f"{g.score:g} / {g.out_of:g}", str(sum(c.outcome == "passed" for c in g.checks)),
                  str(sum(c.outcome == "failed" for c in g.checks)), cell("; ".join(g.notes)))
    return t
