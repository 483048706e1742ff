"""The door's pure parts: credentials (argon2 hashes, shown once, revoked), the throttle,
the handout's formats, and the lab file's access: section (roster keys, idle time)."""
from __future__ import annotations

import csv
import io
import json
import stat

import pytest

from labkit.access import creds, handout
from labkit.door.core import Throttle
from labkit.errors import SpecError
from labkit.lab import spec
from tests.conftest import child_holding

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx5dWtfdGVzdF9rZXlfZm9yX3MwMV9fX19fX19fX19f s01@laptop"


def test_passwords_are_hashed_shown_once_and_revoked(labkit_home):
    new = creds.ensure("c", ["s01", "s02"], {"s01": KEY})
    assert new == ["s01", "s02"]
    store = (labkit_home / "labs/c/access/credentials.json")
    text = store.read_text()
    pending = creds.take_pending("c", ["s01", "s02"])
    assert set(pending) == {"s01", "s02"} and all(len(p) == 19 for p in pending.values())
    assert not any(p in text for p in pending.values()) and "$argon2id$" in text  # hashes only
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
    assert creds.take_pending("c", ["s01"]) == {}  # shown once
    e = creds.entries("c")
    assert creds.check_password(e["s01"], pending["s01"]) and not creds.check_password(e["s01"], pending["s02"])
    assert not creds.check_password(None, pending["s01"]) and not creds.check_password(e["s01"], "x" * 5000)
    assert e["s01"].keys == (KEY,) and e["s02"].keys == () and e["s01"].shown
    # up again: nothing new, the same hash
    assert creds.ensure("c", ["s01", "s02"], {"s01": KEY}) == [] and creds.entries("c")["s01"].hash == e["s01"].hash
    # rotate: a new password, the old one void
    assert creds.ensure("c", ["s01"], rotate=True) == ["s01"]
    assert not creds.check_password(creds.entries("c")["s01"], pending["s01"])
    assert creds.revoke("c", ["s01"]) == ["s01"] and set(creds.entries("c")) == {"s02"}
    assert creds.take_pending("c", ["s01"]) == {}  # a revoked student's new password is gone too
    assert creds.revoke("c") == ["s02"] and creds.entries("c") == {}


def test_throttle_per_account_then_per_source():
    t = Throttle(per_account=3, per_source=5, window=60, lock=10, max_lock=40)
    for i in range(2):
        t.failed("s01", "10.0.0.1", now=i)
    assert t.locked("s01", "10.0.0.1", now=2) == 0
    t.failed("s01", "10.0.0.1", now=2)
    assert t.locked("s01", "10.0.0.9", now=3) == 9  # the account, from anywhere
    assert t.locked("s02", "10.0.0.1", now=3) == 0  # another account from the same place: not yet
    t.failed("s01", "10.0.0.1", now=13)  # each further failure doubles the lock
    assert t.locked("s01", "10.0.0.1", now=13) == 20
    for i in range(5):
        t.failed(f"x{i}", "10.0.0.2", now=100)
    assert t.locked("anyone", "10.0.0.2", now=100) > 0  # spraying accounts from one address
    t.succeeded("s01")
    assert t.locked("s01", "10.0.0.1", now=500) == 0


def test_handout_formats_escape_and_carry_fingerprints():
    slips = [handout.Slip("s01", "lab1", "lab1.example", 2222, 8443, ("debian12", "vm"), "abcd-efgh-jkmn-pqrs", True),
             handout.Slip("s02", "lab2", "fd00::2", 22, 443, (), handout.GIVEN, False)]
    assert slips[0].ssh == "ssh -p 2222 s01@lab1.example" and slips[0].web == "https://lab1.example:8443/"
    assert slips[1].ssh == "ssh s02@fd00::2" and slips[1].web == "https://[fd00::2]/"
    rows = list(csv.DictReader(io.StringIO(handout.csv_text(slips, "SHA256:abc", "AA:BB"))))
    assert rows[0]["password"] == "abcd-efgh-jkmn-pqrs" and rows[0]["ssh_key"] == "yes"
    assert rows[1]["tls_certificate_sha256"] == "AA:BB"
    page = handout.html_page("<lab>", slips, "SHA256:abc", "AA:BB")
    assert page.count("class='slip'") == 2 and "&lt;lab&gt;" in page and "<lab>" not in page
    assert "page-break-inside: avoid" in page
    assert json.dumps(handout.as_dicts(slips))


def test_access_section_and_roster_keys(tmp_path):
    (tmp_path / "class.csv").write_text(f"id,name,ssh_key\nalice,Alice,{KEY}\nbob,Bob,\n")
    (tmp_path / "lab.yml").write_text("name: c\nroster: class.csv\ncontainers: [busybox]\n"
                                      "access: {idle_timeout: 30m}\n")
    lab = spec.load_lab(tmp_path / "lab.yml")
    assert lab.students == ["alice", "bob"] and lab.access.ssh_keys == {"alice": KEY}
    assert lab.access.idle_timeout == 1800 and lab.access.ssh_port == 2222
    (tmp_path / "bad.yml").write_text("name: c\nstudents: [a]\ncontainers: [busybox]\n"
                                      "access: {ssh_keys: {b: 'ssh-ed25519 AAAA'}}\n")
    with pytest.raises(SpecError, match="access.ssh_keys: b not among the students"):
        spec.load_lab(tmp_path / "bad.yml")
    (tmp_path / "bad2.yml").write_text("name: c\nstudents: [a]\ncontainers: [busybox]\n"
                                       "access: {ssh_keys: {a: 'not a key'}}\n")
    with pytest.raises(SpecError, match="ssh_keys"):
        spec.load_lab(tmp_path / "bad2.yml")
    (tmp_path / "bad3.yml").write_text("name: c\nstudents: [a]\ncontainers: [busybox]\naccess: {idle_timeout: soon}\n")
    with pytest.raises(SpecError, match="not a time"):
        spec.load_lab(tmp_path / "bad3.yml")


def _row(name: str, student: str, server: str = "localhost", state: str = "running", role: str = "container"):
    from labkit.engines.base import HostRow
    return HostRow(name=name, role=role, student=student, distro="debian:12", state=state, image="i", spec="",
                   server=server, local=server == "localhost", engine="docker" if role == "container" else "")


def test_sessions_end_with_their_students_credential_whoever_read_it_first(labkit_home):
    """A session ends when its student's access is revoked or the password it was opened
    with is rotated: found by the sweep even when a login read the new credentials first,
    and said when the session ended by itself (its host went with `down --student`)."""
    from labkit.door import core

    lab = spec.parse_lab({"name": "c", "students": ["s01", "s02", "s03"], "containers": ["debian:12"]}, "t")
    creds.ensure("c", ["s01", "s02", "s03"])
    door = core.Door(lab)
    door.reload()
    said: dict[str, str] = {}
    sessions = {s: core.Open(s, "debian12", "ssh", "peer", lambda why, s=s: said.setdefault(s, why))
                for s in ("s01", "s02", "s03")}
    for o in sessions.values():
        door.opened(o)
    door.sweep()
    assert said == {} and all(door.ended_why(o) is None for o in sessions.values())
    creds.ensure("c", ["s01"], rotate=True)
    creds.revoke("c", ["s02"])
    assert door.known("s03")  # a login in between reads the new credentials before the sweep does
    assert door.ended_why(sessions["s02"]) == "your access was revoked"
    door.sweep()
    assert said == {"s01": "your password was changed: log in again with the new one",
                    "s02": "your access was revoked"}


def test_serve_state_is_read_only_while_its_server_lives(labkit_home):
    """The handout prints the ports of the running `labkit serve`; a state file left behind by
    a server that died (SIGKILL: nothing of its own clean-up ran) is not read as a running one."""
    assert creds.serve_state("c") == {}
    with creds.serving_state("c", {"ssh_port": 40022}):
        assert creds.serve_state("c") == {"ssh_port": 40022}
    assert creds.serve_state("c") == {} and not creds.serve_state_file("c").exists()
    code = ("import sys, time; from labkit.access import creds\n"
            "with creds.serving_state('c', {'ssh_port': 54427}):\n"
            "    print('up', flush=True); time.sleep(60)\n")
    with child_holding(code):
        assert creds.serve_state("c")["ssh_port"] == 54427
    assert json.loads(creds.serve_state_file("c").read_text())["ssh_port"] == 54427  # left behind
    assert creds.serve_state("c") == {}


def test_door_finds_only_the_students_own_running_hosts(labkit_home, monkeypatch):
    """The door's one rule, on host rows as the engines report them: a short name among the
    student's own hosts of this lab on the served servers; anything else is refused."""
    import asyncio

    from labkit.door import core

    rows = [_row("labkit-c-s01-debian12", "s01"), _row("labkit-c-s01-busybox", "s01", state="exited"),
            _row("labkit-c-s01-vm", "s01", role="vm"), _row("labkit-c-s02-debian12", "s02"),
            _row("labkit-c-s03-debian12", "s03", server="far"),
            _row("labkit-other-s01-debian12", "s01")]  # another lab's, with the same student id
    monkeypatch.setattr(core, "hosts", lambda lab, students, servers: [r for r in rows if r.name.startswith(f"labkit-{lab}-")])
    lab = spec.parse_lab({"name": "c", "students": ["s01", "s02", "s03"], "containers": ["debian:12", "busybox"]}, "t")

    async def probe(door: core.Door, student: str, short: str) -> str:
        try:
            return (await door.host(student, short)).name
        except core.Refused as e:
            return f"refused: {e}"

    door = core.Door(lab)
    assert [h.short for h in asyncio.run(door.hosts("s01"))] == ["debian12", "busybox", "vm"]
    assert asyncio.run(probe(door, "s01", "debian12")) == "labkit-c-s01-debian12"
    assert asyncio.run(probe(door, "s01", "vm")) == "labkit-c-s01-vm"
    assert asyncio.run(probe(door, "s01", "busybox")) == "refused: busybox is exited: ask your instructor to bring it back"
    for other in ("labkit-c-s02-debian12", "s02-debian12", "../s02/debian12", "labkit-other-s01-debian12", "", "\x1b[2J"):
        said = asyncio.run(probe(door, "s01", other))
        assert said.startswith("refused: no host") and "\x1b" not in said, said
    served = core.Door(lab, servers=["localhost"])
    assert asyncio.run(probe(served, "s03", "debian12")) == (
        "refused: your hosts are on lab server far, which this door does not serve: use the address on your slip")
