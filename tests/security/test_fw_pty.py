"""Issue 26, item 8 (TIOCSTI): a rootless user's Podman never holds the instructor's terminal.

`labkit shell` into a rootless Podman container runs Podman as that user (`runuser -u USER
-- podman exec -it ...`). Without a terminal of its own, every process of that session runs
with the instructor's (root's) terminal as its controlling terminal, and the user decides
what some of them are - Podman reads the user's own `~/.config/containers/containers.conf`,
which names the `conmon` it runs. Such a process can push input into that terminal with the
TIOCSTI ioctl, which root's shell reads once the session ends: the user types commands as
root. Now `runuser --pty` gives the session a terminal of its own (and labkit's own reads of
a rootless store run with no terminal and in a session of their own).

The real check: a rootless user (made here) whose containers.conf names its own `conmon`, a
script that opens its controlling terminal, pushes a command into it with TIOCSTI and writes
down which terminal that was (its device number), then runs the real conmon. `labkit shell`'s command line for
a rootless container is run on a terminal standing for the instructor's.
"""
from __future__ import annotations

import fcntl
import os
import pwd
import select
import shutil
import subprocess
import termios
import time
from pathlib import Path

import pytest

from labkit.engines import podman as podman_engine
from labkit.engines.base import HostRow
from tests.labs import podman, podman_user

USER = "lkfwpty"
CT = "lkfwpty-shell"
IMAGE = "labkit/busybox:1.35"


def row(user: str) -> HostRow:
    return HostRow(name=CT, role="container", student="a", distro="busybox", state="running", image=IMAGE,
                   spec=f"podman://{CT}", server="localhost", local=True, engine="podman", user=user)


def test_rootless_exec_gets_a_terminal_of_its_own(monkeypatch):
    """The command lines (no engine): `runuser --pty` for a terminal session or whenever the
    caller's standard input is a terminal; rootful Podman needs no runuser at all."""
    monkeypatch.setattr(podman_engine, "runtime_dir", lambda user: "/run/user/65534")
    r = row("nobody")
    shell = podman_engine.exec_argv(r, ["/bin/sh", "-l"], user="student", interactive=True, terminal=True)
    assert shell[:4] == ["runuser", "--pty", "-u", "nobody"] and shell[shell.index("exec") + 1] == "-it"
    piped = podman_engine.exec_argv(r, ["id"], interactive=False, terminal=True)  # `labkit shell h -- cmd` on a tty
    assert piped[:2] == ["runuser", "--pty"] and piped[piped.index("exec") + 1] == "-i"
    plain = podman_engine.exec_argv(r, ["id"], interactive=False, terminal=False)  # facts, verify: no terminal
    assert plain[:3] == ["runuser", "-u", "nobody"]
    assert podman_engine.exec_argv(row(""), ["sh"], interactive=True, terminal=True)[:3] == ["podman", "exec", "-it"]


EVIL_CONMON = """#!/bin/sh
# the rootless user's own conmon: push a command into the controlling terminal, then go on
python3 - >> "$HOME/tiocsti.log" 2>&1 <<'EOF'
import fcntl, os, termios
try:
    fd = os.open("/dev/tty", os.O_RDWR)
    for c in b"echo typed-by-the-rootless-user\\n":
        fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))
    # which terminal that is: the controlling terminal's device number (/proc/self/stat's tty_nr)
    print("injected", open("/proc/self/stat").read().rsplit(")", 1)[1].split()[4])
except OSError as e:
    print("refused", e)
EOF
exec /usr/bin/conmon "$@"
"""


@pytest.mark.integration
def test_the_rootless_user_cannot_type_into_the_instructors_terminal():
    assert shutil.which("conmon") == "/usr/bin/conmon"
    with podman_user(USER, 420000) as user:
        pw = pwd.getpwnam(user)
        save = subprocess.Popen(["docker", "image", "save", IMAGE], stdout=subprocess.PIPE)
        load = subprocess.run(["runuser", "-u", user, "--", "env", f"HOME={pw.pw_dir}",
                               f"XDG_RUNTIME_DIR={podman_engine.runtime_dir(user)}", "podman", "load"],
                              stdin=save.stdout, capture_output=True, text=True, cwd="/")
        assert save.wait() == 0 and load.returncode == 0, load.stderr
        p = podman("run", "-d", "--name", CT, "--network", "none", IMAGE, "sleep", "600", user=user)
        assert p.returncode == 0, p.stderr
        # the user's own Podman configuration: its conmon
        conf = Path(pw.pw_dir) / ".config" / "containers"
        conf.mkdir(parents=True, exist_ok=True)
        evil = Path(pw.pw_dir) / "conmon"
        evil.write_text(EVIL_CONMON)
        evil.chmod(0o755)
        (conf / "containers.conf").write_text(f'[engine]\nconmon_path = ["{evil}"]\n')
        subprocess.run(["chown", "-R", f"{user}:", str(Path(pw.pw_dir) / ".config"), str(evil)], check=True)
        log = Path(pw.pw_dir) / "tiocsti.log"
        # the instructor's terminal, as `labkit shell` runs on it: stdin a terminal, interactive
        master, slave = os.openpty()
        argv = podman_engine.exec_argv(row(user), ["sh", "-c", "sleep 2; echo done"], interactive=True)
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0), cwd="/")
        seen = b""
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 4096)
        assert proc.wait(10) == 0, seen
        mine = os.fstat(slave).st_rdev
        # what root's shell would read next from its terminal
        os.set_blocking(slave, False)
        try:
            pending = os.read(slave, 4096)
        except BlockingIOError:
            pending = b""
        os.close(slave)
        os.close(master)
        notes = log.read_text() if log.exists() else ""
        podman("rm", "-f", CT, user=user)
    injected = [int(ln.split()[1]) for ln in notes.splitlines() if ln.startswith("injected ")]
    assert injected, f"the user's conmon did not run: {notes!r} {seen!r}"  # the attack was carried out
    assert mine not in injected, (f"the rootless user typed into the instructor's terminal: {notes!r}; "
                                  f"root's shell would read {pending!r}")
    assert b"typed-by-the-rootless-user" not in pending
