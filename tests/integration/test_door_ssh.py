"""The SSH gate of `labkit serve`, with real clients: OpenSSH's ssh, scp and sftp (password
through SSH_ASKPASS, or the student's key) and asyncssh as a client library, against a real
lab on Docker (the door lab: s01..s04) and the default lab's VM.

A student reaches their own hosts and nothing else: every other student's host, by short
name, full name or user name, another lab's hosts, the server itself (a shell, a command,
port/agent forwarding) are each refused with a message; wrong passwords are throttled;
`down --student` revokes at once and closes the open session; idle sessions are closed.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import asyncssh
import pytest

from labkit.paths import lab_dir
from tests.conftest import labkit_cmd
from tests.labs import openssh, serving

from .conftest import docker, run

pytestmark = pytest.mark.integration


def connect(door: dict, student: str, password: str | None = None, **kw):
    return asyncssh.connect("127.0.0.1", door["ssh_port"], username=student,
                            password=password or door["passwords"][student], known_hosts=None,
                            client_keys=None, agent_path=None, **kw)


def arun(coro):
    return asyncio.run(coro)


def test_handout_and_gate_agree(door_lab):
    """The handout names each student's server, SSH command, web address and a password;
    the gate shows the host key whose fingerprint the handout prints."""
    h = door_lab["handout"]
    assert [s["student"] for s in h["students"]] == ["s01", "s02", "s03", "s04"]
    for s in h["students"]:
        assert s["ssh"] == f"ssh -p 2222 {s['student']}@{s['address']}" and s["web"].startswith("https://")
        assert len(s["password"]) == 19 and s["hosts"] == ["debian12", "busybox"]
    assert h["students"][0]["key"] is True and h["students"][1]["key"] is False

    async def fingerprint():
        async with connect(door_lab, "s01") as c:
            return c.get_server_host_key().get_fingerprint("sha256")
    assert arun(fingerprint()) == h["ssh_host_key"]
    # a second handout shows no password again: given out once
    again = json.loads(run("access", "-f", door_lab["lab"], "--format", "json").stdout)
    assert all(s["password"].startswith("(given out") for s in again["students"])


def test_shell_and_command_in_own_container(door_lab):
    pw = door_lab["passwords"]["s01"]
    p = openssh(door_lab, "s01", "debian12", "hostname; id -un; uname -r", password=pw)
    assert p.returncode == 0, p.stderr
    name, user, release = p.stdout.split()
    assert name == docker("inspect", "-f", "{{.Config.Hostname}}", "labkit-door-s01-debian12").strip()
    assert user == "student" and release == os.uname().release
    assert openssh(door_lab, "s01", "debian12", "exit 42", password=pw).returncode == 42
    # stdin reaches the host; the command line arrives as typed ($, quotes, ;)
    p = openssh(door_lab, "s01", "busybox", "cat; echo '$HOME' \"$0\"", password=pw, stdin="from-stdin\n")
    assert p.returncode == 0 and p.stdout.splitlines() == ["from-stdin", "$HOME sh"], p.stdout


def test_login_shell_with_a_terminal_resize_and_ctrl_c(door_lab):
    async def session():
        async with connect(door_lab, "s01") as c:
            p = await c.create_process("debian12", term_type="xterm", term_size=(100, 30))

            async def upto(text: str) -> str:  # the shell's output, not the echo of what was typed
                return await asyncio.wait_for(p.stdout.readuntil(text), 60)
            p.stdin.write("id -un; tty\n")
            out = await upto("/dev/pts/")
            p.change_terminal_size(132, 43)
            await asyncio.sleep(1.0)  # the resize travels as its own SSH message, before the next line
            p.stdin.write("stty size; echo sleeping-$((1+1)); sleep 60\n")
            out += await upto("sleeping-2")
            p.stdin.write("\x03")  # Ctrl-C: a byte the host's terminal turns into SIGINT for sleep
            p.stdin.write("echo after-$((40+2)); exit 3\n")
            out += await asyncio.wait_for(p.stdout.read(), 30)
            return out, p.exit_status
    out, code = arun(session())
    assert "student" in out and "/dev/pts/" in out, out
    assert "43 132" in out and "after-42" in out, out
    assert code == 3


def test_menu_without_a_host(door_lab):
    async def session():
        async with connect(door_lab, "s01") as c:
            p = await c.create_process(term_type="xterm", term_size=(80, 24))
            p.stdin.write("2\r")  # the menu lists debian12 then busybox: 2 is busybox
            await asyncio.sleep(2)
            p.stdin.write("cat /etc/hostname; busybox | head -1; exit\n")
            return await asyncio.wait_for(p.stdout.read(), 30)
    out = arun(session())
    assert "1) debian12" in out and "2) busybox" in out and "BusyBox v" in out, out


def test_key_login(door_lab):
    p = openssh(door_lab, "s01", "debian12", "id -un", key=door_lab["key"])
    assert p.returncode == 0 and p.stdout.strip() == "student", p.stderr
    # the same key is nobody else's
    p = openssh(door_lab, "s02", "debian12", "id -un", key=door_lab["key"])
    assert p.returncode == 255 and "Permission denied" in p.stderr


def test_scp_and_sftp_both_ways(door_lab, tmp_path):
    pw = door_lab["passwords"]["s01"]
    src = tmp_path / "notes.txt"
    src.write_text("lab notes\n" * 1000)
    p = openssh(door_lab, "", str(src), "s01+debian12@127.0.0.1:notes.txt", password=pw, tool="scp")
    assert p.returncode == 0, p.stderr
    got = docker("exec", "-u", "student", "labkit-door-s01-debian12", "sh", "-c", "cat ~/notes.txt; stat -c %U ~/notes.txt")
    assert got == src.read_text() + "student\n"
    p = openssh(door_lab, "", "s01+debian12@127.0.0.1:/etc/os-release", str(tmp_path / "os"), password=pw, tool="scp")
    assert p.returncode == 0 and 'ID=debian' in (tmp_path / "os").read_text()
    p = openssh(door_lab, "", "s01+debian12@127.0.0.1", password=pw, tool="sftp",
                stdin=f"put {src} viasftp.txt\nls -1\n")
    assert p.returncode == 0 and "viasftp.txt" in p.stdout, p.stderr
    # a host without an SFTP server says so
    p = openssh(door_lab, "", "s01+busybox@127.0.0.1", password=pw, tool="sftp", stdin="ls\n")
    assert p.returncode != 0 and "no SFTP server" in p.stderr


def other_hosts(door: dict) -> list[str]:
    """Every host s01 must not reach: s02..s04's (short and full names), the default lab's,
    and names that try to climb out."""
    names = [ln.split()[0] for ln in docker("ps", "-a", "--format", "{{.Names}}").splitlines()
             if ln.startswith("labkit-") and not ln.startswith("labkit-door-s01-")]
    assert any(n.startswith("labkit-door-s02-") for n in names)
    return names + ["s02-debian12", "../s02/debian12", "labkit-door-s01-debian12/../s02-debian12", "vm",
                    "localhost", "127.0.0.1", "*", "$(id)", "debian12;id", "debian 12"]


def test_other_students_hosts_and_the_server_are_refused(door_lab):
    pw = door_lab["passwords"]["s01"]

    async def attempts():
        out = {}
        async with connect(door_lab, "s01") as c:
            for name in other_hosts(door_lab):
                r = await c.run(f"{name} id -un", check=False)
                out[name] = (r.exit_status, r.stdout, r.stderr)
            for cmd in ("sh", "bash -i", "/bin/sh -c id", "docker ps", "sudo -i", "labkit status", "exit 0"):
                r = await c.run(cmd, check=False)
                out[cmd] = (r.exit_status, r.stdout, r.stderr)
        return out
    for what, (code, stdout, stderr) in arun(attempts()).items():
        assert code != 0 and stdout == "" and "no host" in stderr, (what, code, stdout, stderr)
    # the user-name form with another student's host: s01's password is not s02's
    p = openssh(door_lab, "s02+debian12", "id -un", password=pw)
    assert p.returncode == 255 and "Permission denied" in p.stderr
    p = openssh(door_lab, "s01+labkit-door-s02-debian12", "id -un", password=pw)
    assert p.returncode != 0 and "no host" in p.stderr and p.stdout == ""


def test_forwarding_is_refused(door_lab):
    async def attempts():
        async with connect(door_lab, "s01") as c:
            with pytest.raises(asyncssh.ChannelOpenError):
                await c.open_connection("127.0.0.1", door_lab["ssh_port"])  # -L to the server itself
            with pytest.raises(asyncssh.ChannelOpenError):
                await c.open_connection("172.17.0.1", 22)
            with pytest.raises(asyncssh.ChannelListenError):
                await c.forward_remote_port("", 0, "127.0.0.1", 22)  # -R
            with pytest.raises(asyncssh.ChannelOpenError):
                await c.open_unix_connection("/var/run/docker.sock")
            r = await c.run("debian12 echo \"agent=$SSH_AUTH_SOCK display=$DISPLAY\"", check=False)
            return r.stdout
    assert arun(attempts()).strip() == "agent= display="
    # OpenSSH's own -L: the forward is refused by the gate
    p = openssh(door_lab, "s01", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22", "debian12", "true",
                password=door_lab["passwords"]["s01"])
    assert p.returncode == 255 and "forwarding failed" in p.stderr.lower(), p.stderr


def test_bad_input_gets_a_message_and_changes_nothing(door_lab):
    async def attempts():
        async with connect(door_lab, "s01") as c:
            huge = await c.run("debian12 echo " + "x" * 70_000, check=False)
            weird = await c.run("\x1b[2J\x07 id", check=False)
            return huge, weird
    huge, weird = arun(attempts())
    assert huge.exit_status == 1 and "longer than" in huge.stderr
    assert weird.exit_status == 1 and "no host" in weird.stderr and "\x1b" not in weird.stderr
    assert docker("inspect", "-f", "{{.State.Running}}", "labkit-door-s01-debian12").strip() == "true"


def test_idle_session_is_closed(door_lab):
    async def session():
        async with connect(door_lab, "s01") as c:
            p = await c.create_process("debian12", term_type="xterm")
            t0 = time.monotonic()
            out = await asyncio.wait_for(p.stdout.read(), 60)
            err = await p.stderr.read()
            return time.monotonic() - t0, out + err
    secs, said = arun(session())
    assert 20 <= secs < 35 and "without input" in said, (secs, said)


def test_session_log_says_who_where_and_never_what_was_typed(door_lab):
    secret = "typed-secret-4242"
    p = openssh(door_lab, "s01", "debian12", f"echo {secret} >/dev/null", password=door_lab["passwords"]["s01"])
    assert p.returncode == 0
    entries = [json.loads(ln) for ln in (lab_dir("door") / "access" / "sessions.log").read_text().splitlines()]
    opened = [e for e in entries if e["event"] == "open" and e["host"] == "debian12" and e["student"] == "s01"]
    assert opened and {"time", "source", "via"} <= set(opened[-1]) and opened[-1]["source"] == "127.0.0.1"
    everything = json.dumps(entries) + Path(door_lab["log"]).read_text()
    assert secret not in everything and door_lab["passwords"]["s01"] not in everything


def in_session_while(door: dict, student: str, *labkit_args: str) -> tuple[str, bytes]:
    """A login shell of ``student`` on debian12 that says ``in-session``, open while
    `labkit ARGS` runs: what the session showed until it was closed, and the command's stdout."""
    async def session():
        async with connect(door, student) as c:
            p = await c.create_process("debian12", term_type="xterm")
            p.stdin.write("echo in-\"\"session\n")  # its output, not the echo of the line, says in-session
            said = await asyncio.wait_for(p.stdout.readuntil("in-session"), 60)
            cmd = await asyncio.create_subprocess_exec(*labkit_cmd(), *labkit_args, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.DEVNULL)
            out = await asyncio.wait_for(p.stdout.read(), 120)
            err = await p.stderr.read()
            return said + out + err, (await cmd.communicate())[0]
    return arun(session())


def test_rotate_ends_the_old_password_and_its_sessions(door_lab):
    said, printed = in_session_while(door_lab, "s03", "access", "-f", door_lab["lab"], "--student", "s03",
                                     "--rotate", "--format", "json")
    handout = json.loads(printed)
    assert "in-session" in said and "password was changed" in said, said
    new = handout["students"][0]["password"]
    assert handout["students"][0]["student"] == "s03" and new != door_lab["passwords"]["s03"]
    with pytest.raises(asyncssh.PermissionDenied):
        arun(_login(door_lab, "s03"))
    arun(_login(door_lab, "s03", new))
    door_lab["passwords"]["s03"] = new


def test_down_student_revokes_at_once_and_closes_the_open_session(door_lab):
    said, _ = in_session_while(door_lab, "s03", "down", "-f", door_lab["lab"], "--student", "s03")
    assert "in-session" in said and "revoked" in said, said
    with pytest.raises(asyncssh.PermissionDenied):
        arun(_login(door_lab, "s03"))
    assert openssh(door_lab, "s03", "debian12", "true", password=door_lab["passwords"]["s03"]).returncode == 255
    # the others are untouched
    assert openssh(door_lab, "s02", "debian12", "id -un", password=door_lab["passwords"]["s02"]).stdout == "student\n"


async def _login(door: dict, student: str, password: str | None = None) -> None:
    async with connect(door, student, password):
        pass


def test_wrong_passwords_are_refused_and_throttled(door_lab):
    right = door_lab["passwords"]["s04"]
    t0 = time.monotonic()
    for _ in range(5):
        with pytest.raises(asyncssh.PermissionDenied):
            arun(_login(door_lab, "s04", "wrong-" + right))
    # locked now: even the right password is refused, without a check, for a while
    with pytest.raises(asyncssh.PermissionDenied):
        arun(_login(door_lab, "s04", right))
    assert time.monotonic() - t0 < 30
    log = Path(door_lab["log"]).read_text()
    assert '"event": "locked", "student": "s04"' in log
    # an unknown student is refused the same way (no hint that the id does not exist)
    with pytest.raises(asyncssh.PermissionDenied):
        arun(_login(door_lab, "nobody", right))
    # another account from the same address still gets in: the lock is per account first
    arun(_login(door_lab, "s02"))


def test_a_command_in_the_vm_returns_its_exit_code(default_lab, tmp_path):
    """The default lab's VM through the gate (s01's, same argv as `labkit shell vm`)."""
    handout = json.loads(run("access", "--lab", "demo", "--rotate", "--format", "json").stdout)
    pw = handout["students"][0]["password"]
    with serving(["--lab", "demo"], tmp_path / "serve.log") as srv:
        door = {**srv, "passwords": {"s01": pw}}
        p = openssh(door, "s01", "vm", "uname -r; id -un; exit 7", password=pw)
        assert p.returncode == 7, p.stderr
        release, user = p.stdout.split()
        assert user == "student" and release != os.uname().release  # the VM's own kernel

        async def shell():
            async with connect(door, "s01") as c:
                proc = await c.create_process("vm", term_type="xterm", term_size=(90, 25))
                proc.stdin.write("stty size; exit 0\n")
                return await asyncio.wait_for(proc.stdout.read(), 120)
        assert "25 90" in arun(shell())
