"""`labkit report` on the live default lab, rendered in a real headless browser (Debian's chromium)
at a projector's 1280x1600: whose bar is whose, the VM's accelerator and parallel boots, and
the pass/fail summary above the fold, checked in the rendered page's layout and its pixels."""
import html
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .conftest import run

pytestmark = [pytest.mark.integration, pytest.mark.vm]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
WIDTH, FOLD = 1280, 1600
HOSTS = ["s01 vm", "s01 busybox", "s01 debian11", "s01 debian12", "s01 debian13"]

# Appended to a copy of the page: reads the layout chromium computed and leaves it in the DOM
# for --dump-dom (the report itself has no script).
LAYOUT_JS = """
const box = e => { const r = e.getBoundingClientRect();
  return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, height: r.height, text: e.textContent.trim()}; };
const all = sel => [...document.querySelectorAll(sel)];
const lines = e => { const r = document.createRange(); r.selectNodeContents(e); return r.getClientRects().length; };
const out = {
  viewport: [innerWidth, innerHeight],
  summary: box(document.getElementById('summary')),
  verdict: document.getElementById('summary').className,
  chart: box(document.getElementById('chart')),
  bar_labels: all('#chart g[id^="bar-label-"] text').map(box),
  vm_notes: all('#chart g[id^="vm-note-"] text').map(box),
  values: all('#chart g[id^="value-"] text').map(box),
  xticks: all('#chart g[id^="xtick_"] text').map(box),
  chart_texts: all('#chart text').map(t => t.textContent),
  host_cells: all('#facts td.host').map(td => ({text: td.textContent, lines: lines(td)})),
  rows: all('#facts tr').map(tr => [...tr.cells].map(c => c.textContent)),
};
const pre = document.createElement('pre'); pre.id = 'layout'; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
"""


VERDICT_BACKGROUND = {"pass": (0xE3, 0xF4, 0xE7), "fail": (0xFB, 0xE3, 0xE3), "unchecked": (0xFD, 0xF2, 0xDC)}


@pytest.fixture(scope="module")
def report(default_lab, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    p = run("report", "--lab", "demo", "-o", str(out / "r"), "--junit-dir", str(out / "junit"), "--json",
            check=False)
    data = json.loads(p.stdout)
    failed = [c for c in data["checks"] if c["outcome"] == "failed"]
    # the page is written either way; the exit code says whether a fact failed
    assert p.returncode == (1 if failed else 0), p.stderr
    return out, data


def test_markdown_and_json(report, default_lab):
    out, data = report
    md = (out / "r" / "report.md").read_text()
    assert "| labkit-demo-s01-vm | vm |" in md and "| lab-server | server |" in md
    assert "K11" in md and "chart.png" in md
    assert md.splitlines()[2] == f"**{data['summary']['headline']}**"   # the verdict comes first
    again = json.loads(run("report", "--lab", "demo", "-o", str(out / "again"), "--no-checks", "--json").stdout)
    assert {h["role"] for h in again["hosts"]} == {"server", "container", "vm"}
    vm = next(h for h in again["hosts"] if h["role"] == "vm")
    cs = [h for h in again["hosts"] if h["role"] == "container"]
    assert all(c["ready_seconds"] < vm["ready_seconds"] for c in cs)      # K8 side by side
    assert all(c["memory_mib"] < vm["memory_mib"] for c in cs)            # K9
    # facts not checked are never reported as passing
    assert again["summary"]["verdict"] == "unchecked" and again["summary"]["headline"].startswith("NOT CHECKED")


def test_measurements_are_real_and_the_vm_boot_is_explained(report):
    _, data = report
    rows = {h["label"]: h for h in data["hosts"]}
    server = rows["lab-server"]
    assert (server["ready"], server["memory"], server["disk"]) == ("n/a", "n/a", "n/a")
    assert server["memory_mib"] is None and server["disk_mb"] is None        # no made-up 0.0
    bb = rows["s01 busybox"]
    assert bb["memory_bytes"] > 0, "BusyBox's memory not measured"
    assert bb["memory"] == (f"{bb['memory_bytes'] / 1024:.0f} KiB" if bb["memory_bytes"] < 2**20
                            else f"{bb['memory_bytes'] / 2**20:.1f} MiB")
    vm = rows["s01 vm"]
    # recorded by the fixture's `labkit up`, which booted this one VM alone: the first `up`
    # was interrupted mid-boot, the second recreated the half-made VM
    assert vm["accel"] in ("kvm", "qemu"), vm
    if not os.path.exists("/dev/kvm"):
        assert vm["accel"] == "qemu", "no /dev/kvm here: the VM must have booted under emulation"
    assert vm["boots_at_once"] == 1, vm
    assert vm["server_cores"] == os.cpu_count() and vm["vm_cpus"] >= 1, vm
    assert vm["server_vms"] >= 1, vm        # QEMU guests here when it came up: itself at least
    # the summary says what the checks say (test_30 checks that every fact holds here)
    s, checks = data["summary"], data["checks"]
    n = {o: sum(c["outcome"] == o for c in checks) for o in ("passed", "failed", "skipped")}
    assert {k: s["checks"][k] for k in n} == n
    failed_facts = sorted({c["fact"] for c in checks if c["outcome"] == "failed"}, key=lambda f: int(f[1:]))
    assert s["checks"]["failed_facts"] == failed_facts
    if failed_facts:
        assert s["verdict"] == "fail" and s["headline"].startswith(f"FAIL: {', '.join(failed_facts)} failed")
    elif n["skipped"]:
        assert s["verdict"] == "unchecked"
    else:
        assert s["verdict"] == "pass" and s["headline"].startswith("PASS: all 12 facts hold")
    assert s["hosts"] == {"up": 5, "expected": 5, "missing": [], "not_answering": [], "containers": 4, "vms": 1,
                          "students": 1}


def test_per_student_junit(report):
    out, _ = report
    files = list((out / "junit").glob("*.xml"))
    assert [f.name for f in files] == ["demo-s01.xml"]
    names = [tc.get("name") for tc in ET.parse(files[0]).getroot().iter("testcase")]
    assert "K3[labkit-demo-s01-vm]" in names and "K10[lab-server]" in names


def _layout(chromium: str, page: Path, profile: Path) -> dict:
    probe = page.with_name("layout-probe.html")
    probe.write_text(page.read_text().replace("</body>", f"<script>{LAYOUT_JS}</script>\n</body>"))
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},{FOLD}",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    m = re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S)
    assert m, f"the layout probe did not run:\n{dom[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def _above_the_fold(b: dict) -> bool:
    return 0 <= b["top"] and b["bottom"] <= FOLD and 0 <= b["left"] and b["right"] <= WIDTH


def test_html_in_headless_chromium_at_1280x1600(report):
    out, data = report
    chromium = shutil.which("chromium")
    assert chromium, "scripts/setup.sh installs Debian's chromium for this test"
    page = (out / "r" / "report.html").resolve()
    profile = out / "chromium-profile"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'id="facts"' in dom and "labkit-demo-s01-vm" in dom and 'id="chart"' in dom
    assert "<script" not in page.read_text() and "src=" not in page.read_text()  # self-contained, static

    lay = _layout(chromium, page, profile)
    # boxes are in page pixels from the top (nothing scrolled); --dump-dom's window keeps
    # some height for itself, the screenshot below is the full 1280x1600
    assert lay["viewport"][0] == WIDTH
    # the pass/fail summary, above the fold
    assert _above_the_fold(lay["summary"]), lay["summary"]
    verdict, counts = data["summary"]["verdict"], data["summary"]["checks"]
    assert lay["verdict"] == verdict
    assert lay["summary"]["text"].startswith(data["summary"]["headline"])
    assert f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped" in lay["summary"]["text"]
    assert "5 of 5 hosts up" in lay["summary"]["text"]
    # whose bar is whose: every bar labelled with its student and host, large, above the fold
    labels = lay["bar_labels"]
    assert [b["text"] for b in labels] == HOSTS
    assert all(b["text"].split()[0] == "s01" for b in labels)
    for b in labels + lay["xticks"] + lay["values"]:
        assert _above_the_fold(b), b
    assert min(b["height"] for b in labels) >= 20, "bar labels too small for a projector"
    assert lay["xticks"] and min(b["height"] for b in lay["xticks"]) >= 17, "tick labels too small for a projector"
    assert sorted(b["top"] for b in labels) == [b["top"] for b in labels]  # one row each, in order
    assert all(b2["top"] >= b1["bottom"] - 2 for b1, b2 in zip(labels, labels[1:], strict=False))
    # the axes say they are logarithmic
    assert sum(t.endswith("log scale") for t in lay["chart_texts"]) == 3
    # the VM's boot time: accelerator, VMs booted at once and the server's cores, on the chart
    vm = next(h for h in data["hosts"] if h["role"] == "vm")
    word = "TCG" if vm["accel"] == "qemu" else "KVM"
    notes = " ".join(b["text"] for b in lay["vm_notes"])
    assert lay["vm_notes"] and all(_above_the_fold(b) for b in lay["vm_notes"])
    assert word in notes and f"{vm['boots_at_once']} VM booted at once" in notes, notes
    assert f"on a {os.cpu_count()}-core lab server" in notes, notes
    if vm["server_vms"] > vm["boots_at_once"]:  # other VMs on the same cores are said
        assert f"{vm['server_vms']} VMs were running there when it came up" in notes, notes
    else:
        assert "(alone)" in notes, notes
    assert any(t.startswith(vm["ready"]) and f"({word})" in t for t in lay["chart_texts"]), lay["chart_texts"]
    assert word in lay["summary"]["text"] and f"{vm['boots_at_once']} VM booted at once" in lay["summary"]["text"]
    # host names on one line each; the lab server's numbers say n/a, never 0.0
    assert lay["host_cells"] and all(c["lines"] == 1 for c in lay["host_cells"]), lay["host_cells"]
    header, *rows = lay["rows"]
    server = dict(zip(header, next(r for r in rows if r[0] == "lab-server"), strict=True))
    assert (server["start"], server["memory"], server["disk"]) == ("n/a", "n/a", "n/a")
    busybox = dict(zip(header, next(r for r in rows if r[0] == "labkit-demo-s01-busybox"), strict=True))
    assert re.fullmatch(r"[1-9]\d* KiB|\d+\.\d MiB", busybox["memory"]), busybox

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    f"--window-size={WIDTH},{FOLD}", page.as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (WIDTH, FOLD)
    colors = img.getcolors(maxcolors=1 << 22)

    def near(rgb, tol=12):
        return sum(n for n, c in colors if all(abs(a - b) <= tol for a, b in zip(c, rgb, strict=True)))
    assert near((0x2A, 0x7A, 0xB8)) > 500, "no container bars (blue) above the fold"
    assert near((0xD9, 0x82, 0x2B)) > 100, "no VM bars (orange) above the fold"
    assert near(VERDICT_BACKGROUND[verdict], tol=3) > 20_000, f"no {verdict} banner above the fold"
