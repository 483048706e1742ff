"""`labkit report`: the lab's facts and measurements as Markdown, a self-contained HTML page
with a chart (PNG, matplotlib) of VM vs container start time, memory and disk (K8, K9),
JSON, and per-student JUnit files for instructors who collect many."""
from __future__ import annotations

import base64
import html
import io
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from .facts import HostFacts


def chart_png(facts: list[HostFacts], measurements: dict[str, dict]) -> bytes:
    """Bars per host: create-to-ready seconds, memory MiB, disk MB (log scales: VM vs containers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hosts = [f for f in facts if f.role != "server" and f.host in measurements]
    names = [h.host.split("-", 3)[-1] if h.host.startswith("labkit-") else h.host for h in hosts]
    colors = ["#d9822b" if h.role == "vm" else "#2a7ab8" for h in hosts]
    series = [
        ("create-to-ready (s)", [measurements[h.host].get("ready_seconds") or 0 for h in hosts]),
        ("memory (MiB)", [(measurements[h.host].get("memory_bytes") or 0) / 2**20 for h in hosts]),
        ("disk (MB)", [(measurements[h.host].get("disk_bytes") or 0) / 1e6 for h in hosts]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (title, vals) in zip(axes, series, strict=True):
        bars = ax.bar(range(len(vals)), [max(v, 0.01) for v in vals], color=colors)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        for b, v in zip(bars, vals, strict=True):
            ax.annotate(f"{v:.1f}" if v < 100 else f"{v:.0f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
    fig.suptitle("K8/K9: VM (orange) vs containers (blue)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _rows(facts: list[HostFacts], measurements: dict[str, dict]) -> list[dict]:
    out = []
    for f in facts:
        m = measurements.get(f.host, {})
        out.append({
            "host": f.host, "role": f.role, "student": f.student,
            "os": f"{f.os_id} {f.os_version}".strip() or "none",
            "kernel": f.kernel_release, "same_kernel": f.same_kernel, "same_boot": f.same_boot,
            "pid1": f.pid1, "pkg_mgr": f.pkg_mgr, "virt": f.virt,
            "ready_seconds": m.get("ready_seconds"), "memory_mib": round((m.get("memory_bytes") or 0) / 2**20, 1),
            "disk_mb": round((m.get("disk_bytes") or 0) / 1e6, 1),
        })
    return out


COLUMNS = [("host", "host"), ("role", "role"), ("os", "os-release"), ("kernel", "kernel"),
           ("same_kernel", "same kernel"), ("same_boot", "same boot_id"), ("pid1", "PID 1"),
           ("pkg_mgr", "pkg manager"), ("ready_seconds", "ready (s)"), ("memory_mib", "memory (MiB)"),
           ("disk_mb", "disk (MB)")]


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def markdown(lab: str, facts: list[HostFacts], measurements: dict[str, dict], checks=None) -> str:
    rows = _rows(facts, measurements)
    lines = [f"# labkit lab `{lab}`", "", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.", "",
             "## Kernel-sharing facts and measurements", "",
             "| " + " | ".join(t for _, t in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[k]) for k, _ in COLUMNS) + " |")
    if checks:
        lines += ["", "## Checks (labkit verify)", "", "| fact | host | result | detail |", "|---|---|---|---|"]
        for c in checks:
            lines.append(f"| {c.fact} | {c.host} | {c.outcome} | {c.detail.replace('|', '/')} |")
    lines += ["", "![VM vs containers](chart.png)", ""]
    return "\n".join(lines)


def html_page(lab: str, facts: list[HostFacts], measurements: dict[str, dict], png: bytes, checks=None) -> str:
    rows = _rows(facts, measurements)
    th = "".join(f"<th>{html.escape(t)}</th>" for _, t in COLUMNS)
    body = "".join(
        f"<tr class='{r['role']}'>" + "".join(f"<td>{html.escape(_cell(r[k]))}</td>" for k, _ in COLUMNS) + "</tr>"
        for r in rows)
    check_html = ""
    if checks:
        crow = "".join(
            f"<tr class='{c.outcome}'><td>{c.fact}</td><td>{html.escape(c.host)}</td><td>{c.outcome}</td>"
            f"<td>{html.escape(c.detail)}</td></tr>" for c in checks)
        check_html = ("<h2>Checks (labkit verify)</h2><table id='checks'><tr><th>fact</th><th>host</th>"
                      f"<th>result</th><th>detail</th></tr>{crow}</table>")
    img = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>labkit lab {html.escape(lab)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #eef; }} tr.vm td {{ background: #fff4e8; }} tr.server td {{ background: #f4f4f4; }}
tr.failed td {{ background: #fdd; }}
</style></head><body>
<h1>labkit lab <code>{html.escape(lab)}</code></h1>
<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}. Containers share the lab server's kernel
(same release, same boot_id); the VM boots its own.</p>
<h2>Kernel-sharing facts and measurements</h2>
<table id="facts"><tr>{th}</tr>{body}</table>
<h2>VM vs containers (K8, K9)</h2>
<img id="chart" alt="VM vs container start time, memory and disk" src="data:image/png;base64,{img}">
{check_html}
</body></html>
"""


def junit_per_student(lab: str, checks, student_of: dict[str, str], directory: Path) -> list[Path]:
    """One JUnit file per student: a test case per fact and host of that student's hosts,
    plus the lab-wide facts (K10, K12). ``student_of`` maps host names to student ids."""
    directory.mkdir(parents=True, exist_ok=True)
    common = [c for c in checks if c.host not in student_of]
    by_student: dict[str, list] = {}
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
