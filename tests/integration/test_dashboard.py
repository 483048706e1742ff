"""The instructor's dashboard in `labkit serve` (labkit/door/dash.py), in a real browser (Debian's
chromium and its chromedriver through Selenium: nothing downloaded) and with an HTTP client,
against a lab of two students on Docker with the lesson's content and one testinfra test.

The instructor logs in with the credential of `labkit access --instructor`, sees both students
and their hosts, resets s02's debian12 from the page (a confirmation step first) and sees its
state go to "resetting…" and back to "running" without a reload: s02's container is new, s01's
the same, the lesson's content is back. Grade now shows a failure (with hostile text in it,
shown as text), a grade from the command line merges with the page's, a checkpoint is restored
from the page, and the CSV export downloads the grades. Students' credentials and logins open
nothing of the dashboard; the instructor's opens no terminal; a new instructor password ends
the dashboard's logins.
"""
from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.labs import down_leftovers, serving

from .conftest import docker, run

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LAB = """\
name: dashboard
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
# a failure message students can shape (here: markup), which the page must show as text
HOSTILE = "<img src=x id=pwned onerror=alert(1)> the page is gone"
TESTS = f'''\
def test_the_page_is_served(host):
    assert host.file("/srv/page.html").exists, {HOSTILE!r}
'''


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def dash_lab(tmp_path_factory: pytest.TempPathFactory):
    """The lab up, its students' and instructor's passwords (each shown once), `labkit serve`
    on free ports of 127.0.0.1."""
    d = tmp_path_factory.mktemp("dashboard")
    (d / "tests").mkdir()
    (d / "tests" / "test_lesson.py").write_text(TESTS)
    (d / "site.yml").write_text(SITE)
    (d / "lab.yml").write_text(LAB)
    lab = str(d / "lab.yml")
    run("images", "build", "debian:12")
    down_leftovers("-f", lab)
    run("up", "-f", lab, "--no-facts")  # no test reads the facts table
    handout = json.loads(run("access", "-f", lab, "--format", "json").stdout)
    # --rotate: a new one even when an earlier run of this test left one (a full `down` keeps it)
    teacher = json.loads(run("access", "-f", lab, "--instructor", "--rotate", "--format", "json").stdout)
    again = json.loads(run("access", "-f", lab, "--instructor", "--format", "json").stdout)
    assert teacher["user"] == "instructor" and teacher["url"].endswith("/dash")
    assert len(teacher["password"]) == 19 and again["password"].startswith("(given out")  # shown once
    passwords = {s["student"]: s["password"] for s in handout["students"]}
    try:
        with serving(["-f", lab], d / "serve.log") as srv:
            yield {"lab": lab, "dir": d, "passwords": passwords, "instructor": teacher["password"], **srv}
    finally:
        down_leftovers("-f", lab)


def base(lab: dict) -> str:
    return f"https://127.0.0.1:{lab['https_port']}"


def client(cookie: str = "") -> aiohttp.ClientSession:
    """An HTTP client trusting the door's self-signed certificate, with ``cookie`` sent by hand
    (aiohttp's jar ignores cookies of IP addresses)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False),
                                 headers={"Cookie": cookie} if cookie else {})


async def form_login(lab: dict, path: str, data: dict[str, str], cookie: str) -> tuple[int, str, str | None]:
    """POST a login form as the page does: (status, body, the ``cookie`` set or None)."""
    async with client() as c:
        r = await c.post(base(lab) + path, data=data, headers={"Origin": base(lab)}, allow_redirects=False)
        got = r.cookies.get(cookie)
        return r.status, await r.text(), got.value if got else None


def container_id(name: str) -> str:
    return docker("inspect", "-f", "{{.Id}}", name).strip()


# -- the browser
@pytest.fixture(scope="module")
def browser(dash_lab: dict):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        # scripts/setup.sh installs them: a missing browser is a set-up failure, never a skip
        pytest.fail("needs Debian's chromium and chromium-driver (bash scripts/setup.sh installs them)")
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # with the driver's path below, Selenium Manager never runs
    for a in ("--headless=new", "--no-sandbox", "--ignore-certificate-errors", "--window-size=1300,900",
              "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(dash_lab["dir"] / "downloads")})
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, what: Callable[[], object], timeout: float = 30, says: str = "") -> Any:
    end = time.monotonic() + timeout
    while True:
        try:
            got = what()
        except Exception:  # noqa: BLE001 - an element not there yet, or redrawn meanwhile
            got = None
        if got:
            return got
        if time.monotonic() > end:
            body = driver.find_elements("tag name", "body")
            raise AssertionError(f"timed out waiting for {says}; the page shows: "
                                 f"{body[0].text[-2000:] if body else driver.page_source[-2000:]}")
        time.sleep(0.2)


def text(driver: Any, css: str) -> str:
    return str(driver.find_element("css selector", css).text)


def host_state(driver: Any, student: str, host: str = "debian12") -> str:
    return text(driver, f'td.host[data-student="{student}"][data-host="{host}"] .state')


def status(driver: Any, student: str) -> str:
    return text(driver, f'[data-status="{student}"]')


def confirm(driver: Any, expect: str) -> str:
    """The confirmation step: wait for what it says (``expect`` in it), then Confirm."""
    said = wait(driver, lambda: expect in text(driver, "#confirm") and
                not driver.find_element("id", "confirm-yes").get_attribute("disabled") and
                text(driver, "#confirm"), says=f"the confirmation ({expect!r})")
    driver.find_element("id", "confirm-yes").click()
    return str(said)


def act(driver: Any, student: str, action: str, host: str = "") -> None:
    where = f'td.host[data-student="{student}"][data-host="{host}"]' if host else f'tr[data-student="{student}"]'
    def click() -> bool:  # found and clicked in one go: a redraw in between is tried again
        driver.find_element("css selector", f'{where} button[data-act="{action}"]').click()
        return True
    wait(driver, click, says=f"the {action} button of {student}")


def watch_until_done(driver: Any, student: str, timeout: float = 300) -> list[tuple[str, str]]:
    """The (host state, status) pairs the page shows while an action runs (from the first
    that says it runs: "…"), until it ends."""
    seen: list[tuple[str, str]] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        # both cells read in one script: the page cannot change between the two readings
        state, said = driver.execute_script(
            "const t = (s) => { const e = document.querySelector(s); return e ? e.innerText : null; };"
            "return [t(arguments[0]), t(arguments[1])];",
            f'td.host[data-student="{student}"][data-host="debian12"] .state', f'[data-status="{student}"]')
        if state is None or said is None:  # not drawn yet
            time.sleep(0.1)
            continue
        now = (str(state), str(said))
        if seen or "…" in now[1]:
            if not seen or seen[-1] != now:
                seen.append(now)
            if ": done" in now[1] or "failed" in now[1]:
                return seen
        time.sleep(0.1)
    raise AssertionError(f"the action did not end; the page showed {seen}")


@pytest.fixture(scope="module")
def dashboard(dash_lab: dict, browser: Any) -> Any:
    """The browser on the dashboard, logged in through its form (once with a wrong password)."""
    d = browser
    d.get(base(dash_lab) + "/dash")
    assert d.title == "labkit: instructor"
    d.find_element("name", "password").send_keys("not-the-password")
    d.find_element("css selector", "button[type=submit]").click()
    wait(d, lambda: "wrong user or password" in text(d, "body"), says="the wrong-password message")
    d.find_element("name", "password").send_keys(dash_lab["instructor"])
    d.find_element("css selector", "button[type=submit]").click()
    wait(d, lambda: d.title == "labkit dashboard: the class", says="the dashboard")
    wait(d, lambda: "live" in text(d, "#live") and len(d.find_elements("css selector", "#class tbody tr")) == 2,
         says="both students")
    return d


def test_the_instructor_resets_s02_debian12_and_sees_it_live(dash_lab: dict, dashboard: Any) -> None:
    d = dashboard
    head = [th.text for th in d.find_elements("css selector", "#class thead th")]
    assert head == ["Student", "debian12", "Last activity", "Last grade", "Actions"]
    for s in ("s01", "s02"):
        wait(d, lambda s=s: host_state(d, s) == "running", says=f"{s}'s debian12 running")
    # figures from the cgroup: memory at once, CPU from the second reading
    wait(d, lambda: "MiB" in text(d, 'td.host[data-student="s01"] .figures') and
         "%" in text(d, 'td.host[data-student="s01"] .figures'), says="s01's CPU and memory")
    before = {s: container_id(f"labkit-dashboard-{s}-debian12") for s in ("s01", "s02")}
    d.execute_script("window.notReloaded = true")
    # a redraw keeps the buttons: one under the pointer is the same element after it
    button = d.find_element("css selector", 'tr[data-student="s01"] button[data-act="grade"]')
    read = text(d, "#live")
    wait(d, lambda: text(d, "#live") != read, says="the next reading of the class")
    assert button.is_displayed() and button.text == "grade now"  # stale, were it redrawn

    act(d, "s02", "reset", "debian12")
    said = confirm(d, "reset debian12")
    assert "labkit-dashboard-s02-debian12" in said and "removed" in said
    seen = watch_until_done(d, "s02")
    states = [s for s, _ in seen]
    assert states[0] == "resetting…" and states[-1] == "running", seen
    assert seen[-1][1].startswith("reset debian12: done in"), seen
    assert d.execute_script("return window.notReloaded") is True  # live: the same page all along
    after = {s: container_id(f"labkit-dashboard-{s}-debian12") for s in ("s01", "s02")}
    assert after["s01"] == before["s01"] and after["s02"] != before["s02"]
    assert docker("exec", "labkit-dashboard-s02-debian12", "cat", "/srv/page.html") == "hello\n"  # the content
    wait(d, lambda: "MiB" in text(d, 'td.host[data-student="s02"] .figures'), says="the new container measured")


def test_grade_now_shows_the_failure_as_text_and_exports_csv(dash_lab: dict, dashboard: Any) -> None:
    d = dashboard
    docker("exec", "labkit-dashboard-s02-debian12", "rm", "/srv/page.html")  # s02 breaks the lesson's page
    act(d, "s02", "grade")
    confirm(d, "s02: grade")
    seen = watch_until_done(d, "s02")
    assert "grade: done in" in seen[-1][1] and "0 / 1" in seen[-1][1], seen
    cell = wait(d, lambda: "0 / 1" in text(d, 'td.grade[data-student="s02"]') and
                text(d, 'td.grade[data-student="s02"]'), says="s02's grade")
    assert f"test_the_page_is_served[debian12]: AssertionError: {HOSTILE}" in cell
    assert not d.find_elements("id", "pwned")  # text, never markup
    # a grade made elsewhere (the command) merges: s01's arrives, s02's stays
    run("grade", "-f", dash_lab["lab"], "--student", "s01")
    wait(d, lambda: "1 / 1" in text(d, 'td.grade[data-student="s01"]'), says="s01's grade from the command")
    assert "0 / 1" in wait(d, lambda: text(d, 'td.grade[data-student="s02"]'), says="s02's grade still there")

    d.find_element("id", "csv").click()
    f = dash_lab["dir"] / "downloads" / "labkit-dashboard-grades.csv"
    wait(d, lambda: f.is_file() and f.stat().st_size > 0, says="the CSV download")
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO(f.read_text()))}
    assert rows["s01"]["score"] == "1" and rows["s01"]["test_the_page_is_served[debian12]"] == "passed"
    assert rows["s02"]["score"] == "0" and rows["s02"]["out_of"] == "1"
    assert rows["s02"]["test_the_page_is_served[debian12]"] == "failed" and rows["s02"]["graded"].endswith("Z")


def test_a_checkpoint_is_restored_from_the_page(dash_lab: dict, dashboard: Any) -> None:
    d = dashboard
    name = "labkit-dashboard-s02-debian12"
    docker("exec", name, "sh", "-c", "echo stage-one > /srv/work.txt")
    run("checkpoint", "save", "-f", dash_lab["lab"], "--student", "s02", "stage1")
    docker("exec", name, "rm", "/srv/work.txt")
    act(d, "s02", "restore")
    wait(d, lambda: d.find_element("id", "confirm-pick").is_displayed() and
         "stage1" in text(d, "#confirm-checkpoint"), says="the checkpoints to pick from")
    d.find_element("id", "confirm-yes").click()  # the checkpoint picked; then what will be lost
    said = confirm(d, "everything changed since is lost")
    assert "s02: restore checkpoint stage1?" in said
    seen = watch_until_done(d, "s02")
    assert "restoring…" in [s for s, _ in seen] and seen[-1][0] == "running", seen
    assert "done in" in seen[-1][1], seen
    assert docker("exec", name, "cat", "/srv/work.txt") == "stage-one\n"


def test_students_never_open_the_dashboard(dash_lab: dict) -> None:
    """A student's password on the dashboard's form, a student's login on every /dash path,
    and no login at all: nothing of the class; the instructor's login opens no terminal."""
    student, body, token = arun(form_login(dash_lab, "/login", {"student": "s01", "password":
                                                                 dash_lab["passwords"]["s01"]}, "labkit_session"))
    assert student == 303 and token
    for user in ("s01", "instructor"):
        st, body, none = arun(form_login(dash_lab, "/dash/login", {"user": user, "password":
                                                                   dash_lab["passwords"]["s01"]}, "labkit_dash"))
        assert st == 401 and none is None and "wrong user or password" in body, (user, st)
    st, _, teacher = arun(form_login(dash_lab, "/dash/login", {"user": "instructor", "password":
                                                               dash_lab["instructor"]}, "labkit_dash"))
    assert st == 303 and teacher

    async def probe(cookie: str, origin: bool = True) -> dict[str, tuple[int, str]]:
        got = {}
        async with client(cookie) as c:
            for path in ("/dash", "/dash/events", "/dash/api/view", "/dash/api/checkpoints?student=s02",
                         "/dash/grades.csv", "/dash/static/dash.js", "/dash/nothing"):
                r = await c.get(base(dash_lab) + path, allow_redirects=False)
                got[path] = (r.status, (await r.content.read(4096)).decode(errors="replace"))
            for path in ("/dash/api/prepare", "/dash/api/run", "/dash/logout"):
                r = await c.post(base(dash_lab) + path, json={"action": "reset", "student": "s02"},
                                 headers={"Origin": base(dash_lab)} if origin else {}, allow_redirects=False)
                got["POST " + path] = (r.status, await r.text())
        return got

    as_student = arun(probe(f"labkit_session={token}"))
    for path, (st, body) in as_student.items():
        assert st == 403 and "s02" not in body and "debian12" not in body, (path, st, body)
    nobody = arun(probe(""))
    assert nobody["/dash"][0] == 200 and 'action="/dash/login"' in nobody["/dash"][1]
    assert "s02" not in nobody["/dash"][1] and "<script" not in nobody["/dash"][1]
    for path, (st, body) in nobody.items():
        if path != "/dash":
            assert st == 401 and "s02" not in body, (path, st, body)
    forged = arun(probe("labkit_dash=forged-" + "x" * 40))
    assert all(st == 401 for p, (st, _) in forged.items() if p != "/dash"), forged
    # the instructor's login: actions only from the page's own origin; no terminal, no host list
    cross = arun(probe(f"labkit_dash={teacher}", origin=False))
    assert cross["POST /dash/api/prepare"][0] == 403 and cross["POST /dash/api/run"][0] == 403
    assert cross["/dash/api/view"][0] == 200 and "s02" in cross["/dash/api/view"][1]

    async def student_paths() -> dict[str, int]:
        async with client(f"labkit_dash={teacher}") as c:
            got = {}
            for path in ("/api/hosts", "/term/debian12"):
                r = await c.get(base(dash_lab) + path, allow_redirects=False)
                got[path] = r.status
            try:
                ws = await c.ws_connect(base(dash_lab) + "/ws/debian12", origin=base(dash_lab))
                await ws.close()
                got["/ws"] = 101
            except aiohttp.WSServerHandshakeError as e:
                got["/ws"] = e.status
            return got

    assert arun(student_paths()) == {"/api/hosts": 401, "/term/debian12": 303, "/ws": 401}


def test_a_new_instructor_password_ends_the_dashboards_logins(dash_lab: dict, dashboard: Any) -> None:
    d = dashboard
    new = json.loads(run("access", "-f", dash_lab["lab"], "--instructor", "--rotate", "--format", "json").stdout)
    assert len(new["password"]) == 19 and new["password"] != dash_lab["instructor"]
    # the page's stream ends; it reloads to the login form
    wait(d, lambda: d.title == "labkit: instructor", 40, says="the login form after the rotation")
    st, _, token = arun(form_login(dash_lab, "/dash/login", {"user": "instructor", "password":
                                                             dash_lab["instructor"]}, "labkit_dash"))
    assert st == 401 and token is None
    st, _, token = arun(form_login(dash_lab, "/dash/login", {"user": "instructor", "password": new["password"]},
                                   "labkit_dash"))
    assert st == 303 and token
