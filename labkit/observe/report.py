"""`labkit report`: the lab's facts and measurements as Markdown, a self-contained HTML page
to project to a class (a pass/fail summary on top, then a chart of VM vs container start
time, memory and disk, K8 and K9, then the facts table and the checks), JSON, and
per-student JUnit files for instructors who collect many.

The pure part (``build``: rows, summary, wording of numbers) has no I/O; the chart is drawn
once with matplotlib and saved as PNG (for the Markdown) and as SVG with its text kept as
text (inlined in the HTML: sharp on a projector, and its labels are in the page's DOM).
"""
from __future__ import annotations

import html
import io
import math
import re
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from labkit.observe.facts import HostFacts
from labkit.observe.measure import BOOT_KEYS
from labkit.observe.results import CheckResult

VM_COLOR = "#d9822b"
CONTAINER_COLOR = "#2a7ab8"
SERVER_NA = ("n/a: the lab server is the machine every host runs on, not a host labkit starts; "
             "its memory and disk hold all of them")


# --------------------------------------------------------------------------- wording of numbers

def fmt_seconds(v: float | None) -> str:
    if v is None:
        return "not measured"
    return f"{v:.1f} s" if v < 10 else f"{v:.0f} s"


def fmt_memory(b: int | None) -> str:
    """Memory in binary units, KiB below 1 MiB (BusyBox's sleep takes a few hundred KiB)."""
    if b is None:
        return "not measured"
    if b < 2**20:
        return f"{b / 1024:.0f} KiB"
    mib = b / 2**20
    return f"{mib:.1f} MiB" if mib < 100 else f"{mib:.0f} MiB"


def fmt_disk(b: int | None) -> str:
    """Disk in decimal units, as `docker images` prints sizes."""
    if b is None:
        return "not measured"
    if b < 1_000_000:
        return f"{b / 1000:.0f} kB"
    mb = b / 1e6
    return f"{mb:.1f} MB" if mb < 100 else f"{mb:.0f} MB"


def short_name(f: HostFacts) -> str:
    """The host's name within its student: ``labkit-demo-s01-debian11`` -> ``debian11``."""
    if f.student and f"-{f.student}-" in f.host:
        return f.host.split(f"-{f.student}-", 1)[1]
    return f.host


def bar_label(f: HostFacts) -> str:
    """Whose bar it is: ``s01 vm``, ``s01 debian11``."""
    return f"{f.student} {short_name(f)}".strip()


ACCEL_SHORT = {"kvm": "KVM", "qemu": "TCG"}


def tick(v: float) -> str:
    """A log axis' tick as plain text: 0.1, 1, 10, 100, 1k, 10k."""
    return f"{v / 1000:g}k" if v >= 1000 else f"{v:g}"


def accel_words(accel: str | None) -> str:
    return {"kvm": "KVM", "qemu": "QEMU emulation (TCG, no KVM)"}.get(accel or "", "accelerator not recorded")


def boot_note(m: dict) -> str:
    """How a VM's boot time came about: ``QEMU emulation (TCG, no KVM), 3 VMs booted at once
    on a 2-core lab server``. Says what was not recorded rather than guessing."""
    n, cores, guests = m.get("boots_at_once"), m.get("server_cores"), m.get("server_vms")
    if n is None:
        at_once = "parallel boots not recorded"
    elif n == 1:
        at_once = "1 VM booted at once" + (" (alone)" if guests == 1 else "")
    else:
        at_once = f"{n} VMs booted at once"
    where = f" on a {cores}-core lab server" if cores else " (lab server's cores not recorded)"
    cpus = m.get("vm_cpus")
    each = f" ({cpus} vCPU{'s' if cpus != 1 else ''} each)" if cpus and n and n > 1 else (
        f" ({cpus} vCPU{'s' if cpus != 1 else ''})" if cpus else "")
    # other labs' VMs share the cores too: say so when there were more than this run booted
    others = f"; {guests} VMs were running there when it came up" if guests and guests > (n or 1) else ""
    return f"{accel_words(m.get('accel'))}, {at_once}{where}{each}{others}"


def fact_span(facts: list[str]) -> str:
    """``K1-K12`` for K1, K2, ..., K12 in a row; else the list."""
    nums = [int(f[1:]) for f in facts if re.fullmatch(r"K\d+", f)]
    if len(nums) == len(facts) > 2 and nums == list(range(nums[0], nums[0] + len(nums))):
        return f"K{nums[0]}-K{nums[-1]}"
    return ", ".join(facts)


def _fact_key(fact: str) -> tuple:
    m = re.fullmatch(r"K(\d+)", fact)
    return (0, int(m.group(1)), "") if m else (1, 0, fact)


# --------------------------------------------------------------------------- the report's data

def _row(f: HostFacts, m: dict | None) -> dict:
    server = f.role == "server"
    m = m or {}
    mem, disk, ready = m.get("memory_bytes"), m.get("disk_bytes"), m.get("ready_seconds")
    row = {
        "host": f.host, "role": f.role, "student": f.student, "server": f.server, "label": bar_label(f),
        "os": f"{f.os_id} {f.os_version}".strip() or "none",
        "kernel": f.kernel_release, "same_kernel": f.same_kernel, "same_boot": f.same_boot,
        "pid1": f.pid1, "pkg_mgr": f.pkg_mgr, "virt": f.virt, "error": f.error,
        "ready_seconds": ready, "memory_bytes": mem, "disk_bytes": disk,
        "memory_mib": round(mem / 2**20, 3) if mem is not None else None,
        "disk_mb": round(disk / 1e6, 1) if disk is not None else None,
        "ready": "n/a" if server else fmt_seconds(ready),
        "memory": "n/a" if server else fmt_memory(mem),
        "disk": "n/a" if server else fmt_disk(disk),
    }
    if f.role == "vm":
        row.update({k: m.get(k) for k in BOOT_KEYS})
        row["boot_note"] = boot_note(m)
    return row


def _order(facts: list[HostFacts]) -> list[HostFacts]:
    """Servers first, then each student's hosts: the VM, then the containers by name."""
    return sorted(facts, key=lambda f: (f.role != "server", f.student, f.role != "vm", f.host))


def summarize(rows: list[dict], checks: Sequence[CheckResult] | None = None, expected: list[str] | None = None) -> dict:
    """The verdict on top of the page: checks passed/failed/skipped (per fact and per check),
    hosts up of those the lab file plans, and how the VMs booted."""
    hosts = [r for r in rows if r["role"] != "server"]
    names = {r["host"] for r in hosts}
    missing = [n for n in expected if n not in names] if expected is not None else []
    not_answering = [r["host"] for r in rows if r["error"]]
    hs = {"up": len(hosts), "expected": len(expected) if expected is not None else None, "missing": missing,
          "not_answering": not_answering, "containers": sum(r["role"] == "container" for r in hosts),
          "vms": sum(r["role"] == "vm" for r in hosts), "students": len({r["student"] for r in hosts})}
    out: dict = {"hosts": hs, "checks": None}
    problems = []
    if missing:
        problems.append(f"{len(missing)} host{'s' if len(missing) > 1 else ''} missing ({', '.join(missing)})")
    if not_answering:
        problems.append(f"{len(not_answering)} not answering ({', '.join(not_answering)})")
    if checks is not None:
        by_fact: dict[str, list[str]] = {}
        for c in checks:
            by_fact.setdefault(c.fact, []).append(c.outcome)
        facts_ids = sorted(by_fact, key=_fact_key)
        failed = [k for k in facts_ids if "failed" in by_fact[k]]
        unchecked = [k for k in facts_ids if "failed" not in by_fact[k] and "passed" not in by_fact[k]]
        held = [k for k in facts_ids if k not in failed and k not in unchecked]
        counts = {o: sum(c.outcome == o for c in checks) for o in ("passed", "failed", "skipped")}
        out["checks"] = {**counts, "total": len(checks), "facts": facts_ids, "held": held,
                         "failed_facts": failed, "unchecked_facts": unchecked}
        if failed:
            problems.insert(0, f"{', '.join(failed)} failed ({counts['failed']} of {len(checks)} checks)")
    up = f"{hs['up']} of {hs['expected']} hosts up" if hs["expected"] is not None else f"{hs['up']} hosts up"
    ck = out["checks"]
    if problems:
        out["verdict"] = "fail"
        out["headline"] = "FAIL: " + "; ".join(problems) + f"; {up}"
    elif ck is None:
        out["verdict"] = "unchecked"
        out["headline"] = f"NOT CHECKED: the facts were not checked (--no-checks); {up}"
    elif ck["unchecked_facts"] or not ck["held"]:
        out["verdict"] = "unchecked"
        out["headline"] = (f"INCOMPLETE: {len(ck['held'])} of {len(ck['facts'])} facts hold, "
                           f"{', '.join(ck['unchecked_facts']) or 'none'} only skipped; {up}")
    else:
        out["verdict"] = "pass"
        out["headline"] = f"PASS: all {len(ck['held'])} facts hold ({ck['passed']} checks passed); {up}"
    lines = []
    if ck is not None:
        lines.append(f"Facts {fact_span(ck['facts'])}: {len(ck['held'])} hold, {len(ck['failed_facts'])} failed"
                     + (f", {len(ck['unchecked_facts'])} not checked ({', '.join(ck['unchecked_facts'])})"
                        if ck["unchecked_facts"] else "")
                     + f"; checks: {ck['passed']} passed, {ck['failed']} failed, {ck['skipped']} skipped")
    else:
        lines.append("Facts: not checked (the report was made with --no-checks)")
    lines.append(f"Hosts: {up} ({hs['students']} student{'s' if hs['students'] != 1 else ''}: "
                 f"{hs['containers']} container{'s' if hs['containers'] != 1 else ''}, "
                 f"{hs['vms']} VM{'s' if hs['vms'] != 1 else ''})"
                 + (f"; missing: {', '.join(missing)}" if missing else "")
                 + (f"; not answering: {', '.join(not_answering)}" if not_answering else ""))
    out["vm_boot"] = vm_boot_notes(rows)
    lines += [f"VM start (vagrant up to SSH): {n}" for n in out["vm_boot"]]
    out["lines"] = lines
    return out


def vm_boot_notes(rows: list[dict]) -> list[str]:
    """One line per way the VMs booted; names whose VMs when they differ."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r["role"] == "vm":
            groups.setdefault(r["boot_note"], []).append(r["student"] or r["host"])
    if len(groups) <= 1:
        return list(groups)
    return [f"{', '.join(who)}: {note}" for note, who in groups.items()]


def build(lab: str, facts: list[HostFacts], measurements: dict[str, dict], checks: Sequence[CheckResult] | None = None,
          expected: list[str] | None = None) -> dict:
    """Everything the report shows, as data (also ``labkit report --json``)."""
    rows = [_row(f, measurements.get(f.host)) for f in _order(facts)]
    return {"lab": lab, "generated": time.strftime("%Y-%m-%d %H:%M:%S"), "hosts": rows,
            "summary": summarize(rows, checks, expected),
            "checks": [c.__dict__ for c in checks] if checks is not None else None}


# --------------------------------------------------------------------------- the chart

def chart(data: dict, fmt: str = "png") -> bytes:
    """Horizontal bars per host (labelled with student and host): create-to-ready seconds,
    memory and disk, each on a log scale said on its axis; the VMs' boot notes under the title.
    ``fmt``: png, or svg with text kept as text (DejaVu Sans, as drawn)."""
    import matplotlib  # heavy, and an optional extra (test): loaded only to draw a chart

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    from matplotlib.transforms import ScaledTranslation

    hosts = [r for r in data["hosts"] if r["role"] != "server"]
    n = max(len(hosts), 1)
    notes = data["summary"]["vm_boot"]
    shown = notes[:3] + ([f"... and {len(notes) - 3} more (see the page)"] if len(notes) > 3 else [])
    # about 105 characters of 15 pt fit the figure's width: longer notes wrap
    note_lines = [ln for note in shown for ln in textwrap.wrap(f"VM start: {note}", 105)]
    head = 1.05 + 0.36 * len(note_lines)  # inches above the axes: title and notes
    height = head + 0.45 * n + 1.0
    series = [
        ("start: create to ready", "seconds, log scale", "ready_seconds", 1.0, fmt_seconds),
        ("memory", "MiB, log scale", "memory_bytes", 2**20, fmt_memory),
        ("disk", "MB, log scale", "disk_bytes", 1e6, fmt_disk),
    ]
    with matplotlib.rc_context({"font.family": "DejaVu Sans", "svg.fonttype": "none", "svg.hashsalt": "labkit"}):
        fig, axes = plt.subplots(1, 3, figsize=(12.4, height), sharey=True)
        colors = [VM_COLOR if r["role"] == "vm" else CONTAINER_COLOR for r in hosts]
        values: dict = {ax: [] for ax in axes}
        for ax, (title, unit, key, scale, fmt_value) in zip(axes, series, strict=True):
            raw = [r[key] for r in hosts]
            vals = [v / scale if v else None for v in raw]
            known = [v for v in vals if v]
            lo, hi = (min(known), max(known)) if known else (0.1, 1.0)
            left = 10 ** (int(f"{lo:e}".split("e")[1]) - 0.3) if known else 0.1
            ax.barh(range(len(hosts)), [v or 0 for v in vals], left=0, color=colors, height=0.7)
            ax.set_xscale("log")
            ax.set_xlim(left, hi * 10)  # widened below to fit the values printed after the bars
            ax.xaxis.set_major_locator(LogLocator(base=10, numticks=6))  # at most ~6 labels: no crowding
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: tick(v)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(axis="x", labelsize=15)
            ax.tick_params(axis="y", length=0)
            ax.set_xlabel(unit, fontsize=15)
            ax.set_title(title, fontsize=18, pad=8)
            ax.grid(axis="x", color="#ddd", linewidth=0.8)
            ax.set_axisbelow(True)
            for i, (v, b) in enumerate(zip(vals, raw, strict=True)):
                text = fmt_value(b)
                if key == "ready_seconds" and hosts[i]["role"] == "vm" and hosts[i].get("accel") in ACCEL_SHORT:
                    text += f" ({ACCEL_SHORT[hosts[i]['accel']]})"
                values[ax].append(ax.text(v * 1.12 if v else left * 1.12, i, text, va="center", ha="left",
                                          fontsize=15, color="#222" if v else "#a00", gid=f"value-{key}-{i}"))
        ax0 = axes[0]
        for i in range(1, len(hosts)):  # a line between one student's hosts and the next's
            if hosts[i]["student"] != hosts[i - 1]["student"]:
                for ax in axes:
                    ax.axhline(i - 0.5, color="#888", linewidth=1.2)
        ax0.set_yticks(range(len(hosts)), [""] * len(hosts))
        ax0.set_ylim(len(hosts) - 0.5, -0.5)  # first host on top
        to_left = ax0.get_yaxis_transform() + ScaledTranslation(-8 / 72, 0, fig.dpi_scale_trans)
        labels = [ax0.text(0, i, r["label"], transform=to_left, ha="right", va="center", fontsize=17,
                           fontweight="bold" if r["role"] == "vm" else "normal", gid=f"bar-label-{i}")
                  for i, r in enumerate(hosts)]
        fig.text(0.5, 1 - 0.12 / height, "VM (orange) vs containers (blue), per student and host",
                 ha="center", va="top", fontsize=20, fontweight="bold", gid="chart-title")
        for k, line in enumerate(note_lines):
            fig.text(0.5, 1 - (0.62 + 0.36 * k) / height, line, ha="center", va="top", fontsize=15,
                     color="#8a4a0c", gid=f"vm-note-{k}")
        # the labels' real widths decide the left margin (Agg: text measured as drawn)
        renderer = cast(FigureCanvasAgg, fig.canvas).get_renderer()
        label_in = max((t.get_window_extent(renderer).width for t in labels), default=0) / fig.dpi + 0.25
        fig.subplots_adjust(left=label_in / 12.4, right=0.985, top=1 - head / height, bottom=0.85 / height,
                            wspace=0.1)
        for ax, texts in values.items():  # each value's text ends inside its panel
            lo, hi = ax.get_xlim()
            width = ax.get_window_extent(renderer).width
            decades = math.log10(hi / lo)
            for t in texts:
                room = 1 - (t.get_window_extent(renderer).width + 8) / width
                decades = max(decades, math.log10(t.get_position()[0] / lo) / max(room, 0.2))
            ax.set_xlim(lo, lo * 10**decades)
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=100, metadata={"Date": None} if fmt == "svg" else None)
        plt.close(fig)
    return buf.getvalue()


def chart_png(data: dict) -> bytes:
    return chart(data, "png")


def chart_svg(data: dict) -> str:
    """The chart as an inline ``<svg>`` element (no XML prolog), scaled to the page's width."""
    svg = chart(data, "svg").decode()
    svg = svg[svg.index("<svg"):]
    return re.sub(r"<svg ", '<svg role="img" aria-label="VM vs containers: start time, memory, disk" '
                  'style="max-width:100%;height:auto" ', svg, count=1)


# --------------------------------------------------------------------------- Markdown and HTML

COLUMNS = [("host", "host"), ("role", "role"), ("os", "os-release"), ("kernel", "kernel"),
           ("same_kernel", "same kernel"), ("same_boot", "same boot_id"), ("pid1", "PID 1"),
           ("pkg_mgr", "pkg manager"), ("ready", "start"), ("memory", "memory"), ("disk", "disk")]

NOTES = [
    "start: a container's from the engine's timestamps (created to started); the VM's from "
    "`vagrant up` to SSH answering, which depends on KVM or emulation, how many VMs boot at once and the cores.",
    "memory: a container's cgroup charge less its inactive page cache, as `docker stats` counts it "
    "(page cache of an image shared by several containers is charged to the first one that read it); "
    "the VM's qemu process RSS.",
    "disk: a container's image size (shared by every container of that image); the VM's box size.",
    f"lab server: {SERVER_NA}.",
]


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def markdown(data: dict) -> str:
    s = data["summary"]
    lines = [f"# labkit lab `{data['lab']}`", "", f"**{s['headline']}**", ""]
    lines += [f"- {ln}" for ln in s["lines"]]
    lines += ["", f"Generated {data['generated']}.", "", "## Kernel-sharing facts and measurements", "",
              "| " + " | ".join(t for _, t in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in data["hosts"]:
        lines.append("| " + " | ".join(_cell(r[k]) for k, _ in COLUMNS) + " |")
    lines += [""] + [f"- {n}" for n in NOTES]
    if data["checks"]:
        lines += ["", "## Checks (labkit verify)", "", "| fact | host | result | detail |", "|---|---|---|---|"]
        for c in data["checks"]:
            lines.append(f"| {c['fact']} | {c['host']} | {c['outcome']} | {c['detail'].replace('|', '/')} |")
    lines += ["", "![VM vs containers: start time, memory and disk, per student and host (log scales)](chart.png)", ""]
    return "\n".join(lines)


STYLE = """
body { font-family: 'DejaVu Sans', sans-serif; margin: 16px 24px; color: #222; font-size: 18px; }
h1 { font-size: 30px; margin: 0 0 10px; } h2 { font-size: 24px; margin: 22px 0 8px; }
#summary { border: 3px solid; border-radius: 8px; padding: 10px 16px; margin: 0 0 8px; }
#summary.pass { border-color: #1e7e34; background: #e3f4e7; }
#summary.fail { border-color: #b52a2a; background: #fbe3e3; }
#summary.unchecked { border-color: #a86b00; background: #fdf2dc; }
#summary .verdict { font-size: 26px; font-weight: bold; margin: 0 0 6px; }
#summary.pass .verdict { color: #1e7e34; } #summary.fail .verdict { color: #b52a2a; }
#summary.unchecked .verdict { color: #8a5800; }
#summary ul { margin: 0; padding-left: 1.2em; } #summary li { margin: 2px 0; }
figure { margin: 0; }
table { border-collapse: collapse; margin: 8px 0; font-size: 15px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
th { background: #eef; }
#facts td.host, #facts td.kernel, #facts td.num, #checks td.host { white-space: nowrap; }
#facts td.num { text-align: right; }
tr.vm td { background: #fff4e8; } tr.server td { background: #f4f4f4; color: #555; }
tr.failed td { background: #fdd; } tr.skipped td { background: #fff6d8; }
.notes { font-size: 15px; color: #444; } .notes li { margin: 2px 0; }
"""

_CLASSES = {"host": "host", "kernel": "kernel", "ready": "num", "memory": "num", "disk": "num"}


def html_page(data: dict, svg: str) -> str:
    s = data["summary"]
    lab = html.escape(data["lab"])
    th = "".join(f"<th>{html.escape(t)}</th>" for _, t in COLUMNS)

    def td(r: dict, k: str) -> str:
        cls = f" class='{_CLASSES[k]}'" if k in _CLASSES else ""
        title = f" title='{html.escape(SERVER_NA)}'" if r["role"] == "server" and r[k] == "n/a" else ""
        return f"<td{cls}{title}>{html.escape(_cell(r[k]))}</td>"

    body = "".join(f"<tr class='{r['role']}'>" + "".join(td(r, k) for k, _ in COLUMNS) + "</tr>"
                   for r in data["hosts"])
    check_html = ""
    if data["checks"]:
        crow = "".join(
            f"<tr class='{c['outcome']}'><td>{html.escape(c['fact'])}</td><td class='host'>{html.escape(c['host'])}</td>"
            f"<td>{html.escape(c['outcome'])}</td><td>{html.escape(c['detail'])}</td></tr>" for c in data["checks"])
        check_html = ("<h2>Checks (labkit verify)</h2><table id='checks'><tr><th>fact</th><th>host</th>"
                      f"<th>result</th><th>detail</th></tr>{crow}</table>")
    items = "".join(f"<li>{html.escape(ln)}</li>" for ln in s["lines"])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in NOTES)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>labkit lab {lab}</title>
<style>{STYLE}</style></head><body>
<h1>labkit lab <code>{lab}</code>: VM vs containers on one kernel</h1>
<section id="summary" class="{s['verdict']}">
<p class="verdict">{html.escape(s['headline'])}</p>
<ul>{items}</ul>
</section>
<figure id="chart">{svg}</figure>
<h2>Kernel-sharing facts and measurements</h2>
<p>Generated {html.escape(data['generated'])}. Containers share the lab server's kernel
(same release, same boot_id); the VM boots its own.</p>
<table id="facts"><tr>{th}</tr>{body}</table>
<ul class="notes">{notes}</ul>
{check_html}
</body></html>
"""


# --------------------------------------------------------------------------- JUnit

def junit_per_student(lab: str, checks: Sequence[CheckResult], student_of: dict[str, str], directory: Path) -> list[Path]:
    """One JUnit file per student: a test case per fact and host of that student's hosts,
    plus the lab-wide facts (K10, K12). ``student_of`` maps host names to student ids."""
    directory.mkdir(parents=True, exist_ok=True)
    common = [c for c in checks if c.host not in student_of]
    by_student: dict[str, list[CheckResult]] = {}
    for c in checks:
        if c.host in student_of:
            by_student.setdefault(student_of[c.host], []).append(c)
    paths = []
    for student, own in sorted(by_student.items()):
        cases = own + common
        root = ET.Element("testsuites", name=f"labkit {lab}")
        suite = ET.SubElement(root, "testsuite", name=f"labkit.{lab}.{student}", tests=str(len(cases)),
                              failures=str(sum(c.outcome == "failed" for c in cases)),
                              skipped=str(sum(c.outcome == "skipped" for c in cases)))
        for c in cases:
            tc = ET.SubElement(suite, "testcase", classname=f"{lab}.{student}.{c.fact}", name=f"{c.fact}[{c.host}]")
            if c.outcome == "failed":
                ET.SubElement(tc, "failure", message=c.detail).text = c.detail
            elif c.outcome == "skipped":
                ET.SubElement(tc, "skipped", message=c.detail)
            else:
                ET.SubElement(tc, "system-out").text = c.detail
        p = directory / f"{lab}-{student}.xml"
        ET.ElementTree(root).write(p, encoding="utf-8", xml_declaration=True)
        paths.append(p)
    return paths
