"""A no-op ``labkit up`` in about a second: the stamp of the last full run, and the check that
nothing it covers has changed since.

After a full ``up`` that ended with no failure, ``save`` writes the lab's stamp:

- **what was asked**: a digest of the lab, the plan's extravars, the ids of the images its
  containers run, and labkit's own code, roles and playbooks;
- **what was there**: each of the lab's Docker containers (id, state, image id, networks and
  addresses), each of its libvirt domains (id, which changes at every start, and state), and
  the lab's firewall rules with the jumps to them (``iptables -S``).

The next ``up`` reads the same and, when both match, skips the playbook: Ansible would find
nothing to change in what the stamp covers, and Ansible stays the only thing that changes
state. ``up --full`` runs the playbook anyway. The stamp is dropped before every full run,
so an interrupted run never leaves one behind, and ``down`` drops it with the lab's folder.

With content of its own (provision.prepare, playbooks, roles), the stamp is written only after
the content ran well too, and covers the content's checksum (``labkit.plan.contentcache.digest``:
its files and the provision section): a lab whose content, vars, hosts and images did not
change skips its content as well, and a failed content run leaves no stamp (the next ``up`` runs).

Covered: labs on this machine whose containers are all Docker's, with or without VMs, with or
without content of their own, for all students. Everything else runs the playbook as before.
Not covered: a change made inside a host by hand (a package removed), content from outside the
lab's folders (a role installed in ~/.ansible): ``up --full`` repairs it.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit import paths
from labkit.engines.capabilities import caps

if TYPE_CHECKING:  # annotations only (the docker SDK is imported when a client is made)
    from docker import DockerClient

    from labkit.lab.spec import Lab
    from labkit.plan.model import Plan
    from labkit.servers.base import Server

STAMP = "up-stamp.json"
# iptables chains whose first rule must stay labkit's jump (role lab_firewall)
_PARENTS = ("FORWARD", "DOCKER-USER", "INPUT")
_JUMP = "-m comment --comment labkit -j LABKIT-FORWARD"  # labkit's jump, as `iptables -S` prints it


def _file(lab: str) -> Path:
    return paths.lab_dir(lab) / STAMP


def drop(lab: str) -> None:
    """Forget the stamp (before a full run: only a finished run writes one)."""
    _file(lab).unlink(missing_ok=True)


def eligible(plan: Plan, servers: Iterable[Server], students: Sequence[str] | None, content: str | None = "",
             only: Sequence[str] | None = None) -> str:
    """Why the fast path cannot be used for this run ("" when it can). ``content``: the checksum of
    the lab's own content (``labkit.plan.contentcache.digest``; "" when it has none, None when it
    could not be checksummed); ``only``: some hosts alone (reset)."""
    if students:
        return "--student"
    if only is not None:
        return "some hosts only"
    if content is None:
        return "the lab's content could not be checksummed"
    if not all(sv.local for sv in servers):
        return "remote lab servers"
    if not all(caps(c.engine).fast_path for c in plan.containers):
        return "engines other than Docker"
    return ""


def code_digest() -> str:
    """labkit's own code, roles and playbooks, as a checksum (a new labkit may do more at `up`)."""
    h = hashlib.sha256()
    for top in (paths.PKG_DIR, paths.roles_dir(), paths.playbooks_dir()):
        for f in sorted(top.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                h.update(f"{top.name}/{f.relative_to(top)}".encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def asked(lab: Lab, extravars: dict[str, Any], client: DockerClient, content: str = "") -> str:
    """Digest of what this `up` asks for (``content``: the checksum of the lab's own content)."""
    images = sorted({c["image"] for c in extravars.get("labkit_containers") or []})
    ids: dict[str, str | None] = {}
    for ref in images:
        try:
            ids[ref] = client.api.inspect_image(ref)["Id"]
        except Exception:  # noqa: BLE001 - a missing image is a change: no fast path
            ids[ref] = None
    doc = {"lab": lab.model_dump(mode="json"), "extravars": extravars, "images": ids, "code": code_digest(),
           "content": content}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _containers(lab: str, client: DockerClient) -> dict[str, Any]:
    # the list call (one request), not an inspect per container
    rows = client.api.containers(all=True, filters={"label": f"labkit.lab={lab}"})
    out = {}
    for r in rows:
        name = (r.get("Names") or ["?"])[0].lstrip("/")
        nets = (r.get("NetworkSettings") or {}).get("Networks") or {}
        out[name] = [r.get("Id"), r.get("State"), r.get("ImageID"),
                     sorted(f"{n}={v.get('NetworkID')}/{v.get('IPAddress')}" for n, v in nets.items())]
    return out


def _domains(lab: str) -> list[str] | None:
    """The lab's domains in this account's libvirt instance, as `virsh list --all` shows them."""
    if not shutil.which("virsh"):
        return None
    p = subprocess.run(["virsh", "-q", "-c", paths.libvirt_uri(), "list", "--all"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        return None
    return sorted(" ".join(ln.split()) for ln in p.stdout.splitlines() if f"labkit-{lab}-" in ln)


def _firewall(lab: str) -> list[str] | None:
    out = []
    for tool in ("iptables", "ip6tables"):
        if not shutil.which(tool):
            continue
        p = subprocess.run([tool, "-w", "-S"], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            if tool == "iptables":
                return None
            continue
        first: dict[str, str] = {}
        for ln in p.stdout.splitlines():
            parts = ln.split()
            if len(parts) > 2 and parts[0] == "-A" and parts[1] in _PARENTS and parts[1] not in first:
                first[parts[1]] = ln
            if f"lab={lab} " in ln:
                out.append(f"{tool} {ln}")
        # Docker's jump to DOCKER-USER above labkit's in FORWARD (Docker puts it back on top at
        # every network it makes) is the order role lab_firewall leaves as it is: the same state
        if first.get("FORWARD", "").split() == ["-A", "FORWARD", "-j", "DOCKER-USER"] and "DOCKER-USER" in first \
                and f"-A FORWARD {_JUMP}" in p.stdout.splitlines():
            first["FORWARD"] = f"-A FORWARD {_JUMP}"
        out += [f"{tool} first {c}: {first[c]}" for c in sorted(first)]
    return out


def found(lab: str, client: DockerClient, with_vms: bool) -> dict[str, Any]:
    """What exists of the lab, as the stamp records it."""
    return {"containers": _containers(lab, client), "domains": _domains(lab) if with_vms else [],
            "firewall": _firewall(lab)}


def save(lab: str, key: str, client: DockerClient, with_vms: bool) -> None:
    _file(lab).write_text(json.dumps({"key": key, "at": time.time(), "found": found(lab, client, with_vms)},
                                     sort_keys=True) + "\n")


def unchanged(lab: str, key: str, client: DockerClient, with_vms: bool) -> float | None:
    """When the stamp's run was (epoch seconds) if nothing it covers changed since, else None."""
    try:
        stamp = json.loads(_file(lab).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("key") != key:
        return None
    now = found(lab, client, with_vms)
    if None in (now["domains"], now["firewall"]) or now != stamp.get("found"):
        return None
    return float(stamp.get("at") or 0)
