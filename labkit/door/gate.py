"""The SSH gate of `labkit serve` (asyncssh): students log in as their id with their password
or key; no Unix account and no change to the server's sshd.

    ssh -p 2222 s01@server                   a menu of s01's hosts (the first without a terminal)
    ssh -p 2222 s01@server debian12          a login shell there, as the lab's student user
    ssh -p 2222 s01@server debian12 CMD      CMD run there (sh -c); its exit code comes back
    sftp -P 2222 s01+debian12@server         files of that host (scp uses the same)

Nothing else is served: no port, agent or X11 forwarding, no other subsystem, no shell on the
server. Each session is one process labkit builds (labkit.door.core.Door.argv).
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncssh

from labkit.door.core import SFTP_COMMAND, Door, Host, Open, Refused, log
from labkit.door.proc import Session

MAX_COMMAND = 64 * 1024  # longer commands are refused (a huge paste changes nothing)
BANNER = "labkit: students of this lab log in with their id and the password on their slip\r\n"


class _GateServer(asyncssh.SSHServer):
    def __init__(self, door: Door) -> None:
        self.door = door
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"

    def begin_auth(self, username: str) -> bool:
        student, _ = self.door.student_of(username)
        keys = self.door.keys(student)
        if keys and self.conn is not None:
            self.conn.set_authorized_keys(asyncssh.import_authorized_keys("\n".join(keys) + "\n"))
        return True  # always ask: an unknown id is refused as a wrong password is

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def kbdint_auth_supported(self) -> bool:
        return False

    async def validate_password(self, username: str, password: str) -> bool:
        student, _ = self.door.student_of(username)
        return await self.door.check_password(student, password, self.peer)

    def auth_completed(self) -> None:
        if self.conn is not None:
            self.door.event("login", self.door.student_of(self.conn.get_extra_info("username") or "")[0],
                            via="ssh", source=self.peer)

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        assert self.conn is not None
        return _GateSession(self.door, self.conn, self.peer)


class _GateSession(asyncssh.SSHServerSession[bytes]):
    def __init__(self, door: Door, conn: asyncssh.SSHServerConnection, peer: str) -> None:
        self.door = door
        self.conn = conn
        self.peer = peer
        self.student, self.pinned = door.student_of(conn.get_extra_info("username") or "")
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.term: str | None = None
        self.size = (80, 24)
        self.command: str | None = None
        self.sftp = False
        self.proc: Session | None = None
        self.open: Open | None = None
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.writable = asyncio.Event()
        self.writable.set()
        self.task: asyncio.Task[None] | None = None

    # -- requests
    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self.term = term_type if term_type.isprintable() and len(term_type) < 64 else "xterm"
        if term_size[0] and term_size[1]:
            self.size = (term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self.sftp = subsystem == "sftp"
        return self.sftp

    def session_started(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    # -- data
    def data_received(self, data: bytes, datatype: int | None) -> None:
        if self.open is not None:
            self.open.touch()
        self.inbox.put_nowait(data)

    def eof_received(self) -> bool:
        self.inbox.put_nowait(None)
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.size = (width, height)
        if self.proc is not None:
            self.proc.resize(width, height)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        self.inbox.put_nowait(None)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    # -- the session
    def _say(self, text: str) -> None:
        assert self.chan is not None
        nl = "\r\n" if self.term else "\n"
        with contextlib.suppress(Exception):
            self.chan.write_stderr(("labkit: " + text + nl).encode())

    async def _target(self) -> tuple[Host, str | None]:
        """The host and command this session asks for; Refused with the reason otherwise."""
        mine = await self.door.hosts(self.student)
        if self.sftp:
            return await self.door.host(self.student, self.pinned or _first(mine)), SFTP_COMMAND
        if self.command is not None:
            if len(self.command) > MAX_COMMAND:
                raise Refused(f"the command is longer than {MAX_COMMAND} characters")
            if "\0" in self.command:
                raise Refused("the command holds a NUL character")
            if self.pinned:
                return await self.door.host(self.student, self.pinned), self.command
            word, _, rest = self.command.strip().partition(" ")
            if word in ("scp", "rsync", "sftp", "git-upload-pack", "git-receive-pack"):
                raise Refused(f"{word} needs the host in the user name: {self.student}+HOST@... "
                              f"(e.g. {self.student}+{_first(mine)})")
            return await self.door.host(self.student, word), (rest.strip() or None)
        if self.pinned:
            return await self.door.host(self.student, self.pinned), None
        if not self.term or len(mine) <= 1:
            return await self.door.host(self.student, _first(mine)), None
        return await self.door.host(self.student, await self._menu(mine)), None

    async def _menu(self, mine: list[Host]) -> str:
        assert self.chan is not None
        lines = [f"Hosts of {self.student} in lab {self.door.lab.name}:"]
        lines += [f"  {i}) {h.short:<16} {h.kind:<10} {h.distro:<14} {h.state}" for i, h in enumerate(mine, 1)]
        lines.append(f"Choose a number or a name [1], or q to leave (next time: ssh ... {self.student}@... HOST): ")
        self.chan.write("\r\n".join(lines).encode())
        typed = b""
        while True:
            data = await self.inbox.get()
            if data is None:
                raise Refused("no host chosen")
            for b in data:
                if b in (13, 10):
                    self.chan.write(b"\r\n")
                    choice = typed.decode(errors="replace").strip() or "1"
                    if choice == "q":
                        raise Refused("bye")
                    if choice.isdigit() and 1 <= int(choice) <= len(mine):
                        return mine[int(choice) - 1].short
                    return choice
                if b in (3, 4):
                    raise Refused("no host chosen")
                if b in (8, 127):
                    if typed:
                        typed = typed[:-1]
                        self.chan.write(b"\b \b")
                elif 32 <= b < 127 and len(typed) < 64:
                    typed += bytes([b])
                    self.chan.write(bytes([b]))

    async def _run(self) -> None:
        assert self.chan is not None
        code = 1
        try:
            try:
                host, command = await self._target()
            except Refused as e:
                self.door.event("refused", self.student, via="ssh", source=self.peer, why=str(e)[:200])
                self._say(str(e))
                return
            tty = bool(self.term) and not self.sftp
            self.proc = await Session.start(self.door.argv(host, command, tty), tty=tty, term=self.term,
                                            cols=self.size[0], rows=self.size[1])
            self.open = Open(self.student, host.short, "sftp" if self.sftp else "ssh", self.peer, self._close)
            self.door.opened(self.open)
            code = await self._pump()
            why = self.door.ended_why(self.open)
            if why is not None:  # the host went with the access (`down --student`): say why
                self._say(why)
                self.door.closed(self.open, why)
            if code < 0:  # ended by a signal: as a shell reports it (SSH exit statuses are 0-255)
                code = 128 - code
        except asyncio.CancelledError:
            pass
        except Exception as e:  # noqa: BLE001 - a session's failure is said to the student, logged, and ends it alone
            log.exception("session of %s failed", self.student)
            self._say(f"the session failed: {type(e).__name__}")
        finally:
            if self.proc is not None:
                await self.proc.close()
            if self.open is not None:
                self.door.closed(self.open)
            with contextlib.suppress(Exception):
                self.chan.exit(code)

    async def _pump(self) -> int:
        assert self.chan is not None and self.proc is not None
        proc, chan = self.proc, self.chan

        async def to_host() -> None:
            while True:
                data = await self.inbox.get()
                if data is None:
                    await proc.write_eof()
                    return
                await proc.write(data)

        async def out(read: Any, write: Any) -> None:
            while True:
                data = await read()
                if not data:
                    return
                await self.writable.wait()
                write(data)

        tasks = [asyncio.ensure_future(to_host()), asyncio.ensure_future(out(proc.read, chan.write))]
        if proc.master is None:
            tasks.append(asyncio.ensure_future(out(proc.read_stderr, chan.write_stderr)))
        try:
            await asyncio.gather(*tasks[1:])
            return await proc.wait()
        finally:
            for t in tasks:
                t.cancel()

    def _close(self, why: str) -> None:
        self._say(why)
        if self.task is not None:
            self.task.cancel()
        self.conn.close()


def _first(mine: list[Host]) -> str:
    running = [h.short for h in mine if h.state == "running"]
    if not running:
        raise Refused("none of your hosts is running yet: ask your instructor")
    return running[0]


async def start(door: Door, bind: str, port: int, host_key: str) -> asyncssh.SSHAcceptor:
    """Listen on ``bind``:``port``; returns the listening server (close() to stop)."""
    return await asyncssh.create_server(
        lambda: _GateServer(door), bind or None, port, server_host_keys=[host_key],
        agent_forwarding=False, x11_forwarding=False, allow_scp=False, allow_pty=True,
        login_timeout=30, keepalive_interval=30, keepalive_count_max=4,
        encoding=None, line_editor=False, server_version="labkit",
        # no compression, no weak ciphers: asyncssh's defaults otherwise
    )

