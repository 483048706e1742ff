"""A lab's checkpoints as recorded on this machine (``labkit checkpoint``), and which of its
containers now start from a checkpoint's image.

- ``lab_dir/checkpoints/<student>/<name>.json``: what each checkpoint keeps, host by host
  (``labkit.api.checkpoint`` makes and removes them; ``labkit doctor`` reads their size).
- ``lab_dir/restored.json``: containers restored from a checkpoint start from the checkpoint's
  image rather than their distro's, until ``labkit reset`` (or ``down``) gives them a clean
  start. The plan reads it (container name -> image), so a later ``up`` keeps the restored
  state instead of recreating the container from its distro's image.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.paths import lab_dir

FILE = "restored.json"


@dataclass
class Kept:
    """One host as a checkpoint keeps it."""

    short: str
    name: str
    kind: str       # container, vm
    server: str
    engine: str = ""
    ref: str = ""   # a container's image
    bytes: int = 0  # what it adds on the server's disk (a VM: its saved memory)


@dataclass
class Checkpoint:
    student: str
    name: str
    created: float
    kept: list[Kept] = field(default_factory=list)

    @property
    def hosts(self) -> list[str]:
        return [k.short for k in self.kept]

    @property
    def bytes(self) -> int:
        return sum(k.bytes for k in self.kept)

    def as_dict(self) -> dict[str, Any]:
        return {"student": self.student, "name": self.name, "created": self.created, "hosts": self.hosts,
                "bytes": self.bytes, "kept": [asdict(k) for k in self.kept]}


def folder(lab: str) -> Path:
    return lab_dir(lab) / "checkpoints"


def record_file(lab: str, student: str, name: str) -> Path:
    return folder(lab) / student / f"{name}.json"


def _load(path: Path) -> Checkpoint | None:
    try:
        d = json.loads(path.read_text())
        return Checkpoint(d["student"], d["name"], float(d["created"]), [Kept(**k) for k in d["kept"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_record(lab: str, student: str, name: str) -> Checkpoint | None:
    return _load(record_file(lab, student, name))


def records(lab: str, students: Sequence[str] | None = None) -> list[Checkpoint]:
    """The lab's checkpoints (of ``students``), by student then time."""
    base = folder(lab)
    dirs = [base / s for s in students] if students else sorted(p for p in base.glob("*") if p.is_dir())
    found = [cp for d in dirs for p in sorted(d.glob("*.json")) if (cp := _load(p)) is not None]
    return sorted(found, key=lambda c: (c.student, c.created))


def write_record(lab: str, cp: Checkpoint) -> None:
    p = record_file(lab, cp.student, cp.name)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(cp.as_dict(), indent=1))


def restored_images(lab: str) -> dict[str, str]:
    p = lab_dir(lab) / FILE
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write(lab: str, data: Mapping[str, str]) -> None:
    p = lab_dir(lab) / FILE
    if not data:
        p.unlink(missing_ok=True)
        return
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(data.items())), indent=1))
    tmp.replace(p)


def set_restored(lab: str, images: Mapping[str, str]) -> None:
    _write(lab, {**restored_images(lab), **images})


def drop_restored(lab: str, containers: Iterable[str] | None = None) -> None:
    """Forget the restored images of ``containers`` (None: all of the lab's)."""
    gone = None if containers is None else set(containers)
    _write(lab, {} if gone is None else {k: v for k, v in restored_images(lab).items() if k not in gone})
