"""`labkit grade`'s pure parts: a JUnit file read into checks (points, host names without the
student's prefix, the first line of a failure), and the CSV and HTML written from them."""
import csv
import io

from labkit.observe.grade import Check, Grade, checks_of, csv_text, html_page

JUNIT = """<?xml version="1.0"?><testsuites><testsuite name="t" tests="3">
<testcase classname="test_l" name="test_page[ansible://labkit-c-s02-debian12]">
  <properties><property name="points" value="2"/></properties>
  <failure message="AssertionError: the page is gone&#10;assert False">trace</failure></testcase>
<testcase classname="test_l" name="test_motd[labkit-c-s02-debian12]"/>
<testcase classname="test_l" name="test_vm_only"><skipped message="no VM"/></testcase>
</testsuite></testsuites>"""


def test_checks_from_junit(tmp_path):
    f = tmp_path / "j.xml"
    f.write_text(JUNIT)
    checks = checks_of(f, "labkit-c-s02-")
    assert checks == [Check("test_page[debian12]", "failed", 2.0, "AssertionError: the page is gone"),
                      Check("test_motd[debian12]", "passed", 1.0), Check("test_vm_only", "skipped", 1.0)]
    g = Grade("s02", checks)
    assert (g.score, g.out_of) == (1.0, 3.0)  # skipped tests count for nothing either way


def test_csv_and_html():
    grades = [Grade("s01", [Check("t[debian12]", "passed", 2)]),
              Grade("<s02>", [Check("t[debian12]", "failed", 2, "<b>bad</b>")], notes=["vm exited"])]
    rows = list(csv.DictReader(io.StringIO(csv_text(grades))))
    assert [(r["student"], r["score"], r["out_of"], r["t[debian12]"], r["notes"]) for r in rows] == [
        ("s01", "2", "2", "passed", ""), ("<s02>", "0", "2", "failed", "vm exited")]
    page = html_page("c", grades)
    assert "&lt;s02&gt;" in page and "&lt;b&gt;bad&lt;/b&gt;" in page and "<b>bad</b>" not in page
