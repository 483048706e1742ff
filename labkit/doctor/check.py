"""A doctor check: one line of `labkit doctor`, with its fix. A leaf: any layer may state one."""
from __future__ import annotations

import os
import pwd
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


def libvirt_denied(stderr: str, uid: int | None = None, account: str = "") -> tuple[str, str] | None:
    """When ``virsh -c qemu:///system`` failed (``stderr``) because this ordinary account may not
    use libvirt's system instance (it answers; the account lacks the right): the error and its
    fix, naming the account and who grants the access; None for root or another failure."""
    uid = os.geteuid() if uid is None else uid
    if uid == 0 or not stderr:
        return None
    if not any(w in stderr.lower() for w in ("permission denied", "authentication", "polkit", "system bus",
                                             "access denied", "not authorized")):
        return None
    who = account or _account(uid)
    why = (stderr.strip().splitlines() or ["refused"])[-1]
    return (f"this account ({who}) may not use libvirt's system instance (qemu:///system): {why}",
            f"the instructor, as root, grants it: `usermod -aG libvirt {who}` (then log in again; group libvirt "
            "is root in all but name: a VM may be given any file of the machine as its disk); "
            "see docs/instructors/shared-machine.md")


def _account(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
