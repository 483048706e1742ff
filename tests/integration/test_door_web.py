"""The HTTPS page of `labkit serve` (labkit/door/web.py), in a real browser (Debian's chromium
driven by its chromedriver through Selenium: nothing downloaded) and with an HTTP client
(aiohttp), against the door lab on Docker.

s01 logs in, opens their debian12 in the browser's terminal and reads the lab server's kernel
release there; the same shell survives a dropped connection; a resize reaches it. Editing the
address (another student's host, a path, a query, a resume id) reaches nothing else; without a
login nothing but the login page answers; forms and websockets from another origin are refused.
Wrong passwords: two in all here (the throttle is per source address too, shared with the SSH
tests), none for a student another test needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from labkit.door.core import session_log

from .conftest import docker

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WRONG = "wrong student id or password (or too many tries: wait a minute)"


def arun(coro):
    return asyncio.run(coro)


def base(door: dict) -> str:
    return f"https://127.0.0.1:{door['https_port']}"


def client(token: str | None = None) -> aiohttp.ClientSession:
    """An HTTP client that trusts the door's self-signed certificate, with ``token`` as the
    session cookie (sent by hand: aiohttp's cookie jar ignores cookies of IP addresses)."""
    headers = {"Cookie": f"labkit_session={token}"} if token else {}
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False), headers=headers)


async def login(door: dict, student: str, password: str | None = None) -> tuple[int, str, str | None]:
    """POST /login as the page's form does: (status, body, session token or None)."""
    async with client() as c:
        r = await c.post(
            base(door) + "/login",
            allow_redirects=False,
            headers={"Origin": base(door)},
            data={"student": student, "password": password or door["passwords"][student]},
        )
        cookie = r.cookies.get("labkit_session")
        return r.status, await r.text(), cookie.value if cookie else None


async def ws_refused(door: dict, path: str, token: str | None, origin: str | None = "") -> int:
    """The HTTP status a websocket handshake to ``path`` gets (it must not be accepted)."""
    async with client(token) as c:
        try:
            ws = await c.ws_connect(base(door) + path, origin=base(door) if origin == "" else origin)
        except aiohttp.WSServerHandshakeError as e:
            return e.status
        await ws.close()
        raise AssertionError(f"the websocket {path} was accepted")


async def terminal_output(
    ws: aiohttp.ClientWebSocketResponse, until: Callable[[str], bool], timeout: float = 30
) -> str:
    """What the terminal shows (binary frames, decoded) until ``until(text)`` holds."""
    out = b""
    end = time.monotonic() + timeout
    while not until(out.decode(errors="replace")):
        left = end - time.monotonic()
        assert left > 0, f"timed out; the terminal showed: {out.decode(errors='replace')[-1000:]!r}"
        m = await ws.receive(timeout=left)
        assert m.type == aiohttp.WSMsgType.BINARY, f"{m}; the terminal showed: {out[-1000:]!r}"
        out += m.data
    return out.decode(errors="replace")


# -- the browser
@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        # scripts/setup.sh installs them: a missing browser is a set-up failure, never a skip
        pytest.fail("needs Debian's chromium and chromium-driver (bash scripts/setup.sh installs them)")
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # with the driver's path below, Selenium Manager never runs
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--ignore-certificate-errors",
        "--window-size=1200,800",
        "--disable-gpu",
        "--disable-dev-shm-usage",
    ):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, what: Callable[[], object], timeout: float = 30, says: str = ""):
    end = time.monotonic() + timeout
    while True:
        try:
            got = what()
        except Exception:  # noqa: BLE001 - an element not there yet, a page still loading
            got = None
        if got:
            return got
        if time.monotonic() > end:
            screen = driver.find_elements("css selector", ".xterm-rows")
            body = driver.find_elements("tag name", "body")
            raise AssertionError(
                f"timed out waiting for {says}; the page shows: "
                f"{(screen or body)[0].text[-1500:] if (screen or body) else driver.page_source[-1500:]}"
            )
        time.sleep(0.2)


def screen(driver) -> str:
    return driver.find_element("css selector", ".xterm-rows").text


def type_in(driver, text: str) -> None:
    driver.find_element("css selector", ".xterm-helper-textarea").send_keys(text)


def run_in(driver, command: str, expect: str, timeout: float = 30) -> str:
    """Type ``command`` + Enter in the page's terminal; wait until ``expect`` shows."""
    type_in(driver, command + "\n")
    return wait(driver, lambda: expect in screen(driver) and screen(driver), timeout, says=repr(expect))


@pytest.fixture(scope="module")
def s01_browser(door_lab, browser):
    """The browser logged in as s01 through the login form (one wrong try first: unknown id)."""
    d = browser
    d.get(base(door_lab) + "/")
    assert d.title == "labkit: log in"
    d.find_element("name", "student").send_keys("s99")
    d.find_element("name", "password").send_keys("not-a-password")
    d.find_element("css selector", "button[type=submit]").click()
    wait(d, lambda: WRONG in d.find_element("tag name", "body").text, says="the wrong-password message")
    d.find_element("name", "student").clear()
    d.find_element("name", "student").send_keys("s01")
    d.find_element("name", "password").send_keys(door_lab["passwords"]["s01"])
    d.find_element("css selector", "button[type=submit]").click()
    wait(d, lambda: d.title == "labkit: s01", says="the host list")
    return d


def test_browser_terminal_uname_reconnect_and_resize(door_lab, s01_browser):
    d = s01_browser
    table = d.find_element("id", "hosts").text
    assert "debian12" in table and "busybox" in table and "running" in table
    # the host's link opens its terminal in a new tab
    home = d.current_window_handle
    d.find_element("link text", "debian12").click()
    wait(d, lambda: len(d.window_handles) == 2, says="the terminal's tab")
    d.switch_to.window([h for h in d.window_handles if h != home][0])
    assert d.current_url == base(door_lab) + "/term/debian12"
    wait(d, lambda: d.find_element("id", "status").text == "connected", says="connected")
    wait(d, lambda: "$" in screen(d), says="the shell's prompt")

    release = os.uname().release
    run_in(d, "uname -r", release)
    hostname = docker("inspect", "-f", "{{.Config.Hostname}}", "labkit-door-s01-debian12").strip()
    run_in(d, 'echo "who=$(id -un) on=$(hostname)"', f"who=student on={hostname}")

    # reconnect: the websocket drops; the page takes the same shell back, its output replayed
    run_in(d, "MARK=kept-$((6*7))", "$")
    first = d.execute_script("return window.labkitTerminal.id")
    d.execute_script("window.labkitTerminal.drop()")
    wait(d, lambda: d.find_element("id", "status").text.startswith("connection lost"), 10, says="the drop")
    wait(d, lambda: d.find_element("id", "status").text == "connected again", 30, says="the reconnection")
    assert d.execute_script("return window.labkitTerminal.id") == first
    assert f"who=student on={hostname}" in screen(d)  # replayed
    run_in(d, 'echo "mark=$MARK"', "mark=kept-42")

    # resize: the window shrinks, the terminal fits it, the shell's terminal follows
    def rows_cols() -> list[int]:
        return d.execute_script("return [window.labkitTerminal.term.rows, window.labkitTerminal.term.cols]")

    before = rows_cols()
    d.set_window_size(820, 560)
    wait(d, lambda: rows_cols() != before, says="the terminal to fit the window")
    size = rows_cols()
    run_in(d, 'clear; echo "size=$(stty size)"', f"size={size[0]} {size[1]}")

    # copy and paste, xterm.js's own: Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    def chord(key: str) -> None:
        keys = ActionChains(d).key_down(Keys.CONTROL).key_down(Keys.SHIFT).send_keys(key)
        keys.key_up(Keys.SHIFT).key_up(Keys.CONTROL).perform()

    d.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": base(door_lab), "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    d.execute_script("window.labkitTerminal.term.selectAll()")
    chord("c")
    clip = "return navigator.clipboard.readText()"
    assert f"size={size[0]} {size[1]}" in wait(d, lambda: d.execute_script(clip), says="the copied selection")
    d.execute_script("return navigator.clipboard.writeText('echo \"pasted=$((40+2))\"')")
    chord("v")
    run_in(d, "", "pasted=42")

    # the session log: login, open and resume via the web, never what was typed
    events = [e for e in session_log("door") if e.get("student") == "s01"]
    assert any(e["event"] == "login" and e.get("via") == "web" for e in events)
    assert any(e["event"] == "open" and e.get("via") == "web" and e.get("host") == "debian12" for e in events)
    assert any(e["event"] == "resume" and e.get("via") == "web" for e in events)
    assert "kept-" not in json.dumps(session_log("door"))
    d.close()
    d.switch_to.window(home)


def test_other_students_hosts_are_refused(door_lab, s01_browser):
    d = s01_browser
    for path in (
        "/term/labkit-door-s02-debian12",
        "/term/..%2Fs02",
        "/term/..%2F..%2Fs02%2Fdebian12",
        "/term/s02-debian12",
    ):
        d.get(base(door_lab) + path)
        body = d.find_element("tag name", "body").text
        assert d.title == "labkit: not found" and "of yours; your hosts: debian12, busybox" in body, (
            path,
            body,
        )
        assert not d.find_elements("css selector", ".xterm-rows")
    token = d.get_cookie("labkit_session")["value"]
    for path in ("/ws/labkit-door-s02-debian12", "/ws/..%2Fs02-debian12", "/ws/s02+debian12"):
        assert arun(ws_refused(door_lab, path, token)) == 404, path

    mine = docker("inspect", "-f", "{{.Config.Hostname}}", "labkit-door-s01-debian12").strip()
    theirs = docker("inspect", "-f", "{{.Config.Hostname}}", "labkit-door-s02-debian12").strip()

    async def hostname(ws: aiohttp.ClientWebSocketResponse) -> str:
        await ws.send_bytes(b'echo "host=$(hostname)."\n')
        out = await terminal_output(ws, lambda t: f"host={mine}." in t or f"host={theirs}." in t)
        return mine if f"host={mine}." in out else theirs

    async def addresses_edited() -> tuple[dict, str, dict, dict, str]:
        """A query naming s02 changes nothing: it is s01's debian12. A resume id of s01's
        terminal resumes nothing on s01's other host, nor for s02."""
        async with client(token) as c:
            ws = await c.ws_connect(
                base(door_lab) + "/ws/debian12?student=s02&cols=100&rows=30", origin=base(door_lab)
            )
            hello = await ws.receive_json(timeout=30)
            on = await hostname(ws)
            other = await c.ws_connect(
                base(door_lab) + f"/ws/busybox?resume={hello['id']}", origin=base(door_lab)
            )
            on_busybox = await other.receive_json(timeout=30)
            await other.close()
            status, _, token2 = await login(door_lab, "s02")
            assert status == 303 and token2
            async with client(token2) as c2:
                theirs_ws = await c2.ws_connect(
                    base(door_lab) + f"/ws/debian12?resume={hello['id']}", origin=base(door_lab)
                )
                as_s02 = await theirs_ws.receive_json(timeout=30)
                on2 = await hostname(theirs_ws)
                await theirs_ws.close()
            await ws.close()
            return hello, on, on_busybox, as_s02, on2

    hello, on, on_busybox, as_s02, on2 = arun(addresses_edited())
    assert hello["type"] == "hello" and hello["host"] == "debian12" and on == mine
    assert (
        on_busybox["type"] == "hello" and on_busybox["resumed"] is False and on_busybox["id"] != hello["id"]
    )
    assert as_s02["type"] == "hello" and as_s02["resumed"] is False and as_s02["id"] != hello["id"]
    assert on2 == theirs  # s02 with s01's resume id: a new shell on s02's own debian12


def test_nothing_but_the_login_page_without_a_login(door_lab):
    async def probe() -> dict[str, tuple[int, str]]:
        got = {}
        async with client() as c:
            for path in (
                "/api/hosts",
                "/term/debian12",
                "/static/term.js",
                "/static/vendor/xterm.js",
                "/static/vendor/LICENSE.xterm",
                "/nothing",
                "/login",
                "/term/..%2Fs02",
            ):
                r = await c.get(base(door_lab) + path, allow_redirects=False)
                got[path] = (r.status, await r.text())
            for path in ("/logout", "/api/hosts"):
                r = await c.post(
                    base(door_lab) + path, allow_redirects=False, headers={"Origin": base(door_lab)}
                )
                got["POST " + path] = (r.status, await r.text())
            r = await c.get(
                base(door_lab) + "/api/hosts", headers={"Cookie": "labkit_session=forged-" + "x" * 40}
            )
            got["forged cookie"] = (r.status, await r.text())
            r = await c.get(base(door_lab) + "/")
            got["/"] = (r.status, await r.text())
            got["headers"] = (r.status, json.dumps(dict(r.headers)))
        return got

    got = arun(probe())
    for path, (status, body) in got.items():
        if path in ("/", "headers"):
            continue
        assert status in (401, 303), (path, status, body)
        assert "debian12" not in body and "Terminal" not in body and "{" not in body, (path, body)
    assert got["/term/debian12"][0] == 303
    assert got["/"][0] == 200 and 'action="/login"' in got["/"][1] and "<script" not in got["/"][1]
    headers = json.loads(got["headers"][1])
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] in ("no-referrer", "same-origin")
    assert arun(ws_refused(door_lab, "/ws/debian12", None)) == 401


def test_a_wrong_password_is_refused(door_lab):
    status, body, token = arun(login(door_lab, "s01", "wrong-" + door_lab["passwords"]["s01"]))
    assert status == 401 and WRONG in body and token is None

    # a form sent from another site's page is refused before any check
    async def foreign() -> int:
        async with client() as c:
            r = await c.post(
                base(door_lab) + "/login",
                allow_redirects=False,
                headers={"Origin": "https://evil.example"},
                data={"student": "s01", "password": door_lab["passwords"]["s01"]},
            )
            return r.status

    assert arun(foreign()) == 403
    status, _, token = arun(login(door_lab, "s01"))  # the right one still works (and clears the count)
    assert status == 303 and token


def test_cross_site_websocket_logout_and_idle_close(door_lab):
    status, _, token = arun(login(door_lab, "s01"))
    assert status == 303 and token
    assert arun(ws_refused(door_lab, "/ws/debian12", token, origin="https://evil.example")) == 403
    assert arun(ws_refused(door_lab, "/ws/debian12", token, origin=None)) == 403
    assert (
        arun(ws_refused(door_lab, "/ws/debian12", token, origin=f"http://127.0.0.1:{door_lab['https_port']}"))
        == 403
    )

    async def idle_then_logout() -> tuple[dict, float, dict, int]:
        async with client(token) as c:
            ws = await c.ws_connect(base(door_lab) + "/ws/busybox", origin=base(door_lab))
            assert (await ws.receive_json(timeout=30))["type"] == "hello"
            t0 = time.monotonic()
            closed: dict = {}
            while not closed:  # no input: the sweep closes it after the lab's idle_timeout (20 s)
                m = await ws.receive(timeout=60)
                if m.type == aiohttp.WSMsgType.TEXT:
                    closed = json.loads(m.data)
                assert m.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), m
            idle = time.monotonic() - t0
            ws2 = await c.ws_connect(base(door_lab) + "/ws/debian12", origin=base(door_lab))
            assert (await ws2.receive_json(timeout=30))["type"] == "hello"
            r = await c.post(
                base(door_lab) + "/logout", allow_redirects=False, headers={"Origin": base(door_lab)}
            )
            assert r.status == 303
            bye: dict = {}
            while not bye:
                m = await ws2.receive(timeout=30)
                if m.type == aiohttp.WSMsgType.TEXT:
                    bye = json.loads(m.data)
                assert m.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), m
            r = await c.get(base(door_lab) + "/api/hosts")
            return closed, idle, bye, r.status

    closed, idle, bye, after = arun(idle_then_logout())
    assert closed == {"type": "closed", "why": "closed after 20 s without input"} and 15 < idle < 40
    assert bye == {"type": "closed", "why": "you logged out"}
    assert after == 401
