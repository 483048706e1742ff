"""Item 8 of issue 26 (the instructor's terminal): what students control is shown as text.

A student is root in their own hosts, so what labkit reads there (os-release, the hostname,
errors) is theirs. Raw, an escape sequence in it acts on the instructor's terminal: OSC 52
writes the clipboard, OSC 0 the title, a carriage return or cursor moves hide a line, a
bidirectional override reorders one. The student here plants such sequences in
/etc/os-release of their container; `labkit facts` and `labkit status` show them as visible
escapes (`\\x1b`), and never a raw control byte, nor rich markup from the student.
"""
from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from tests.labs import run

pytestmark = pytest.mark.integration

LAB = "secterm"
CONTAINER = f"labkit-{LAB}-s01-debian12"
EVIL = "Debian \u202e[bold red]OK[/] \x1b]52;c;cm0gLXJmIH4K\x07\x1b]0;pwned\x07\x1b[2K\rfine"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    f = tmp_path_factory.mktemp("secterm") / "lab.yml"
    f.write_text(yaml.safe_dump({"name": LAB, "students": ["s01"], "containers": ["debian:12"],
                                 "vm": {"enabled": False}, "provision": {"packages": []}}))
    run("up", "-f", str(f), "--no-facts", "-q")
    # the student, root in their container, rewrites what the facts read
    text = f'PRETTY_NAME="{EVIL}"\nNAME="Debian"\nID=debian\nVERSION_ID="12 {EVIL}"\n'
    subprocess.run(["docker", "exec", "-i", CONTAINER, "sh", "-c",
                    "rm -f /etc/os-release /usr/lib/os-release; cat > /etc/os-release"],
                   input=text, text=True, check=True)
    yield f
    run("down", "--lab", LAB, check=False)


@pytest.mark.parametrize("cmd", [["facts"], ["status"]])
def test_student_text_reaches_the_terminal_as_text(lab, cmd):
    # wide enough that no cell folds (a folded cell would split the escapes checked below)
    p = run(*cmd, "-f", str(lab), check=False, env={**os.environ, "COLUMNS": "1000"})
    shown = p.stdout + p.stderr
    assert p.returncode == 0, shown
    for raw in ("\x1b", "\x07", "\r", "\u202e"):
        assert raw not in shown, (cmd, repr(shown))
    if cmd == ["facts"]:
        assert "\\x1b]52;c;" in shown and "\\u202e" in shown, shown  # the student's bytes, visible
        assert "[bold red]OK[/]" in shown  # markup of the student's shown as it was written
