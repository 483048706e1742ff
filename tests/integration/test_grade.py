"""`labkit grade` on a real lab of two students: the lab file's tests run per student on
that student's hosts only; s02's page is broken by the test, so s02 fails exactly that check,
with its message, in the table, CSV, HTML and s02's JUnit file; a student whose host is down
is graded on nothing and told why."""
import csv
import io
import json
import xml.etree.ElementTree as ET

import pytest

from tests.labs import down_leftovers

from .conftest import docker, run

pytestmark = pytest.mark.integration

LAB = """\
name: grade
students: [s01, s02]
containers: [debian:12]
vm: {enabled: false}
provision:
  playbooks: [site.yml]
tests: [tests]
"""
SITE = """\
- name: The lesson's page
  hosts: python
  tasks:
    - name: Write the page
      ansible.builtin.copy: {content: "hello\\n", dest: /srv/page.html, mode: "0644"}
"""
TESTS = '''\
import pytest


@pytest.mark.points(2)
def test_the_page_is_served(host):
    assert host.file("/srv/page.html").exists, "the page /srv/page.html is gone"


def test_the_motd_names_the_kernel(host):
    assert host.check_output("uname -r") in host.file("/etc/motd").content_string
'''


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    d = tmp_path_factory.mktemp("grade")
    (d / "tests").mkdir()
    (d / "tests" / "test_lesson.py").write_text(TESTS)
    (d / "site.yml").write_text(SITE)
    (d / "lab.yml").write_text(LAB)
    lab = str(d / "lab.yml")
    run("images", "build", "debian:12")
    down_leftovers("-f", lab)
    run("up", "-f", lab, "--no-facts")  # no test reads the facts table
    docker("exec", "labkit-grade-s02-debian12", "rm", "/srv/page.html")  # s02 breaks the lesson's page
    yield {"lab": lab, "dir": d}
    down_leftovers("-f", lab)


def test_grade_fails_only_the_broken_check_of_the_student_who_broke_it(graded):
    out = graded["dir"] / "out"
    p = run("grade", "-f", graded["lab"], "-o", str(out))
    assert "s02: test_the_page_is_served[debian12]: AssertionError: the page /srv/page.html is gone" in p.stdout
    grades = {g["student"]: g for g in json.loads(run("grade", "-f", graded["lab"], "--json").stdout)}
    s01 = {c["name"]: c for c in grades["s01"]["checks"]}
    s02 = {c["name"]: c for c in grades["s02"]["checks"]}
    assert set(s01) == set(s02) == {"test_the_page_is_served[debian12]", "test_the_motd_names_the_kernel[debian12]"}
    assert all(c["outcome"] == "passed" for c in s01.values()) and grades["s01"]["score"] == 3
    assert s02["test_the_page_is_served[debian12]"]["outcome"] == "failed"
    assert "the page /srv/page.html is gone" in s02["test_the_page_is_served[debian12]"]["message"]
    assert s02["test_the_motd_names_the_kernel[debian12]"]["outcome"] == "passed"
    assert (grades["s02"]["score"], grades["s02"]["out_of"]) == (1, 3)
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO((out / "grades.csv").read_text()))}
    assert rows["s01"]["score"] == "3" and rows["s02"]["score"] == "1" and rows["s02"]["out_of"] == "3"
    assert rows["s02"]["test_the_page_is_served[debian12]"] == "failed"
    assert rows["s01"]["test_the_page_is_served[debian12]"] == "passed"
    page = (out / "grades.html").read_text()
    assert "s01" in page and "FAIL" in page and "the page /srv/page.html is gone" in page
    for student, failures in (("s01", 0), ("s02", 1)):
        root = ET.parse(out / f"junit-{student}.xml").getroot()
        cases = list(root.iter("testcase"))
        assert len(cases) == 2 and sum(c.find("failure") is not None for c in cases) == failures
        # each student's tests ran on that student's host only
        assert all(f"labkit-grade-{student}-debian12" in c.get("name", "") for c in cases), [c.get("name") for c in cases]


def test_a_student_whose_hosts_are_down_is_told_so(graded):
    docker("stop", "-t", "0", "labkit-grade-s02-debian12")
    try:
        g = json.loads(run("grade", "-f", graded["lab"], "--student", "s02", "--json").stdout)
        assert len(g) == 1 and g[0]["student"] == "s02" and g[0]["checks"] == []
        assert "debian12 exited" in g[0]["notes"] and "no host running: nothing graded" in g[0]["notes"]
    finally:
        docker("start", "labkit-grade-s02-debian12")
