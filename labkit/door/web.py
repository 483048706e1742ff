"""The HTTPS page of `labkit serve` (aiohttp): students log in with their id and password, see
their hosts, and open a terminal on each in the browser (xterm.js, vendored under static/vendor;
a websocket to a PTY on the lab server running the argv labkit builds, Door.argv).

    GET  /              the login page (no login), else the student's hosts
    POST /login         student, password: a session cookie (server-side token), 303 to /
    POST /logout        ends the login and its terminals
    GET  /api/hosts     the student's hosts as JSON
    GET  /term/HOST     the terminal page of one of *their* hosts (a short name: debian12, vm)
    GET  /ws/HOST       its websocket: binary frames are terminal bytes both ways; text frames
                        JSON: {"type": "resize", "cols", "rows"} in; {"type": "hello", "id"}
                        first and {"type": "closed", "why"} last, out. ?resume=ID takes a
                        terminal back (kept 60 s after its websocket drops; the last 64 KiB of
                        output replayed) for the same student and host only.

Without a valid login only the login page answers (every other path: 401, or 303 to / for a
page); paths under a prefix with a guard of its own (the instructor's /dash, labkit.door.dash)
are left to that guard. A login is valid while the student's credentials are (``labkit down``
revokes it at once; the sweep closes their terminals). Host names are looked up among the
logged-in student's hosts only. Forms and websockets must come from this very origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import secrets
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from labkit.access.creds import MAX_PASSWORD
from labkit.door.core import Door, Host, Open, Refused, log
from labkit.door.proc import Session

COOKIE = "labkit_session"
STATIC = Path(__file__).parent / "static"
LOGIN_TTL = 12 * 3600.0  # a login lasts a school day at most
MAX_LOGINS = 10_000  # beyond: the oldest are forgotten
MAX_TERMINALS = 8  # per student, attached or waiting for a reconnect
KEEP_DETACHED = 60.0  # seconds a terminal waits for its websocket to come back
REPLAY = 64 * 1024  # output replayed on reconnect
MAX_MESSAGE = 1024 * 1024  # one websocket message (a paste); larger ones close the socket
CHUNK = 4096  # a paste reaches the PTY in pieces of this size
WRONG = "wrong student id or password (or too many tries: wait a minute)"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_TYPES = {".js": "text/javascript", ".css": "text/css"}

CSS = """
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,sans-serif;background:#f4f5f7;color:#1d2330}
main{max-width:46rem;margin:3rem auto;padding:0 1rem}h1{font-size:1.35rem;margin:0 0 1rem}
.card{background:#fff;border:1px solid #d8dce3;border-radius:8px;padding:1.25rem 1.5rem}
label{display:block;margin:.6rem 0 .2rem;font-weight:600}
input[type=text],input[type=password]{width:100%;padding:.5rem;font:inherit;border:1px solid #b9c0cc;border-radius:5px}
button{margin-top:1rem;padding:.45rem 1.1rem;font:inherit;border:0;border-radius:5px;background:#2456c8;color:#fff;cursor:pointer}
button.link{background:none;color:#2456c8;padding:0;margin:0;text-decoration:underline}
.err{color:#a3161b;font-weight:600}.muted{color:#5c6575;font-size:.9rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid #e3e6eb}
header{display:flex;justify-content:space-between;align-items:baseline}
.term-page{margin:0;background:#000;height:100vh;display:flex;flex-direction:column;overflow:hidden}
#bar{font:13px system-ui,sans-serif;color:#ccd;background:#222530;padding:.25rem .6rem;display:flex;gap:1rem}
#bar a{color:#9bb8ff}#term{flex:1;min-height:0;padding:2px}
"""


def _page(title: str, body: str, *, head: str = "", body_class: str = "") -> str:
    cls = f' class="{body_class}"' if body_class else ""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style>{head}</head>"
        f"<body{cls}>{body}</body></html>\n"
    )


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _login_page(message: str = "", student: str = "") -> str:
    err = f'<p class="err" role="alert">{html.escape(message)}</p>' if message else ""
    return _page(
        "labkit: log in",
        f"""<main><h1>labkit: your lab hosts</h1><div class="card">{err}
<form method="post" action="/login">
<label for="student">Student id</label>
<input type="text" id="student" name="student" value="{html.escape(student)}" autocomplete="username"
 autocapitalize="none" spellcheck="false" maxlength="64" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" maxlength="{MAX_PASSWORD}" required>
<button type="submit">Log in</button></form>
<p class="muted">Your student id and password are on the slip your instructor gave you.</p></div></main>""",
    )


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Login:
    student: str
    peer: str
    stamp: str  # the credential it was made with: a rotated password ends it
    created: float = field(default_factory=time.monotonic)


class Terminal:
    """One PTY opened from the page: lives on while its websocket comes and goes (60 s
    without one ends it), ends with the shell, on logout, revocation or idle time."""

    def __init__(self, site: Site, login_key: str, login: Login, host: str, peer: str, proc: Session) -> None:
        self.site, self.login_key, self.student, self.host, self.proc = site, login_key, login.student, host, proc
        self.id = secrets.token_urlsafe(18)
        self.buf = bytearray()
        self.ws: web.WebSocketResponse | None = None
        self.lock = asyncio.Lock()
        self.reaper: asyncio.TimerHandle | None = None
        self.ending: asyncio.Task[None] | None = None
        self.open = Open(self.student, host, "web", peer, self.close, stamp=login.stamp)
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        while True:
            data = await self.proc.read()
            if not data:
                break
            async with self.lock:
                self.buf += data
                if len(self.buf) > REPLAY:
                    del self.buf[: len(self.buf) - REPLAY]
                ws = self.ws
                if ws is not None and not ws.closed:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.send_bytes(data)
        code = await self.proc.wait()
        # the host may have gone with the student's access (`down --student`): say that first
        self.close(self.site.door.ended_why(self.open) or f"the shell ended (exit code {code}); reload the page for a new one")

    async def attach(self, ws: web.WebSocketResponse, resumed: bool) -> None:
        """``ws`` becomes this terminal's websocket: hello, the replay (on a resume), then live."""
        if self.reaper is not None:
            self.reaper.cancel()
            self.reaper = None
        async with self.lock:
            if self.ending is not None:  # closed meanwhile (idle, revoked): say so
                await _say_closed(ws, "this terminal has ended: reload the page for a new one")
                return
            old, self.ws = self.ws, ws
            await ws.send_json({"type": "hello", "id": self.id, "host": self.host, "resumed": resumed})
            if resumed and self.buf:
                await ws.send_bytes(bytes(self.buf))
        if old is not None and old is not ws and not old.closed:
            await _say_closed(old, "this terminal was opened in another window")

    def detach(self, ws: web.WebSocketResponse) -> None:
        if self.ws is ws:
            self.ws = None
            if self.ending is None:
                self.reaper = asyncio.get_running_loop().call_later(
                    KEEP_DETACHED, self.close, f"no connection for {KEEP_DETACHED:.0f} s"
                )

    def close(self, why: str) -> None:
        """End the terminal (the Door's close callback: revocation, idle time, the server stopping)."""
        if self.ending is None:
            self.ending = asyncio.ensure_future(self._end(why))
            self.site.ending.add(self.ending)
            self.ending.add_done_callback(self.site.ending.discard)

    async def _end(self, why: str) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
        self.site.terminals.pop(self.id, None)
        ws, self.ws = self.ws, None
        try:
            if ws is not None and not ws.closed:
                await _say_closed(ws, why)
        finally:
            if not self.pump.done():
                self.pump.cancel()
            await self.proc.close()
            self.site.door.closed(self.open, why)


async def _say_closed(ws: web.WebSocketResponse, why: str) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError, asyncio.TimeoutError):
        await ws.send_json({"type": "closed", "why": why})
        await asyncio.wait_for(ws.close(code=4000, message=why[:100].encode()), 5)


class Site:
    """The page's state: logins (by the SHA-256 of their token) and open terminals."""

    def __init__(self, door: Door) -> None:
        self.door = door
        self.logins: dict[str, Login] = {}
        self.terminals: dict[str, Terminal] = {}
        self.ending: set[asyncio.Task[None]] = set()  # terminals being closed
        self.own_guard: list[str] = []  # path prefixes guarded by their own middleware (/dash)
        self.files = {
            p.relative_to(STATIC).as_posix(): (p.read_bytes(), _TYPES[p.suffix])
            for p in sorted(STATIC.rglob("*"))
            if p.is_file() and p.suffix in _TYPES
        }

    def url(self, name: str) -> str:
        """A static file's address, with its content's digest (a new version is never a stale cache)."""
        return f"/static/{name}?v={hashlib.sha256(self.files[name][0]).hexdigest()[:12]}"

    # -- who is asking
    def login_of(self, request: web.Request) -> tuple[str, Login] | None:
        token = request.cookies.get(COOKIE, "")
        if not token or len(token) > 128:
            return None
        key = _sha(token)
        login = self.logins.get(key)
        if login is None:
            return None
        if time.monotonic() - login.created > LOGIN_TTL or self.door.stamp(login.student) != login.stamp:
            del self.logins[key]
            return None
        return key, login

    @staticmethod
    def same_origin(request: web.Request) -> bool:
        return request.headers.get("Origin") == f"https://{request.host}"

    @staticmethod
    def peer(request: web.Request) -> str:
        return request.remote or "?"

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Nothing but the login page and POST /login answers without a valid login."""
        if any(request.path == p or request.path.startswith(p + "/") for p in self.own_guard):
            return await handler(request)
        public = (request.method in ("GET", "HEAD") and request.path == "/") or (
            request.method == "POST" and request.path == "/login"
        )
        found = self.login_of(request)
        if found is None and not public:
            if request.method in ("GET", "HEAD") and request.path.startswith("/term/"):
                raise web.HTTPSeeOther("/")
            return web.Response(status=401, text="log in first, at /\n")
        request["login"] = found
        return await handler(request)

    @staticmethod
    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        h["Content-Security-Policy"] = CSP
        h["X-Content-Type-Options"] = "nosniff"
        # not no-referrer: under it browsers send "Origin: null" with the login form, which the
        # origin check must refuse; same-origin sends nothing to other sites either
        h["Referrer-Policy"] = "same-origin"
        h["Server"] = "labkit"
        h["X-Frame-Options"] = "DENY"
        h["Cross-Origin-Opener-Policy"] = "same-origin"
        h["Cross-Origin-Resource-Policy"] = "same-origin"
        if request.path.startswith("/static/") and response.status == 200:
            h["Cache-Control"] = "private, max-age=86400"
        else:
            h["Cache-Control"] = "no-store"

    # -- pages
    async def index(self, request: web.Request) -> web.Response:
        found = request["login"]
        if found is None:
            return _html(_login_page())
        student = found[1].student
        rows = "".join(self._row(h.short, h.kind, h.distro, h.state) for h in await self.door.hosts(student))
        rows = rows or '<tr><td colspan="4" class="muted">No hosts yet: ask your instructor.</td></tr>'
        body = f"""<main><header><h1>Hosts of {html.escape(student)} in lab {html.escape(self.door.lab.name)}</h1>
<form method="post" action="/logout"><button class="link" type="submit">Log out</button></form></header>
<div class="card"><table><thead><tr><th>Host</th><th>Kind</th><th>Distribution</th><th>State</th></tr></thead>
<tbody id="hosts">{rows}</tbody></table>
<p class="muted">A terminal opens in a new tab. Copy: select with the mouse, then Ctrl+Shift+C;
paste: Ctrl+Shift+V; or the right-click menu. SSH works too: the command is on your slip.</p></div></main>"""
        return _html(
            _page(f"labkit: {student}", body, head=f'<script src="{self.url("hosts.js")}" defer></script>')
        )

    @staticmethod
    def _row(short: str, kind: str, distro: str, state: str) -> str:
        e = html.escape
        name = (
            f'<a href="/term/{e(short)}" target="_blank" rel="noopener">{e(short)}</a>'
            if state == "running"
            else e(short)
        )
        return f"<tr><td>{name}</td><td>{e(kind)}</td><td>{e(distro)}</td><td>{e(state)}</td></tr>"

    async def login(self, request: web.Request) -> web.Response:
        peer = self.peer(request)
        if not self.same_origin(request):
            self.door.event("refused", "?", via="web", source=peer, why="login form from another origin")
            return _html(_login_page("this form must be sent from this page: reload it and try again"), 403)
        form = await request.post()
        student, password = form.get("student"), form.get("password")
        if (
            not isinstance(student, str)
            or not isinstance(password, str)
            or not student
            or len(student) > 64
            or len(password) > MAX_PASSWORD
        ):
            return _html(_login_page(WRONG), 401)
        student = student.strip()
        if not await self.door.check_password(student, password, peer):
            return _html(_login_page(WRONG, student if student.isprintable() else ""), 401)
        if len(self.logins) >= MAX_LOGINS:
            for k in list(self.logins)[: MAX_LOGINS // 10]:
                del self.logins[k]
        token = secrets.token_urlsafe(32)
        self.logins[_sha(token)] = Login(student, peer, self.door.stamp(student) or "")
        self.door.event("login", student, via="web", source=peer)
        resp = web.HTTPSeeOther("/")
        resp.set_cookie(COOKIE, token, httponly=True, secure=True, samesite="Strict", path="/")
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        key, login = request["login"]
        if not self.same_origin(request):
            return web.Response(status=403, text="log out from the page itself\n")
        self.logins.pop(key, None)
        for t in list(self.terminals.values()):
            if t.login_key == key:
                t.close("you logged out")
        self.door.event("logout", login.student, via="web", source=self.peer(request))
        resp = web.HTTPSeeOther("/")
        resp.del_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        return resp

    async def api_hosts(self, request: web.Request) -> web.Response:
        student = request["login"][1].student
        hosts = [
            {
                "short": h.short,
                "name": h.name,
                "kind": h.kind,
                "distro": h.distro,
                "state": h.state,
                "terminal": f"/term/{h.short}" if h.state == "running" else None,
            }
            for h in await self.door.hosts(student)
        ]
        return web.json_response({"lab": self.door.lab.name, "student": student, "hosts": hosts})

    async def _host(self, request: web.Request) -> tuple[str, Host]:
        """(student, host) of a /term or /ws request; Refused when not theirs (or not running)."""
        student = request["login"][1].student
        short = request.match_info["host"]
        if len(short) > 64:
            raise Refused("no such host of yours: the name is too long")
        return student, await self.door.host(student, short)

    def _refused(self, request: web.Request, e: Refused) -> web.Response:
        student = request["login"][1].student
        self.door.event("refused", student, via="web", source=self.peer(request), why=str(e)[:200])
        body = (
            f'<main><h1>Not found</h1><div class="card"><p class="err">{html.escape(str(e))}</p>'
            f'<p><a href="/">Back to your hosts</a></p></div></main>'
        )
        return _html(_page("labkit: not found", body), 404)

    async def term(self, request: web.Request) -> web.Response:
        try:
            student, host = await self._host(request)
        except Refused as no:
            return self._refused(request, no)
        e, short = html.escape, host.short
        head = f'<link rel="stylesheet" href="{self.url("vendor/xterm.css")}">' + "".join(
            f'<script src="{self.url(js)}" defer></script>'
            for js in ("vendor/xterm.js", "vendor/addon-fit.js", "term.js")
        )
        body = (
            f'<div id="bar"><span>{e(student)} · <b>{e(short)}</b></span>'
            f'<span id="status">connecting…</span><a href="/" target="_blank" rel="noopener">your hosts</a></div>'
            f'<div id="term" data-host="{e(short)}"></div>'
        )
        return _html(_page(f"{short} · labkit", body, head=head, body_class="term-page"))

    async def static(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["path"])
        if found is None:
            raise web.HTTPNotFound()
        return web.Response(body=found[0], content_type=found[1])

    # -- the terminal's websocket
    async def ws(self, request: web.Request) -> web.StreamResponse:
        key, login = request["login"]
        peer = self.peer(request)
        if not self.same_origin(request):
            self.door.event(
                "refused", login.student, via="web", source=peer, why="websocket from another origin"
            )
            return web.Response(status=403, text="a terminal opens from this site's own page only\n")
        try:
            student, host = await self._host(request)
        except Refused as e:
            self.door.event("refused", login.student, via="web", source=peer, why=str(e)[:200])
            return web.Response(status=404, text=str(e) + "\n")
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=30, compress=False)
        await ws.prepare(request)
        term = self.terminals.get(request.query.get("resume", ""))
        if term is not None and (
            term.student != student or term.host != host.short or term.ending is not None
        ):
            term = None  # another student's, another host's, or ended: a new shell
        if term is not None:
            self.door.event("resume", student, host=host.short, via="web", source=peer)
            await term.attach(ws, resumed=True)
        else:
            if sum(t.student == student for t in self.terminals.values()) >= MAX_TERMINALS:
                await _say_closed(ws, f"you have {MAX_TERMINALS} terminals open already: close one first")
                return ws
            cols, rows = _size(request.query.get("cols"), request.query.get("rows")) or (80, 24)
            try:
                proc = await Session.start(
                    self.door.argv(host, None, True), tty=True, term="xterm-256color", cols=cols, rows=rows
                )
            except OSError as e:
                log.error("cannot open %s for %s: %s", host.name, student, e)
                await _say_closed(
                    ws, f"{host.short} cannot be opened now ({type(e).__name__}): tell your instructor"
                )
                return ws
            term = Terminal(self, key, login, host.short, peer, proc)
            self.terminals[term.id] = term
            self.door.opened(term.open)
            await term.attach(ws, resumed=False)
        try:
            await self._pump_in(ws, term)
        finally:
            term.detach(ws)
        return ws

    async def _pump_in(self, ws: web.WebSocketResponse, term: Terminal) -> None:
        async for msg in ws:
            if term.ending is not None:
                break
            if msg.type == WSMsgType.BINARY:
                term.open.touch()
                data: bytes = msg.data
                for i in range(0, len(data), CHUNK):
                    await term.proc.write(data[i : i + CHUNK])
            elif msg.type == WSMsgType.TEXT:
                try:
                    m = json.loads(msg.data)
                except ValueError:
                    continue
                size = (
                    _size(m.get("cols"), m.get("rows"))
                    if isinstance(m, dict) and m.get("type") == "resize"
                    else None
                )
                if size is not None:
                    term.proc.resize(*size)
            elif msg.type == WSMsgType.ERROR:
                log.info("websocket of %s dropped: %s", term.student, ws.exception())
                break

    async def close_all(self) -> None:
        for t in list(self.terminals.values()):
            t.close("the door is closing (labkit serve stopped)")
        if self.ending:
            await asyncio.wait(list(self.ending), timeout=10)


def _size(cols: Any, rows: Any) -> tuple[int, int] | None:
    """Columns and rows from the client, clamped; None when either is not a number."""
    if isinstance(cols, bool) or isinstance(rows, bool):
        return None
    try:
        c, r = int(cols), int(rows)
    except (TypeError, ValueError, OverflowError):
        return None
    return max(2, min(c, 500)), max(1, min(r, 200))


SITE = web.AppKey("site", Site)
Extension = Callable[[web.Application, Site], None]


def app(door: Door, extend: Sequence[Extension] = ()) -> web.Application:
    """The page; each of ``extend`` adds its routes (the instructor's dashboard)."""
    site = Site(door)
    a = web.Application(client_max_size=64 * 1024, middlewares=[site.guard])
    a[SITE] = site
    a.on_response_prepare.append(site.headers)
    a.router.add_get("/", site.index)
    a.router.add_post("/login", site.login)
    a.router.add_post("/logout", site.logout)
    a.router.add_get("/api/hosts", site.api_hosts)
    a.router.add_get("/term/{host}", site.term)
    a.router.add_get("/ws/{host}", site.ws)
    a.router.add_get("/static/{path:.+}", site.static)
    for ext in extend:
        ext(a, site)
    return a


async def start(door: Door, bind: str, port: int, tls: ssl.SSLContext,
                extend: Sequence[Extension] = ()) -> web.AppRunner:
    runner = web.AppRunner(app(door, extend), access_log=None, handler_cancellation=True, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, bind or None, port, ssl_context=tls).start()
    return runner


async def stop(runner: web.AppRunner) -> None:
    await runner.app[SITE].close_all()
    await runner.cleanup()
