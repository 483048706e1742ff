"""Which lab a command acts on, the lab's saved state, and its lock."""
from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import LabBusy, NotUp, SpecError, UsageError
from labkit.lab.spec import DEFAULT_LAB, Lab, load_lab, parse_lab
from labkit.paths import lab_dir, state_dir
from labkit.plan import uptodate

LAB_FILES = ("lab.yml", "labkit.yml")  # looked for in the current folder, like compose.yaml or a Vagrantfile


@dataclass(frozen=True)
class Selected:
    """The lab a command acts on, and why that one (said to the user every time)."""

    lab: Lab
    why: str


def labs_up() -> list[str]:
    """Labs brought up here and not taken down since (``labkit up`` saves the lab's spec,
    a full ``labkit down`` drops it)."""
    return sorted(p.parent.name for p in (state_dir() / "labs").glob("*/lab.json"))


def _saved_lab(name: str) -> Lab | None:
    saved = state_dir() / "labs" / name / "lab.json"
    return parse_lab(json.loads(saved.read_text()), str(saved)) if saved.is_file() else None


def _by_name(name: str, how: str) -> Selected:
    lab = _saved_lab(name)
    if lab is not None:
        return Selected(lab, f"{how}, brought up before")
    if name == DEFAULT_LAB["name"]:
        return Selected(load_lab(None), f"{how}: the built-in default lab")
    up_now = labs_up()
    raise UsageError(f"{how}: no lab named '{name}' is up on this machine",
                     ("labs up: " + ", ".join(up_now) if up_now else "no lab is up")
                     + "; pass a lab file with -f to bring one up")


def select_lab(path: str | Path | None = None, name: str | None = None, *, default_ok: bool = False,
               cwd: str | Path | None = None) -> Selected:
    """The lab a command acts on, picked the way compose, Vagrant and Molecule users expect:

    1. ``-f FILE``; 2. ``--lab NAME`` (a lab that is up, or ``demo``); 3. ``$LABKIT_LAB``;
    4. ``lab.yml`` (or ``labkit.yml``) in the current folder; 5. the one lab that is up;
    6. with ``default_ok`` (``up``, ``doctor``, ``bundle create``) and no lab up: the built-in
    default lab. Several labs up and nothing to choose by: refused, naming them (exit 2);
    none up for a command that needs one: NotUp (exit 8).
    """
    if path is not None and name is not None:
        raise UsageError("give either -f FILE or --lab NAME, not both")
    if path is not None:
        return Selected(load_lab(path), f"from {path}")
    if name is not None:
        return _by_name(name, f"--lab {name}")
    env = os.environ.get("LABKIT_LAB", "").strip()
    if env:
        return _by_name(env, f"$LABKIT_LAB={env}")
    here = Path(cwd or Path.cwd())
    for fname in LAB_FILES:
        if (here / fname).is_file():
            return Selected(load_lab(here / fname), f"from ./{fname} in this folder")
    up_now = labs_up()
    if len(up_now) == 1:
        return _by_name(up_now[0], "the only lab that is up")
    if len(up_now) > 1:
        raise UsageError(f"{len(up_now)} labs are up ({', '.join(up_now)}): which one?",
                         "choose with --lab NAME (or -f FILE, or $LABKIT_LAB)")
    if default_ok:
        return Selected(load_lab(None), "the built-in default lab (no lab file here, no lab up)")
    raise NotUp("no lab is up on this machine (and no lab.yml in this folder)",
                "`labkit up` brings up the built-in default lab; `labkit up -f FILE` yours")


def resolve_lab(path: str | Path | None = None, name: str | None = None) -> Lab:
    """The lab from a file, a name, or the built-in default lab (Python callers; the CLI
    uses ``select_lab``)."""
    if path is None and name is None:
        return load_lab(None)
    return select_lab(path, name, default_ok=True).lab


def save_lab(lab: Lab) -> None:
    (lab_dir(lab.name) / "lab.json").write_text(json.dumps(lab.model_dump(mode="json"), indent=2))


def forget_lab(lab: str) -> None:
    """After a full ``down``: the lab is no longer up (nor its servers, assignment and ssh
    config remembered). The runner's artifacts stay, for the record."""
    d = lab_dir(lab)
    for name in ("lab.json", "inventory", "assignment.json", "ssh_config", "engines.json", uptodate.STAMP):
        (d / name).unlink(missing_ok=True)


@contextmanager
def lab_lock(lab: str, verb: str) -> Iterator[None]:
    """Hold the lab's lock; a second labkit on the same lab is refused, naming the holder.

    The lock is a kernel flock: it is released when its holder exits, also by a crash,
    so a stale lock file never blocks anybody.
    """
    path = lab_dir(lab) / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another labkit process"
            raise LabBusy(f"lab '{lab}' is busy: {holder} holds its lock ({path})",
                              "wait for it to finish, or stop that process") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"labkit {verb} (pid {os.getpid()}, started {time.strftime('%H:%M:%S')})".encode(), 0)
        yield
    finally:
        os.close(fd)


def check_students(lab: Lab, students: list[str] | None) -> None:
    for s in students or []:
        if s not in lab.students:
            raise SpecError(f"--student {s}: not a student of lab '{lab.name}'",
                            f"students: {', '.join(lab.students[:20])}")
