"""What the SSH gate and the web page share: who a student is (password or key, throttled),
which hosts are theirs, the argv that opens one, the open sessions (closed on revocation and
when idle) and the session log.

The one rule of the door: a student's request names a host by its short name (``debian12``,
``vm``), which is looked up among *that student's* running hosts of *this* lab on the served
lab servers; anything else is refused with a message, never passed on. The argv is built by
labkit (labkit.api.query.host_argv), never from the student's text: their command is one
argument of ``sh -c`` inside their own host.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from labkit import names
from labkit.access import creds
from labkit.api.discover import engines, hosts
from labkit.api.query import host_argv
from labkit.engines.base import HostRow
from labkit.lab.spec import Lab
from labkit.paths import lab_dir
from labkit.servers.base import Server

log = logging.getLogger("labkit.serve")

# sftp-server where Debian, Red Hat and Alpine put it: the first found in the host serves
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server")
SFTP_COMMAND = ("for s in " + " ".join(SFTP_SERVERS) + "; do [ -x \"$s\" ] && exec \"$s\"; done; "
                "echo 'this host has no SFTP server (openssh-sftp-server)' >&2; exit 127")


class Refused(Exception):
    """A student's request the door does not serve: the message is for the student."""


@dataclass
class Throttle:
    """Failed logins per account and per source address: after ``per_account`` (or
    ``per_source``) failures within ``window`` seconds, that account (or address) is refused
    without a check for ``lock`` seconds, doubled with each further failure up to ``max_lock``."""

    per_account: int = 5
    per_source: int = 20
    window: float = 300.0
    lock: float = 30.0
    max_lock: float = 900.0
    _fails: dict[str, list[float]] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)

    def locked(self, account: str, source: str, now: float | None = None) -> float:
        """Seconds left of a lock on ``account`` or ``source`` (0: none)."""
        now = time.monotonic() if now is None else now
        return max(0.0, self._until.get("a:" + account, 0) - now, self._until.get("s:" + source, 0) - now)

    def failed(self, account: str, source: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key, limit in (("a:" + account, self.per_account), ("s:" + source, self.per_source)):
            recent = [t for t in self._fails.get(key, []) if now - t < self.window] + [now]
            self._fails[key] = recent
            if len(recent) >= limit:
                self._until[key] = now + min(self.max_lock, self.lock * 2 ** (len(recent) - limit))
        if len(self._fails) > 100_000:  # many sources: forget the oldest, keep the locks
            for k in list(self._fails)[:50_000]:
                del self._fails[k]

    def succeeded(self, account: str) -> None:
        self._fails.pop("a:" + account, None)


@dataclass(frozen=True)
class Host:
    short: str    # what the student types: debian12, vm
    name: str     # labkit-<lab>-<student>-debian12
    kind: str     # container or vm
    distro: str
    state: str    # running, exited, ...
    engine: str
    row: HostRow


@dataclass(eq=False)
class Open:
    """One open session: closed by ``close`` (revocation, idle time, the server stopping)."""

    student: str
    host: str
    via: str
    peer: str
    close: Callable[[str], None]
    last_input: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.time)
    stamp: str | None = None  # the student's credential when it opened (Door.opened): another one ends it

    def touch(self) -> None:
        self.last_input = time.monotonic()


class Door:
    """The lab's students placed on ``servers`` (names; None: every server of the lab)."""

    def __init__(self, lab: Lab, servers: Sequence[str] | None = None, throttle: Throttle | None = None) -> None:
        self.lab = lab
        self.only = set(servers) if servers else None
        self.throttle = throttle or Throttle()
        self.sessions: set[Open] = set()
        self._stack = ExitStack()
        self._servers: list[Server] = []
        self._entries: dict[str, creds.Entry] = {}
        self._mtime = -1.0
        self._rows: list[HostRow] = []
        self._rows_at = 0.0
        self._lock = asyncio.Lock()
        self.log_file = creds.access_dir(lab.name) / "sessions.log"

    # -- life
    def open(self) -> None:
        self._servers = self._stack.enter_context(engines(self.lab.name))
        self.reload()

    def close(self) -> None:
        self._stack.close()

    @property
    def servers(self) -> list[Server]:
        """The lab servers this door serves (their engines reachable while it is open)."""
        return [sv for sv in self._servers if self.only is None or sv.name in self.only]

    # -- who
    def reload(self) -> None:
        """Re-read the credentials when they changed (a stat otherwise)."""
        m = creds.store_mtime(self.lab.name)
        if m != self._mtime:
            self._entries = creds.entries(self.lab.name) if m else {}
            self._mtime = m

    def stamp(self, student: str) -> str | None:
        """The student's current credential (None: none): a login made with another has ended."""
        self.reload()
        e = self._entries.get(student) if student in self.lab.students else None
        return e.hash if e else None

    def students(self) -> list[str]:
        return [s for s in self.lab.students if s in self._entries]

    def student_of(self, username: str) -> tuple[str, str | None]:
        """``s01`` or ``s01+debian12`` (the host for sftp and scp): (student, host)."""
        sid, _, host = username.partition("+")
        return sid, (host or None)

    async def check_password(self, student: str, password: str, source: str) -> bool:
        self.reload()
        left = self.throttle.locked(student, source)
        if left:
            self.event("locked", student, source=source, seconds=round(left))
            return False
        entry = self._entries.get(student) if student in self.lab.students else None
        ok = await asyncio.to_thread(creds.check_password, entry, password)
        if ok:
            self.throttle.succeeded(student)
        else:
            self.throttle.failed(student, source)
            self.event("login-failed", student, source=source, how="password")
        return ok

    def keys(self, student: str) -> tuple[str, ...]:
        self.reload()
        e = self._entries.get(student)
        return e.keys if e and student in self.lab.students else ()

    def known(self, student: str) -> bool:
        self.reload()
        return student in self._entries and student in self.lab.students

    # -- where
    async def hosts(self, student: str) -> list[Host]:
        """The student's hosts of this lab on the served servers (running or not)."""
        async with self._lock:
            if time.monotonic() - self._rows_at > 2.0:
                self._rows = await asyncio.to_thread(hosts, self.lab.name, None, self._servers)
                self._rows_at = time.monotonic()
            rows = self._rows
        prefix = names.lab_prefix(self.lab.name, student)
        out = [Host(r.name.removeprefix(prefix), r.name, r.role, r.distro, r.state, r.engine, r)
               for r in rows if r.student == student and r.name.startswith(prefix)
               and (self.only is None or r.server in self.only)]
        order = {c.short: i for i, c in enumerate(self.lab.containers)}  # as the lab file lists them, the VM last
        return sorted(out, key=lambda h: (h.kind != "container", order.get(h.short, len(order)), h.short))

    async def host(self, student: str, short: str) -> Host:
        mine = await self.hosts(student)
        for h in mine:
            if h.short == short:
                if h.state != "running":
                    raise Refused(f"{short} is {h.state}: ask your instructor to bring it back")
                return h
        if not mine and self.only is not None:
            elsewhere = sorted({r.server for r in self._rows if r.student == student})
            if elsewhere:
                raise Refused(f"your hosts are on lab server {', '.join(elsewhere)}, which this door does not serve: "
                              "use the address on your slip")
        listed = ", ".join(h.short for h in mine) or "none running yet"
        shown = short if short.isprintable() and len(short) <= 64 else repr(short[:64])
        raise Refused(f"no host '{shown}' of yours; your hosts: {listed}")

    def argv(self, h: Host, command: str | None, tty: bool) -> list[str]:
        return host_argv(self.lab, h.row, ["sh", "-c", command] if command is not None else None, tty=tty,
                         servers=self._servers)

    # -- sessions
    def opened(self, s: Open) -> None:
        if s.stamp is None:
            s.stamp = self.stamp(s.student)
        self.sessions.add(s)
        self.event("open", s.student, host=s.host, via=s.via, source=s.peer)

    def closed(self, s: Open, why: str = "") -> None:
        if s in self.sessions:
            self.sessions.discard(s)
            self.event("close", s.student, host=s.host, via=s.via, source=s.peer,
                       seconds=round(time.time() - s.started), **({"why": why} if why else {}))

    def ended_why(self, s: Open) -> str | None:
        """Why ``s`` may not stay open: its student's access was revoked, or the password it
        was opened with changed (``--rotate``); None when it may. Also asked when a session
        ends by itself, as it does when `down --student` takes the host along."""
        current = self.stamp(s.student)
        if current is None:
            return "your access was revoked"
        if current != s.stamp:
            return "your password was changed: log in again with the new one"
        return None

    def sweep(self) -> None:
        """Close the sessions of revoked students, and those idle past the lab's time."""
        now = time.monotonic()
        for s in list(self.sessions):
            why = self.ended_why(s)
            if why is None and now - s.last_input > self.lab.access.idle_timeout:
                why = f"closed after {self.lab.access.idle_timeout} s without input"
            if why is not None:
                s.close(why)

    def event(self, what: str, student: str, **info: Any) -> None:
        """One line of the session log (who, when, which host, from where; never what was typed)."""
        shown = student if student.isprintable() and len(student) <= 64 else repr(student[:64])
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": what, "student": shown, **info}
        line = json.dumps(rec, sort_keys=False)
        log.info("%s", line)
        try:
            with open(self.log_file, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            log.warning("cannot write %s: %s", self.log_file, e)


def session_log(lab: str) -> list[dict[str, Any]]:
    """The lab's session log, oldest first."""
    p = lab_dir(lab) / "access" / "sessions.log"
    try:
        return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return []
