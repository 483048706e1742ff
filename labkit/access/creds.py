"""Students' credentials for the door (`labkit serve`): a password each (argon2id hash only),
and the public keys the lab file or roster gives.

Kept in the lab's folder, ``access/`` (0700; files 0600, written whole and renamed): never in
the lab file, the inventory or a log. A new or rotated password is also kept in clear in
``access/pending.json`` until the handout (`labkit access`) has shown it once; after that only
``--rotate`` makes a new one. ``labkit down`` removes a student's entry: the gate re-reads the
store and refuses (and closes) their sessions at once.

The instructor's credential for the dashboard of `labkit serve` (user ``instructor``) is kept
apart, in ``access/instructor.json``: made and shown once by ``labkit access --instructor``
(``--rotate`` makes a new one, which ends the dashboard's logins made with the old one).
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from labkit.errors import LabkitError
from labkit.paths import lab_dir, private_dir, write_private

# OWASP's argon2id minimum (19 MiB, 2 passes, 1 lane): ~20 ms a hash here, so `labkit up` of
# 40 students adds under a second, and a guess costs the same 20 ms of the gate (throttled).
_HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


@functools.cache
def _dummy() -> str:
    """A hash of nothing anyone knows: an unknown student costs the same time as a known one."""
    return _HASHER.hash(secrets.token_urlsafe(16))

# no 0/o, 1/l/i: read off a printed slip without doubt
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
MAX_PASSWORD = 1024  # longer input is refused before hashing (a huge paste costs nothing)


def new_password() -> str:
    """Four groups of four: about 79 bits, easy to type (``k7pm-x9q2-...``)."""
    return "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(4))


def access_dir(lab: str) -> Path:
    return private_dir(lab_dir(lab) / "access")


def _store_file(lab: str) -> Path:
    return access_dir(lab) / "credentials.json"


def _pending_file(lab: str) -> Path:
    return access_dir(lab) / "pending.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise LabkitError(f"{path}: cannot read the students' credentials: {e}",
                          "`labkit access --rotate` makes new ones for every student") from None
    return data if isinstance(data, dict) else {}


def _write(path: Path, data: Mapping[str, Any]) -> None:
    write_private(path, json.dumps(data, indent=1, sort_keys=True).encode())


@dataclass(frozen=True)
class Entry:
    student: str
    hash: str
    keys: tuple[str, ...]
    made: float
    shown: bool  # the password has been on a handout


def entries(lab: str) -> dict[str, Entry]:
    """Every student of ``lab`` who has credentials."""
    pending = _read(_pending_file(lab))
    out = {}
    for sid, e in _read(_store_file(lab)).items():
        if isinstance(e, dict) and isinstance(e.get("hash"), str):
            out[sid] = Entry(sid, e["hash"], tuple(e.get("keys") or ()), float(e.get("made", 0)), sid not in pending)
    return out


def store_mtime(lab: str) -> float:
    """When the store last changed (0 when there is none): the gate re-reads it then."""
    try:
        return (lab_dir(lab) / "access" / "credentials.json").stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _hash_all(passwords: Mapping[str, str]) -> dict[str, str]:
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return dict(zip(passwords, pool.map(_HASHER.hash, passwords.values()), strict=True))


def ensure(lab: str, students: Iterable[str], keys: Mapping[str, str] | None = None,
           rotate: bool = False) -> list[str]:
    """Credentials for each of ``students``: a new password for those without one (every one
    with ``rotate``), kept pending for the handout; the public keys set to ``keys``' (the lab
    file's ``access.ssh_keys``). Returns the students given a new password."""
    keys = keys or {}
    store = _read(_store_file(lab))
    before = json.dumps(store, sort_keys=True)
    pending = _read(_pending_file(lab))
    want = list(students)
    fresh = {s: new_password() for s in want if rotate or s not in store}
    hashes = _hash_all(fresh)
    now = time.time()
    for s in want:
        old = store.get(s)
        e: dict[str, Any] = dict(old) if isinstance(old, dict) else {}
        if s in fresh:
            e = {"hash": hashes[s], "made": now}
            pending[s] = fresh[s]
        e["keys"] = [keys[s]] if s in keys else []
        store[s] = e
    if fresh:
        _write(_pending_file(lab), pending)
    if json.dumps(store, sort_keys=True) != before:
        _write(_store_file(lab), store)
    return list(fresh)


def take_pending(lab: str, students: Iterable[str]) -> dict[str, str]:
    """The clear passwords of ``students`` not yet shown, removed from the pending file:
    shown once, on this handout."""
    pending = _read(_pending_file(lab))
    taken = {s: pending.pop(s) for s in list(students) if s in pending}
    if taken:
        _write(_pending_file(lab), pending)
    return taken


def revoke(lab: str, students: Iterable[str] | None = None) -> list[str]:
    """Remove the credentials of ``students`` (every student's when None)."""
    d = lab_dir(lab) / "access"
    if not d.exists():
        return []
    store, pending = _read(_store_file(lab)), _read(_pending_file(lab))
    gone = sorted(store) if students is None else [s for s in students if s in store]
    for s in gone:
        store.pop(s, None)
        pending.pop(s, None)
    if gone:
        _write(_pending_file(lab), pending)
        _write(_store_file(lab), store)
    return gone


def check_password(entry: Entry | None, password: str) -> bool:
    """Whether ``password`` is ``entry``'s; as slow for no entry as for a wrong password."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        return _HASHER.verify(entry.hash if entry else _dummy(), password) and entry is not None
    except (VerificationError, InvalidHashError):
        return False


INSTRUCTOR = "instructor"  # the dashboard's user name (never a student's credential)


def _instructor_file(lab: str) -> Path:
    return access_dir(lab) / "instructor.json"


def make_instructor(lab: str, rotate: bool = False) -> str | None:
    """The instructor's password when it is new (none yet, or ``rotate``): shown by the caller
    this once, only its argon2id hash kept. None when one exists already (not shown again)."""
    if not rotate and instructor(lab) is not None:
        return None
    password = new_password()
    _write(_instructor_file(lab), {"hash": _HASHER.hash(password), "made": time.time()})
    return password


def instructor(lab: str) -> Entry | None:
    """The instructor's credential of ``lab`` (None: none made yet)."""
    e = _read(_instructor_file(lab))
    if not isinstance(e.get("hash"), str):
        return None
    return Entry(INSTRUCTOR, e["hash"], (), float(e.get("made", 0) or 0), True)


def instructor_mtime(lab: str) -> float:
    """When the instructor's credential last changed (0: none); a login made before has ended."""
    try:
        return (lab_dir(lab) / "access" / "instructor.json").stat().st_mtime
    except FileNotFoundError:
        return 0.0


def serve_state_file(lab: str) -> Path:
    """Written by a running `labkit serve` (its ports and fingerprints), removed when it stops."""
    return access_dir(lab) / "serve.json"


@contextlib.contextmanager
def serving_state(lab: str, state: Mapping[str, Any]) -> Iterator[None]:
    """Publish what a running `labkit serve` of ``lab`` offers while the block runs.

    The file is held under a shared flock for as long as the server runs: the kernel drops
    the lock when the process ends, also by SIGKILL or a crash, so a file left behind by a
    dead server is never read as a running one (see `serve_state`)."""
    path = serve_state_file(lab)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(dict(state), indent=1).encode())
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        os.close(fd)


def serve_state(lab: str) -> dict[str, Any]:
    """What a running `labkit serve` of ``lab`` wrote ({} when none runs, also when one died
    without removing its file: nobody holds its lock then)."""
    try:
        fd = os.open(serve_state_file(lab), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    with os.fdopen(fd, "rb") as f:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # a server holds it: it runs
        else:
            return {}  # left behind by a server that is gone
        try:
            data = json.loads(f.read())
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}
