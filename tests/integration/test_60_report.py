"""`labkit report` on the live default lab, rendered in a real headless browser (Debian's chromium)."""
import json
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


@pytest.fixture(scope="module")
def report(default_lab, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    run("report", "-o", str(out / "r"), "--junit-dir", str(out / "junit"))
    return out


def test_markdown_and_json(report, default_lab):
    md = (report / "r" / "report.md").read_text()
    assert "| labkit-demo-s01-vm | vm |" in md and "| lab-server | server |" in md
    assert "K11" in md and "chart.png" in md
    data = json.loads(run("report", "-o", str(report / "again"), "--no-checks", "--json").stdout)
    assert {h["role"] for h in data["hosts"]} == {"server", "container", "vm"}
    vm = next(h for h in data["hosts"] if h["role"] == "vm")
    cs = [h for h in data["hosts"] if h["role"] == "container"]
    assert all(c["ready_seconds"] < vm["ready_seconds"] for c in cs)      # K8 side by side
    assert all(c["memory_mib"] < vm["memory_mib"] for c in cs)            # K9


def test_per_student_junit(report):
    files = list((report / "junit").glob("*.xml"))
    assert [f.name for f in files] == ["demo-s01.xml"]
    names = [tc.get("name") for tc in ET.parse(files[0]).getroot().iter("testcase")]
    assert "K3[labkit-demo-s01-vm]" in names and "K10[lab-server]" in names


def test_html_renders_in_headless_chromium_with_table_and_chart(report):
    chromium = shutil.which("chromium")
    assert chromium, "scripts/setup.sh installs Debian's chromium for this test"
    page = (report / "r" / "report.html").resolve()
    profile = report / "chromium-profile"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'id="facts"' in dom and "labkit-demo-s01-vm" in dom and 'id="chart"' in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                    "--window-size=1300,1500", page.as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    colors = img.getcolors(maxcolors=1 << 20)
    def near(rgb, tol=12):
        return sum(n for n, c in colors if all(abs(a - b) <= tol for a, b in zip(c, rgb, strict=True)))
    assert near((0x2A, 0x7A, 0xB8)) > 500, "no container bars (blue) in the rendered chart"
    assert near((0xD9, 0x82, 0x2B)) > 100, "no VM bars (orange) in the rendered chart"
