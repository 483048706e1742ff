"""A class roster: the students' ids (and their public SSH keys) from a CSV or YAML file,
which a lab file's ``roster:`` names."""
from __future__ import annotations

import csv
from pathlib import Path

import yaml

from labkit.errors import SpecError


def load_roster(path: Path) -> list[str]:
    """Student ids from a roster: CSV (an ``id`` column, else the first column) or YAML
    (a list of ids, or of mappings with ``id``). Errors name the roster file and line."""
    return [sid for sid, _ in roster_entries(path)]


def roster_entries(path: Path) -> list[tuple[str, str | None]]:
    """Each student id of a roster (see ``load_roster``) with its public SSH key (a CSV
    ``ssh_key`` column, a YAML ``ssh_key``), or None."""
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the roster: {e.strerror}",
                        "roster: is relative to the lab file's folder") from None
    ids: list[str] = []
    keys: list[str | None] = []
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
        if not rows:
            raise SpecError(f"{path}: the roster is empty")
        header = [h.strip().lower() for h in rows[0]]
        col, start = (header.index("id"), 1) if "id" in header else (0, 0)
        kcol = header.index("ssh_key") if start and "ssh_key" in header else None
        for n, row in enumerate(rows[start:], start=start + 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if col >= len(row):
                raise SpecError(f"{path}:{n}: no value in column {col + 1} (id)")
            ids.append(row[col].strip())
            keys.append(row[kcol].strip() or None if kcol is not None and kcol < len(row) else None)
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpecError(f"{path}: not valid YAML: {getattr(e, 'problem', e)}") from None
        if isinstance(data, dict) and "students" in data:
            data = data["students"]
        if not isinstance(data, list):
            raise SpecError(f"{path}: a YAML roster is a list of student ids (or of mappings with 'id')")
        for i, item in enumerate(data):
            sid = item.get("id") if isinstance(item, dict) else item
            if not isinstance(sid, str | int) or isinstance(sid, bool):
                raise SpecError(f"{path}: [{i}]: expected a student id, got {item!r}")
            ids.append(str(sid))
            key = item.get("ssh_key") if isinstance(item, dict) else None
            if key is not None and not isinstance(key, str):
                raise SpecError(f"{path}: [{i}]: ssh_key: expected a public key line, got {key!r}")
            keys.append(key.strip() if key else None)
    return list(zip(ids, keys, strict=True))
