"""The instructor's dashboard in `labkit serve` (issue 28): the class live, students by hosts
(state, CPU, memory, last activity at the door), each student's last grade with its failures,
and actions per student (reset a host, restore a checkpoint, grade now) after a confirmation
step; the grades as CSV. Students never see it.

    GET  /dash                 the login form (no instructor login), else the dashboard
    POST /dash/login           user ``instructor`` and the password from `labkit access --instructor`
    POST /dash/logout
    GET  /dash/events          server-sent events: the class as JSON, again every REFRESH s and
                               at once when an action starts or ends
    GET  /dash/api/view        the same JSON, once
    GET  /dash/api/checkpoints ?student=ID: that student's checkpoints
    POST /dash/api/prepare     {action: reset|restore|grade, student, hosts?, checkpoint?}: what
                               it will do (and lose), and a token for /dash/api/run (one use, 2 min)
    POST /dash/api/run         {token}: runs it (a worker thread; one action per student at a time)
    GET  /dash/grades.csv      every student's last grade
    GET  /dash/static/NAME     dash.js, dash.css

Its own login (an argon2id hash in ``access/instructor.json``, throttled like students'; a
token in an HttpOnly, Secure, SameSite=Strict cookie for /dash only, kept hashed), checked on
every /dash path by a middleware: a student's login is refused there (403), and the instructor's
opens no terminal (it is no student's). Every POST must come from this origin. The page is
built with textContent from JSON (names come from the lab file, grade messages from test output
students can influence): nothing is parsed as HTML.
"""
from __future__ import annotations

import asyncio
import contextlib
import html
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from labkit.access import creds
from labkit.access.creds import INSTRUCTOR, MAX_PASSWORD
from labkit.api import watch
from labkit.api.checkpoint import checkpoints, restore
from labkit.api.grade import grade, last_file, last_grades
from labkit.api.reset import preview as reset_preview
from labkit.api.reset import reset
from labkit.door.core import Open, log
from labkit.door.web import COOKIE as STUDENT_COOKIE
from labkit.door.web import LOGIN_TTL, Site, _html, _page, _sha
from labkit.errors import LabkitError
from labkit.observe.grade import Grade, csv_text

PREFIX = "/dash"
COOKIE = "labkit_dash"
ACCOUNT = "(instructor)"  # its throttle account and session-log name: no student id looks like it
REFRESH = 2.5  # seconds between two readings of the class while someone watches
KEEPALIVE = 15.0
CONFIRM_TTL = 120.0
MAX_STREAMS = 32
MAX_FAILURES = 20  # per student on the page (the CSV and `labkit grade` have them all)
ASSETS = ("dash.js", "dash.css")
VERBS = {"reset": "resetting", "restore": "restoring", "grade": "grading"}
WRONG = "wrong user or password (or too many tries: wait a minute)"
STUDENTS_NEVER = "this page is the instructor's: students' logins never open it"


@dataclass
class Login:
    peer: str
    stamp: str  # the instructor's credential it was made with: a new one ends it
    created: float = field(default_factory=time.monotonic)


@dataclass
class Action:
    """One action on one student, as the page shows it."""

    what: str  # reset, restore, grade
    student: str
    hosts: list[str]
    checkpoint: str = ""
    state: str = "waiting"  # waiting (for the lab's lock), running, done, failed
    message: str = ""
    progress: str = ""
    started: float = field(default_factory=time.time)
    ended: float | None = None

    def label(self) -> str:
        return {"reset": f"reset {', '.join(self.hosts) or 'all hosts'}",
                "restore": f"restore checkpoint {self.checkpoint}", "grade": "grade"}[self.what]

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "label": self.label(), "verb": VERBS[self.what], "hosts": self.hosts,
                "checkpoint": self.checkpoint, "state": self.state, "message": self.message[:2000],
                "progress": self.progress[:300], "started": self.started, "ended": self.ended}


def grade_summary(when: float, g: Grade) -> dict[str, Any]:
    """A student's last grade for the page: score, when, notes, the failures (capped)."""
    fails = [{"name": c.name, "message": c.message} for c in g.checks if c.outcome == "failed"]
    return {"time": when, "score": g.score, "out_of": g.out_of, "notes": g.notes[:MAX_FAILURES],
            "failures": fails[:MAX_FAILURES], "more": max(0, len(fails) - MAX_FAILURES)}


def parse_request(body: Any, students: Sequence[str], columns: Sequence[str]) -> tuple[str, str, list[str], str]:
    """(action, student, hosts, checkpoint) of a prepare request, checked against the lab's
    students and host names; ValueError (the message for the page) otherwise."""
    if not isinstance(body, dict):
        raise ValueError("a JSON object is expected")
    what, student = body.get("action"), body.get("student")
    if what not in VERBS:
        raise ValueError(f"no such action: use one of {', '.join(VERBS)}")
    if not isinstance(student, str) or student not in students:
        raise ValueError("no such student in this lab")
    hosts = body.get("hosts") or []
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h in columns for h in hosts) or len(hosts) > 50:
        raise ValueError("no such host in this lab")
    cp = body.get("checkpoint") or ""
    if what == "restore" and (not isinstance(cp, str) or not cp or len(cp) > 64 or not cp.isprintable()):
        raise ValueError("name the checkpoint to restore")
    return str(what), student, list(dict.fromkeys(hosts)) if what == "reset" else [], cp if what == "restore" else ""


class Dash:
    """The dashboard's state: instructor logins, the watchers' streams, the actions."""

    def __init__(self, site: Site) -> None:
        self.site, self.door, self.lab = site, site.door, site.door.lab
        self.logins: dict[str, Login] = {}
        self.actions: dict[str, Action] = {}  # the last per student
        self.tasks: set[asyncio.Task[None]] = set()
        self.pending: dict[str, tuple[str, float, Action]] = {}  # token: (login key, expiry, action)
        self.lab_lock = asyncio.Lock()  # resets and restores take the lab's lock: one at a time here
        self.view: dict[str, Any] = {}
        self.version = 0
        self.changed = asyncio.Condition()
        self.streams = 0
        self.refresher: asyncio.Task[None] | None = None
        self.reading = asyncio.Lock()
        self._cred: tuple[float, creds.Entry | None] = (-1.0, None)
        self._grades: tuple[float, dict[str, Any]] = (-1.0, {})

    # -- who is asking
    def credential(self) -> creds.Entry | None:
        m = creds.instructor_mtime(self.lab.name)
        if m != self._cred[0]:
            self._cred = (m, creds.instructor(self.lab.name) if m else None)
        return self._cred[1]

    def login_of(self, request: web.Request) -> str | None:
        token = request.cookies.get(COOKIE, "")
        if not token or len(token) > 128:
            return None
        key = _sha(token)
        login = self.logins.get(key)
        cred = self.credential()
        if login is None:
            return None
        if time.monotonic() - login.created > LOGIN_TTL or cred is None or cred.hash != login.stamp:
            del self.logins[key]
            return None
        return key

    @web.middleware
    async def guard(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        """On /dash paths: the instructor's login, else the login form only; a student's login
        is refused everywhere here."""
        path = request.path
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return await handler(request)
        key = self.login_of(request)
        if key is None:
            student = self.site.login_of(request) if request.cookies.get(STUDENT_COOKIE) else None
            if student is not None:
                self.door.event("refused", student[1].student, via="dash", source=self.site.peer(request),
                                why="a student's login on the dashboard")
                return _html(_page("labkit: not yours", f'<main><h1>Not yours</h1><div class="card"><p class="err">'
                                   f'{html.escape(STUDENTS_NEVER)}</p><p><a href="/">Back to your hosts</a></p>'
                                   "</div></main>"), 403)
            public = (request.method in ("GET", "HEAD") and path == PREFIX) or (
                request.method == "POST" and path == PREFIX + "/login")
            if not public:
                return web.Response(status=401, text="log in first, at /dash\n")
        request["dash"] = key
        return await handler(request)

    # -- logging in and out
    def _login_page(self, message: str = "") -> str:
        err = f'<p class="err" role="alert">{html.escape(message)}</p>' if message else ""
        return _page("labkit: instructor", f"""<main><h1>labkit: the class of lab {html.escape(self.lab.name)}</h1>
<div class="card">{err}<form method="post" action="{PREFIX}/login">
<label for="user">User</label>
<input type="text" id="user" name="user" value="{INSTRUCTOR}" autocomplete="username" maxlength="64" required>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" maxlength="{MAX_PASSWORD}"
 required autofocus><button type="submit">Log in</button></form>
<p class="muted">The instructor's password is printed by <code>labkit access --instructor</code>.</p></div></main>""")

    async def login(self, request: web.Request) -> web.Response:
        peer = self.site.peer(request)
        if not self.site.same_origin(request):
            self.door.event("refused", ACCOUNT, via="dash", source=peer, why="login form from another origin")
            return _html(self._login_page("this form must be sent from this page: reload it and try again"), 403)
        form = await request.post()
        user, password = form.get("user"), form.get("password")
        if not isinstance(user, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD:
            return _html(self._login_page(WRONG), 401)
        left = self.door.throttle.locked(ACCOUNT, peer)
        if left:
            self.door.event("locked", ACCOUNT, via="dash", source=peer, seconds=round(left))
            return _html(self._login_page(WRONG), 401)
        cred = self.credential()
        ok = await asyncio.to_thread(creds.check_password, cred if user.strip() == INSTRUCTOR else None, password)
        if not ok or cred is None:
            self.door.throttle.failed(ACCOUNT, peer)
            self.door.event("login-failed", ACCOUNT, via="dash", source=peer)
            return _html(self._login_page(WRONG), 401)
        self.door.throttle.succeeded(ACCOUNT)
        for k in [k for k, v in self.logins.items() if time.monotonic() - v.created > LOGIN_TTL]:
            del self.logins[k]
        token = secrets.token_urlsafe(32)
        self.logins[_sha(token)] = Login(peer, cred.hash)
        self.door.event("login", ACCOUNT, via="dash", source=peer)
        resp = web.HTTPSeeOther(PREFIX)
        resp.set_cookie(COOKIE, token, httponly=True, secure=True, samesite="Strict", path=PREFIX)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        if not self.site.same_origin(request):
            return web.Response(status=403, text="log out from the page itself\n")
        self.logins.pop(request["dash"], None)
        self.door.event("logout", ACCOUNT, via="dash", source=self.site.peer(request))
        await self._notify()  # its streams end
        resp = web.HTTPSeeOther(PREFIX)
        resp.del_cookie(COOKIE, path=PREFIX, secure=True, httponly=True, samesite="Strict")
        return resp

    # -- the page
    async def index(self, request: web.Request) -> web.Response:
        if request["dash"] is None:
            return _html(self._login_page())
        e = html.escape
        head = (f'<link rel="stylesheet" href="{self.asset("dash.css")}">'
                f'<script src="{self.asset("dash.js")}" defer></script>')
        body = f"""<main class="dash"><header><h1>Lab {e(self.lab.name)}: the class</h1>
<div class="bar"><span id="live" class="muted">connecting…</span>
<a id="csv" href="{PREFIX}/grades.csv" download>Export the grades (CSV)</a>
<form method="post" action="{PREFIX}/logout"><button class="link" type="submit">Log out</button></form></div></header>
<div id="confirm" class="card confirm" hidden><p id="confirm-what"></p><ul id="confirm-preview"></ul>
<p id="confirm-pick" hidden><label for="confirm-checkpoint">Checkpoint</label>
<select id="confirm-checkpoint"></select></p><p id="confirm-error" class="err"></p>
<button id="confirm-yes" type="button">Confirm</button> <button id="confirm-no" type="button" class="ghost">Cancel</button>
</div>
<div class="card wide"><table id="class"><thead></thead><tbody></tbody></table>
<p class="muted">CPU: % of one core since the previous reading; memory: a container's cgroup (as
<code>docker stats</code>), a VM's QEMU process. '-': not measured (another lab server, or stopped).
Last activity: the student's last event at the door (login, terminal, SSH).</p></div></main>"""
        return _html(_page(f"labkit {self.lab.name}: the class", body, head=head))

    def asset(self, name: str) -> str:
        return PREFIX + self.site.url(name)  # /dash/static/NAME?v=DIGEST: under the cookie's path

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = self.site.files.get(name) if name in ASSETS else None
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(body=found[0], content_type=found[1])

    # -- the class, live
    async def read(self) -> None:
        """Read the class now (one reading at a time)."""
        async with self.reading:
            try:
                self.view = await asyncio.to_thread(
                    watch.class_view, self.lab, self.door.servers, sessions=live_sessions(self.door.sessions))
            except Exception as e:  # noqa: BLE001 - an engine gone for a moment: said, tried again
                log.warning("dashboard: cannot read the class: %s", e)
                self.view = {**self.view, "error": f"cannot read the class: {type(e).__name__}: {e}"[:300]}

    async def refresh(self) -> None:
        """Read the class every REFRESH s while someone watches."""
        while self.streams > 0:
            t0 = time.monotonic()
            await self.read()
            await self._notify()
            await asyncio.sleep(max(0.5, REFRESH - (time.monotonic() - t0)))
        self.refresher = None

    def grades(self) -> dict[str, Any]:
        path = last_file(self.lab.name)
        try:
            m = path.stat().st_mtime
        except OSError:
            m = 0.0
        if m != self._grades[0]:
            got = last_grades(self.lab.name) if m else {}
            self._grades = (m, {s: grade_summary(t, g) for s, (t, g) in got.items() if s in self.lab.students})
        return self._grades[1]

    def snapshot(self) -> dict[str, Any]:
        return {"lab": self.lab.name, "refresh": REFRESH, "view": self.view, "grades": self.grades(),
                "actions": {s: a.as_dict() for s, a in self.actions.items()},
                "can": {"grade": bool(self.lab.tests), "reset": True, "restore": True}}

    async def _notify(self) -> None:
        async with self.changed:
            self.version += 1
            self.changed.notify_all()

    def _newer(self, seen: int) -> Callable[[], bool]:
        return lambda: self.version != seen

    async def events(self, request: web.Request) -> web.StreamResponse:
        key = request["dash"]
        if self.streams >= MAX_STREAMS:
            return web.Response(status=503, text="too many dashboards open\n")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        self.streams += 1
        if self.refresher is None:
            self.refresher = asyncio.ensure_future(self.refresh())
        seen = -1
        try:
            while key in self.logins and self.login_of(request) == key:
                if seen != self.version:
                    seen = self.version
                    if self.view:
                        await resp.write(f"event: class\ndata: {json.dumps(self.snapshot())}\n\n".encode())
                async with self.changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait_for(self._newer(seen)), KEEPALIVE)
                if seen == self.version:
                    await resp.write(b": still here\n\n")
            await resp.write(b"event: ended\ndata: {}\n\n")
        except (ConnectionError, RuntimeError):
            pass  # the page went away
        finally:
            self.streams -= 1
        return resp

    async def api_view(self, request: web.Request) -> web.Response:
        if not self.view or self.refresher is None:
            await self.read()
        return web.json_response(self.snapshot())

    async def api_checkpoints(self, request: web.Request) -> web.Response:
        student = request.query.get("student", "")
        if student not in self.lab.students:
            return web.json_response({"error": "no such student in this lab"}, status=404)
        cps = await asyncio.to_thread(checkpoints, self.lab, [student])
        return web.json_response({"student": student, "checkpoints": [
            {"name": c.name, "created": c.created, "hosts": c.hosts, "bytes": c.bytes} for c in cps]})

    async def grades_csv(self, request: web.Request) -> web.Response:
        got = await asyncio.to_thread(last_grades, self.lab.name)
        order = [s for s in self.lab.students if s in got]
        text = csv_text([got[s][1] for s in order], {s: got[s][0] for s in order})
        return web.Response(text=text, content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="labkit-{self.lab.name}-grades.csv"'})

    # -- actions
    def _refuse(self, request: web.Request) -> web.Response | None:
        if not self.site.same_origin(request):
            self.door.event("refused", ACCOUNT, via="dash", source=self.site.peer(request),
                            why="an action from another origin")
            return web.json_response({"error": "actions are sent from the dashboard itself"}, status=403)
        return None

    async def prepare(self, request: web.Request) -> web.Response:
        no = self._refuse(request)
        if no is not None:
            return no
        try:
            body = await request.json()
            cols = self.view.get("columns") or watch.columns(self.lab)
            what, student, hosts, cp = parse_request(body, self.lab.students, cols)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        busy = self.actions.get(student)
        if busy is not None and busy.ended is None:
            return web.json_response({"error": f"{student}: {busy.label()} is still running"}, status=409)
        if what == "grade" and not self.lab.tests:
            return web.json_response({"error": "this lab file has no tests: to grade"}, status=400)
        act = Action(what, student, hosts, cp)
        try:
            preview = await asyncio.to_thread(self._preview, act)
        except LabkitError as e:
            return web.json_response({"error": e.message}, status=400)
        now = time.monotonic()
        for t in [t for t, (_, exp, _) in self.pending.items() if exp < now]:
            del self.pending[t]
        token = secrets.token_urlsafe(24)
        self.pending[token] = (request["dash"], now + CONFIRM_TTL, act)
        return web.json_response({"token": token, "what": f"{student}: {act.label()}?", "preview": preview})

    def _preview(self, act: Action) -> list[str]:
        if act.what == "reset":
            return [*reset_preview(self.lab, act.student, act.hosts or None),
                    "each made again from its image or box, and the lesson's content run on it"]
        if act.what == "restore":
            cps = {c.name: c for c in checkpoints(self.lab, [act.student])}
            cp = cps.get(act.checkpoint)
            if cp is None:
                raise LabkitError(f"{act.student} has no checkpoint {act.checkpoint}")
            made = time.strftime("%Y-%m-%d %H:%M", time.localtime(cp.created))
            return [f"{', '.join(cp.hosts)} back as they were at {made}: everything changed since is lost"]
        return [f"the lesson's tests run on {act.student}'s running hosts; nothing on them changes"]

    async def run(self, request: web.Request) -> web.Response:
        no = self._refuse(request)
        if no is not None:
            return no
        try:
            body = await request.json()
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        found = self.pending.pop(token, None) if isinstance(token, str) else None
        if found is None or found[0] != request["dash"] or found[1] < time.monotonic():
            return web.json_response({"error": "this confirmation has expired: start again"}, status=400)
        act = found[2]
        busy = self.actions.get(act.student)
        if busy is not None and busy.ended is None:
            return web.json_response({"error": f"{act.student}: {busy.label()} is still running"}, status=409)
        act.started = time.time()
        self.actions[act.student] = act
        self.door.event("dash-action", act.student, via="dash", source=self.site.peer(request), action=act.label())
        task = asyncio.ensure_future(self._act(act))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        await self._notify()
        return web.json_response({"started": act.as_dict()})

    async def _act(self, act: Action) -> None:
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()

        def progress(msg: str) -> None:
            act.progress = msg.splitlines()[0] if msg else ""
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._notify()))

        try:
            if act.what == "grade":
                act.state = "running"
                await self._notify()
                got = await asyncio.to_thread(grade, self.lab, [act.student])
                g = got[0]
                act.message = (f"done in {time.monotonic() - t0:.0f} s: {g.score:g} / {g.out_of:g}"
                               + (f" ({'; '.join(g.notes)})" if g.notes else ""))
            else:
                async with self.lab_lock:
                    act.state = "running"
                    await self._notify()
                    if act.what == "reset":
                        await asyncio.to_thread(reset, self.lab, act.student, act.hosts or None,
                                                log=progress)
                    else:
                        await asyncio.to_thread(restore, self.lab, [act.student], act.checkpoint,
                                                log=progress)
                act.message = f"done in {time.monotonic() - t0:.0f} s"
            act.state = "done"
        except LabkitError as e:
            act.state, act.message = "failed", e.message + (f" ({e.hint})" if e.hint else "")
        except Exception as e:  # noqa: BLE001 - said on the page, logged; the door goes on
            log.exception("dashboard: %s of %s failed", act.what, act.student)
            act.state, act.message = "failed", f"{type(e).__name__}: {e}"
        if self.streams:
            await self.read()  # the hosts as the action left them, with its outcome
        act.ended, act.progress = time.time(), ""
        self.door.event("dash-action-end", act.student, action=act.label(), state=act.state,
                        seconds=round(time.monotonic() - t0))
        await self._notify()

    async def close(self) -> None:
        """When the door stops: running actions are waited for a little, then left to end."""
        self.logins.clear()
        await self._notify()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=5)


def live_sessions(opened: Sequence[Open] | set[Open]) -> list[tuple[str, float]]:
    """(student, epoch of the last input) of the door's open sessions, for ``class_view``."""
    now_m, now = time.monotonic(), time.time()
    return [(o.student, now - (now_m - o.last_input)) for o in opened]


DASH = web.AppKey("dash", Dash)


def install(app: web.Application, site: Site) -> None:
    """The dashboard's routes and guard in the door's web application."""
    d = Dash(site)
    app[DASH] = d
    app.middlewares.append(d.guard)
    site.own_guard.append(PREFIX)
    app.router.add_get(PREFIX, d.index)
    app.router.add_post(PREFIX + "/login", d.login)
    app.router.add_post(PREFIX + "/logout", d.logout)
    app.router.add_get(PREFIX + "/events", d.events)
    app.router.add_get(PREFIX + "/api/view", d.api_view)
    app.router.add_get(PREFIX + "/api/checkpoints", d.api_checkpoints)
    app.router.add_post(PREFIX + "/api/prepare", d.prepare)
    app.router.add_post(PREFIX + "/api/run", d.run)
    app.router.add_get(PREFIX + "/grades.csv", d.grades_csv)
    app.router.add_get(PREFIX + "/static/{name}", d.static)
    app.on_shutdown.append(lambda _app: d.close())
