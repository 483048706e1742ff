"""A doctor check: one line of `labkit doctor`, with its fix. A leaf: any layer may state one."""
from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Check:
    name: str
    status: str        # ok, warn, fail (fail blocks `labkit up`), skipped (not checked: never a pass)
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_quiet(cmd: list[str], timeout: float = 15) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
