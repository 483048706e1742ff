"""A lab VM's checkpoints: libvirt's internal snapshots of its qcow2 disk, with the running
guest's memory (``virsh snapshot-create-as``), on whichever lab server runs it (``Server.run``).

Internal snapshots live inside the VM's own disk volume: undefining the domain with
``--snapshots-metadata`` and removing its volume (``labkit down``, ``labkit reset``) takes
them along, so nothing is left behind.
"""
from __future__ import annotations

import json
import re
import subprocess

from labkit.errors import EngineError
from labkit.servers.base import Server
from labkit.vm.vms import uri

PREFIX = "labkit-"  # a checkpoint NAME is the snapshot labkit-NAME
TIMEOUT = 900  # seconds: saving 1 GiB of guest memory under emulation takes a while


def _virsh(sv: Server, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return sv.run(["virsh", "-q", "-c", uri(sv.local), *args], timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EngineError(f"virsh {' '.join(args)} did not finish within {timeout:.0f} s on {sv.name}") from None


def _check(p: subprocess.CompletedProcess[str], what: str, sv: Server) -> None:
    if p.returncode != 0:
        where = "" if sv.local else f" on {sv.name}"
        raise EngineError(f"{what}{where} failed: {(p.stderr or p.stdout).strip()[-400:]}")


def save(sv: Server, domain: str, name: str) -> None:
    """Snapshot the (running) VM: its disk and its memory, atomically."""
    p = _virsh(sv, "snapshot-create-as", domain, PREFIX + name, f"labkit checkpoint {name}", "--atomic")
    _check(p, f"snapshot of VM {domain}", sv)


def restore(sv: Server, domain: str, name: str) -> None:
    """Bring the VM back to the snapshot, running (as it was when saved)."""
    p = _virsh(sv, "snapshot-revert", domain, PREFIX + name, "--running", "--force")
    _check(p, f"revert of VM {domain} to checkpoint {name}", sv)


def delete(sv: Server, domain: str, name: str) -> None:
    """Delete the snapshot; one that is gone already (or a domain that is) is as good as deleted."""
    p = _virsh(sv, "snapshot-delete", domain, PREFIX + name)
    if p.returncode != 0 and not re.search(r"not found|no domain|no snapshot", p.stderr, re.I):
        _check(p, f"deleting checkpoint {name} of VM {domain}", sv)


def names(sv: Server, domain: str) -> list[str]:
    """The checkpoints the VM has (its ``labkit-`` snapshots), by name."""
    p = _virsh(sv, "snapshot-list", domain, "--name", timeout=60)
    if p.returncode != 0:
        return []
    return [s.removeprefix(PREFIX) for s in p.stdout.split() if s.startswith(PREFIX)]


def sizes(sv: Server, domain: str) -> dict[str, int]:
    """Bytes of guest memory each checkpoint keeps (qemu-img's VM SIZE; the disk's changes
    since are shared with the running disk and not counted)."""
    p = _virsh(sv, "domblklist", domain, "--details", timeout=60)
    disk = next((ln.split()[-1] for ln in p.stdout.splitlines()
                 if ln.split()[:2] == ["file", "disk"]), None) if p.returncode == 0 else None
    if not disk:
        return {}
    q = sv.run(["qemu-img", "info", "--force-share", "--output=json", disk], timeout=60)
    if q.returncode != 0:
        return {}
    try:
        snaps = json.loads(q.stdout).get("snapshots") or []
    except ValueError:
        return {}
    return {s["name"].removeprefix(PREFIX): int(s.get("vm-state-size") or 0)
            for s in snaps if str(s.get("name", "")).startswith(PREFIX)}
