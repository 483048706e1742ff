"""(g) The student door: N (40) students' login shells opened at once and typing, on loopback.

A lab of N students x one Debian 12 container (Docker, no VM). Per path, N sessions opened at
once from one asyncio process, then each types a key every 100 ms for ~15 s (staggered) and waits
for its echo (`x`, then DEL: the line stays empty). Paths: ``raw`` `docker exec -it -u student
-w /home/student NAME /bin/sh -l` on a PTY each; ``sshd`` a plain OpenSSH sshd (root with a key,
ForceCommand maps `s07` to that `docker exec`), client asyncssh; ``gate`` `labkit serve`'s SSH
gate (asyncssh, s07 + password, `debian12`); ``web`` its page (POST /login, websocket /ws/debian12).
Measured: open time (spawn or connect -> the prompt `$ `), keystroke round trip, failed sessions,
CPU over the typing window (% of one core) and RSS of the server side (sshd's tree; a fresh
`labkit serve` per path), of the `docker exec` clients, dockerd and the bench's client itself.

    .venv/bin/python bench/door.py [N] [SECONDS]     # alone (prints JSON); run.py --only g
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

LABKIT = str(Path(sys.executable).parent / "labkit")
LAB = "bench-door"
PROMPT = b"$ "
KEYS = ((b"x", b"x"), (b"\x7f", b"\x08 \x08"))  # (key, its echo)
TICK = os.sysconf("SC_CLK_TCK")


def sh(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p


def pct_ms(xs: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of seconds ``xs``, in milliseconds."""
    return round(sorted(xs)[max(0, math.ceil(q / 100 * len(xs)) - 1)] * 1000, 2) if xs else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"exited {proc.returncode} before listening on {port}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s: {log.read_text()[-2000:]}")


# -- processes, from /proc
def procs() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, comm, CPU seconds) of every process."""
    out = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                raw = (p / "stat").read_text()
                comm, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()
                out[int(p.name)] = (int(rest[1]), comm, (int(rest[11]) + int(rest[12])) / TICK)
    return out


def tree(all_: dict, root: int) -> set[int]:
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += [c for c, v in all_.items() if v[0] == pid and c not in found]
    return found


def status_kib(pid: int, field: str) -> int:
    with contextlib.suppress(OSError, StopIteration):
        return int(next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if ln.startswith(field + ":")).split()[1])
    return 0


class Meter:
    """CPU seconds and memory of groups of processes over a window: ``server`` (a process tree
    without its `docker` clients, or one process), ``docker_clients`` (the `docker exec` CLIs
    under ``client_root``), ``dockerd``, ``bench_client`` (this process). The groups are taken
    once all sessions are open (``freeze``); only a one-process server is sampled while typing."""

    def __init__(self, server: int | None, server_tree: bool, client_root: int) -> None:
        self.server, self.server_tree, self.client_root = server, server_tree, client_root
        self.dockerd = next((pid for pid, v in procs().items() if v[1] == "dockerd"), None)
        self.g: dict[str, set[int]] = {}
        self.peak_rss: dict[str, int] = {}  # KiB

    def freeze(self) -> None:
        a = procs()
        under = tree(a, self.client_root)
        self.g = {"docker_clients": {p for p in under if a[p][1] == "docker"},
                  "bench_client": {os.getpid()}, "dockerd": {self.dockerd} if self.dockerd else set()}
        if self.server:
            self.g["server"] = {p for p in under if a[p][1] != "docker"} if self.server_tree else {self.server}

    def cpu(self) -> dict[str, float]:
        return {k: sum(a[p][2] for p in pids if p in a) for a in (procs(),) for k, pids in self.g.items()}

    def rss(self, only_server: bool = False) -> dict[str, int]:
        now = {k: sum(status_kib(p, "VmRSS") for p in pids) for k, pids in self.g.items()
               if not only_server or (k == "server" and len(pids) == 1)}
        for k, v in now.items():
            self.peak_rss[k] = max(self.peak_rss.get(k, 0), v)
        return now


# -- a session's terminal, whatever carries it
class Term:
    def __init__(self) -> None:
        self.buf, self.ev, self.notes = bytearray(), asyncio.Event(), []  # notes: the web's text frames
        self.send = self.close = None  # async (bytes) -> None, async () -> None

    def feed(self, data: bytes) -> None:
        self.buf += data
        self.ev.set()

    async def expect(self, pat: bytes, timeout: float) -> None:
        end = time.monotonic() + timeout
        while (i := self.buf.find(pat)) < 0:
            self.ev.clear()
            await asyncio.wait_for(self.ev.wait(), max(0.0, end - time.monotonic()))
        del self.buf[:i + len(pat)]


async def open_raw(i: int, ctx: dict) -> Term:
    t = Term()
    master, slave = os.openpty()
    proc = await asyncio.create_subprocess_exec(
        "docker", "exec", "-it", "-u", "student", "-w", "/home/student", f"labkit-{LAB}-s{i:02d}-debian12", "/bin/sh", "-l",
        stdin=slave, stdout=slave, stderr=slave, env=dict(os.environ, TERM="xterm"), start_new_session=True)
    os.close(slave)
    os.set_blocking(master, False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        with contextlib.suppress(BlockingIOError):
            try:
                t.feed(os.read(master, 65536) or b"")
            except OSError:  # EIO: the shell is gone
                loop.remove_reader(master)

    loop.add_reader(master, readable)

    async def send(b: bytes) -> None:
        os.write(master, b)

    async def close() -> None:
        with contextlib.suppress(OSError):
            os.write(master, b"exit\r")
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        loop.remove_reader(master)
        os.close(master)

    t.send, t.close = send, close
    return t


async def open_ssh(i: int, ctx: dict) -> Term:
    import asyncssh

    t = Term()
    sid = f"s{i:02d}"
    kw, command = (({"username": "root", "client_keys": [ctx["key"]], "password": None}, sid) if ctx["path"] == "sshd"
                   else ({"username": sid, "password": ctx["passwords"][sid], "client_keys": None}, "debian12"))
    conn = await asyncssh.connect("127.0.0.1", ctx["port"], known_hosts=None, agent_path=None, **kw)
    proc = await conn.create_process(command, term_type="xterm", term_size=(80, 24), encoding=None)

    async def pump() -> None:
        while data := await proc.stdout.read(65536):
            t.feed(data)

    task = asyncio.ensure_future(pump())

    async def send(b: bytes) -> None:
        proc.stdin.write(b)

    async def close() -> None:
        with contextlib.suppress(Exception):
            proc.stdin.write(b"exit\r")
            await asyncio.wait_for(proc.wait_closed(), 5)
        task.cancel()
        conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.wait_closed(), 5)

    t.send, t.close = send, close
    return t


async def open_web(i: int, ctx: dict) -> Term:
    import aiohttp

    t, base = Term(), f"https://127.0.0.1:{ctx['port']}"
    s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))
    try:
        r = await s.post(base + "/login", allow_redirects=False, headers={"Origin": base},
                         data={"student": f"s{i:02d}", "password": ctx["passwords"][f"s{i:02d}"]})
        cookie = r.cookies.get("labkit_session")
        if r.status != 303 or cookie is None:
            raise RuntimeError(f"login: HTTP {r.status}")
        ws = await s.ws_connect(base + "/ws/debian12?cols=80&rows=24", origin=base,
                                headers={"Cookie": f"labkit_session={cookie.value}"})
    except BaseException:
        await s.close()
        raise

    async def pump() -> None:
        async for m in ws:
            if m.type == aiohttp.WSMsgType.BINARY:
                t.feed(m.data)
            elif m.type == aiohttp.WSMsgType.TEXT:
                t.notes.append(json.loads(m.data).get("type"))

    task = asyncio.ensure_future(pump())

    async def send(b: bytes) -> None:
        await ws.send_bytes(b)

    async def close() -> None:
        with contextlib.suppress(Exception):
            await ws.send_bytes(b"exit\r")
            await asyncio.sleep(0.2)
            await ws.close()
        task.cancel()
        await s.close()

    t.send, t.close = send, close
    return t


async def drive(opener, ctx: dict, n: int, seconds: float, meter: Meter) -> dict:
    """Open n sessions at once, then all type for ``seconds``; times, failures, CPU, memory."""
    errors: list[str] = []

    async def one(i: int) -> tuple[float, Term] | None:
        t0 = time.monotonic()
        try:
            t = await asyncio.wait_for(opener(i, ctx), 120)
            await t.expect(PROMPT, 120 - (time.monotonic() - t0))
            return time.monotonic() - t0, t
        except Exception as e:  # noqa: BLE001 - a failed session is counted and reported, never hidden
            errors.append(f"s{i:02d} open: {type(e).__name__}: {e}"[:300])
            return None

    t_open = time.monotonic()
    opened = [x for x in await asyncio.gather(*(one(i) for i in range(1, n + 1))) if x]
    all_open = time.monotonic() - t_open
    rtts: list[float] = []
    failed_typing = 0
    meter.freeze()
    rss_open = meter.rss()

    async def typing(k: int, t: Term) -> None:
        nonlocal failed_typing
        await asyncio.sleep(k * 0.1 / max(1, len(opened)))
        nxt = time.monotonic()
        end, j = nxt + seconds, 0
        while time.monotonic() < end:
            key, echo = KEYS[j % 2]
            j += 1
            t0 = time.monotonic()
            try:
                await t.send(key)
                await t.expect(echo, 10)
            except Exception as e:  # noqa: BLE001
                failed_typing += 1
                errors.append(f"typing: {type(e).__name__}: {e} (frames: {t.notes})"[:300])
                return
            rtts.append(time.monotonic() - t0)
            nxt += 0.1
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    async def sampler() -> None:
        while True:
            meter.rss(only_server=True)
            await asyncio.sleep(0.5)

    cpu0, w0 = meter.cpu(), time.monotonic()
    samp = asyncio.ensure_future(sampler())
    await asyncio.gather(*(typing(k, t) for k, (_, t) in enumerate(opened)))
    window = time.monotonic() - w0
    cpu1 = meter.cpu()
    samp.cancel()
    meter.rss()
    await asyncio.gather(*(t.close() for _, t in opened), return_exceptions=True)
    opens = [o for o, _ in opened]
    return {"sessions": n, "failed_sessions": n - len(opened) + failed_typing, "errors": errors[:10],
            "open_ms": {"p50": pct_ms(opens, 50), "p95": pct_ms(opens, 95), "max": pct_ms(opens, 100)},
            "all_open_seconds": round(all_open, 2),
            "keystroke_ms": {"p50": pct_ms(rtts, 50), "p95": pct_ms(rtts, 95), "max": pct_ms(rtts, 100),
                             "mean": round(statistics.mean(rtts) * 1000, 2) if rtts else None, "count": len(rtts)},
            "typing_window_seconds": round(window, 1),
            "cpu_percent_of_one_core": {k: round((cpu1[k] - cpu0.get(k, 0)) / window * 100, 1) for k in cpu1},
            "rss_mib_all_open": {k: round(v / 1024, 1) for k, v in rss_open.items()},
            "rss_mib_peak": {k: round(v / 1024, 1) for k, v in meter.peak_rss.items()}}


def run_path(name: str, opener, ctx: dict, n: int, seconds: float, server: int | None, server_tree: bool,
             client_root: int) -> dict:
    load = [round(x, 2) for x in os.getloadavg()]
    out = asyncio.run(drive(opener, {**ctx, "path": name}, n, seconds, Meter(server, server_tree, client_root)))
    out["loadavg_before_after"] = [load, [round(x, 2) for x in os.getloadavg()]]  # the machine is shared
    if server and not server_tree:
        out["server_vmhwm_mib"] = round(status_kib(server, "VmHWM") / 1024, 1)
    print(f"(g) {name}: open p50 {out['open_ms']['p50']} ms, keystroke p50 {out['keystroke_ms']['p50']} ms "
          f"p95 {out['keystroke_ms']['p95']} ms, failed {out['failed_sessions']}", flush=True)
    return out


def start_sshd(d: Path, students: list[str]) -> tuple[subprocess.Popen, int, str]:
    """A plain OpenSSH sshd on loopback that maps the asked student to their container."""
    for k in ("hostkey", "id"):
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / k)])
    (d / "authorized_keys").write_text((d / "id.pub").read_text())
    docker = shutil.which("docker") or "docker"
    (d / "door.sh").write_text(f"""#!/bin/sh
# ForceCommand: `ssh root@server s07` -> a login shell in s07's debian12, as student
case "$SSH_ORIGINAL_COMMAND" in
  {'|'.join(students)}) ;;
  *) echo "usage: ssh root@server STUDENT (one of: {' '.join(students)})" >&2; exit 1 ;;
esac
exec {docker} exec -it -u student -w /home/student "labkit-{LAB}-$SSH_ORIGINAL_COMMAND-debian12" /bin/sh -l
""")
    (d / "door.sh").chmod(0o755)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nAuthorizedKeysFile {d}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"StrictModes no\nUsePAM no\nPidFile none\nMaxStartups 200\nForceCommand {d}/door.sh\n"
        "AllowTcpForwarding no\nX11Forwarding no\nPermitUserRC no\nPrintMotd no\nPrintLastLog no\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    log = d / "sshd.log"
    p = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                         stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    wait_port(port, p, log)
    return p, port, str(d / "id")


def start_serve(d: Path, lab: Path, tag: str) -> tuple[subprocess.Popen, int, int]:
    ssh_port, https_port = free_port(), free_port()
    log = d / f"serve-{tag}.log"
    p = subprocess.Popen([LABKIT, "serve", "-f", str(lab), "--bind", "127.0.0.1", "--ssh-port", str(ssh_port),
                          "--https-port", str(https_port)], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_port(ssh_port, p, log)
    wait_port(https_port, p, log)
    return p, ssh_port, https_port


def stop(p: subprocess.Popen, sig: int = signal.SIGTERM) -> int | None:
    if p.poll() is None:
        p.send_signal(sig)
    try:
        return p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def bench_door(d: Path, res: dict, n: int = 40, seconds: float = 15.0) -> None:
    """(g): raw docker exec, a plain sshd, labkit's SSH gate and its web page, n students at once."""
    students = [f"s{i:02d}" for i in range(1, n + 1)]
    lab = d / f"{LAB}.yml"
    lab.write_text(json.dumps({"name": LAB, "students": students, "containers": ["debian:12"],
                               "vm": {"enabled": False}, "provision": {"packages": []}}))
    out: dict = {"students": n, "typing_seconds": seconds, "key_every_ms": 100, "paths": {}}
    res["g_door"] = out
    sh([LABKIT, "down", "-f", str(lab)], check=False)
    try:
        t0 = time.monotonic()
        sh([LABKIT, "up", "-f", str(lab), "--no-facts"])
        out["labkit_up_seconds"] = round(time.monotonic() - t0, 1)
        handout = json.loads(sh([LABKIT, "access", "-f", str(lab), "--format", "json"]).stdout)
        passwords = {s["student"]: s.get("password") for s in handout["students"]}
        if not all(passwords.values()):
            handout = json.loads(sh([LABKIT, "access", "-f", str(lab), "--format", "json", "--rotate"]).stdout)
            passwords = {s["student"]: s["password"] for s in handout["students"]}
        paths = out["paths"]
        paths["raw"] = run_path("raw", open_raw, {}, n, seconds, None, False, os.getpid())
        sshd, port, key = start_sshd(d, students)
        try:
            paths["sshd"] = run_path("sshd", open_ssh, {"port": port, "key": key}, n, seconds, sshd.pid, True, sshd.pid)
        finally:
            stop(sshd)
        for name, opener in (("gate", open_ssh), ("web", open_web)):
            serve, ssh_port, https_port = start_serve(d, lab, name)  # a fresh one each: its own CPU and peak
            try:
                ctx = {"port": ssh_port if name == "gate" else https_port, "passwords": passwords}
                paths[name] = run_path(name, opener, ctx, n, seconds, serve.pid, False, serve.pid)
            finally:
                rc = stop(serve)
            paths[name]["serve_exit_on_sigterm"] = rc
        out["ratios"] = ratios(paths)
    finally:
        sh([LABKIT, "down", "-f", str(lab)], check=False)


def ratios(paths: dict) -> dict:
    def r(a: str, b: str, what: str, q: str) -> float | None:
        x, y = paths.get(a, {}).get(what, {}).get(q), paths.get(b, {}).get(what, {}).get(q)
        return round(x / y, 2) if x is not None and y else None

    return {f"{a}/{b}": {f"{w}_{q}": r(a, b, w, q) for w in ("open_ms", "keystroke_ms") for q in ("p50", "p95")}
            for a, b in (("gate", "raw"), ("web", "raw"), ("gate", "sshd"), ("web", "sshd"), ("sshd", "raw"))}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="labkit-bench-door-") as tmp:
        bench_door(Path(tmp), out := {}, *(f(a) for f, a in zip((int, float), sys.argv[1:], strict=False)))
    print(json.dumps(out, indent=2))
