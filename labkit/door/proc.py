"""A student's session process on the lab server: the argv that opens their host (``docker
exec``, ``lxc-attach``, ``ssh`` to the VM), run on a pseudo-terminal of its own when the
client asked for one (resizes reach it; Ctrl-C is a byte the host's terminal turns into
SIGINT), else on pipes (stdin, stdout, stderr apart; the exit code returned)."""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Sequence

# the environment of the process that opens a host: nothing of the server's own but a PATH
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "HOME", "USER", "LOGNAME", "DOCKER_HOST", "CONTAINER_HOST")


def _env(term: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
    if term:
        env["TERM"] = term
    return env


def set_size(fd: int, cols: int, rows: int) -> None:
    cols, rows = max(1, min(int(cols), 1000)), max(1, min(int(rows), 1000))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Session:
    """One process opening a host. ``read()`` gives output (b"" at the end), ``write()`` sends
    input, ``resize()`` sets the terminal size, ``close()`` ends it (SIGHUP, then SIGKILL)."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int | None) -> None:
        self.proc = proc
        self.master = master
        self._out: asyncio.Queue[bytes] = asyncio.Queue()
        if master is not None:
            os.set_blocking(master, False)
            asyncio.get_running_loop().add_reader(master, self._readable)

    @classmethod
    async def start(cls, argv: Sequence[str], *, tty: bool, term: str | None = None,
                    cols: int = 80, rows: int = 24) -> Session:
        if tty:
            master, slave = os.openpty()
            set_size(slave, cols, rows)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=slave, stdout=slave, stderr=slave, env=_env(term or "xterm-256color"),
                    start_new_session=True, preexec_fn=_controlling_tty)
            finally:
                os.close(slave)
            return cls(proc, master)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=_env(term), start_new_session=True)
        return cls(proc, None)

    def _readable(self) -> None:
        assert self.master is not None
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the other side of the terminal is closed
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self._out.put_nowait(data)

    async def read(self) -> bytes:
        """Output of the terminal (tty) or of stdout (pipes); b"" when it has ended."""
        if self.master is not None:
            return await self._out.get()
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(65536)

    async def read_stderr(self) -> bytes:
        if self.proc.stderr is None:
            return b""
        return await self.proc.stderr.read(65536)

    async def write(self, data: bytes) -> None:
        """Send input; waits while the host reads slower than the student types or pastes."""
        if self.master is not None:
            view = memoryview(data)
            while view and self.master is not None:
                try:
                    view = view[os.write(self.master, view):]
                except BlockingIOError:
                    await asyncio.sleep(0.005)
                except OSError:
                    return
        elif self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write(data)
            with contextlib.suppress(ConnectionError):
                await self.proc.stdin.drain()

    async def write_eof(self) -> None:
        if self.master is not None:
            await self.write(b"\x04")
        elif self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()

    def resize(self, cols: int, rows: int) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                set_size(self.master, cols, rows)

    async def wait(self) -> int:
        return await self.proc.wait()

    async def close(self) -> None:
        """End the process and its group (SIGHUP as a terminal hang-up would, SIGKILL after 2 s)."""
        if self.proc.returncode is None:
            for sig, wait in ((signal.SIGHUP, 2.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, sig)
                try:
                    await asyncio.wait_for(self.proc.wait(), wait)
                    break
                except TimeoutError:
                    continue
        if self.master is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self.master)
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None


def _controlling_tty() -> None:
    """In the child (a new session): make its terminal the controlling one, as login does."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
