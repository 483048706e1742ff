"""What a lab has on its servers, read (never changed): the servers and their engines, the
lab's hosts and networks on each (through the engine interface), its VMs in libvirt, and the
record of which engines and stores the lab used."""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from labkit import names
from labkit.engines import registry
from labkit.engines.base import Engine, HostRow
from labkit.engines.capabilities import caps
from labkit.errors import NotUp
from labkit.lab.spec import Lab
from labkit.paths import lab_dir
from labkit.servers import base as srv
from labkit.servers.base import SERVER_HOME, Server, default_servers
from labkit.vm import sshmux
from labkit.vm.vms import _known_labs, read_ssh_config, uri


def inventory_file(lab: str) -> Path:
    return lab_dir(lab) / "inventory"


def lab_servers(lab: str, inventory: str | Path | None = None) -> tuple[list[Server], str | None]:
    """The lab's servers: from ``inventory`` (remembered for later commands), else from the
    inventory the lab was brought up with, else this machine alone. Returns (servers, inventory)."""
    saved = inventory_file(lab)
    if inventory is None and saved.is_file():
        inventory = saved.read_text().strip()
    if inventory is None:
        return srv.default_servers(), None
    return srv.from_inventory(inventory), str(Path(inventory).resolve())


@contextmanager
def engines(lab: str, inventory: str | Path | None = None,
            servers: list[Server] | None = None) -> Iterator[list[Server]]:
    """The lab's servers (``servers``, else those of ``lab_servers``) with their engines
    reachable (SSH tunnels to remote ones)."""
    if servers is None:
        servers, _ = lab_servers(lab, inventory)
    with srv.engines(lab, servers) as svs:
        yield svs


def _scopes_file(lab: str) -> Path:
    return lab_dir(lab) / "engines.json"


def engine_scopes(lab: str, spec: Lab | None = None) -> dict[str, list[str]]:
    """The engines other than the default (Docker, read everywhere) this lab has used here,
    each with whose stores to read ('' is root's; a name, a rootless Podman user's): what
    ``up`` recorded (before it made anything, so ``down`` finds it from any state), with
    ``spec``'s own."""
    f = _scopes_file(lab)
    out: dict[str, list[str]] = json.loads(f.read_text()) if f.is_file() else {}
    for c in spec.containers if spec is not None else ():
        if not caps(c.engine).primary:
            users = out.setdefault(c.engine, [])
            if (c.user or "") not in users:
                users.append(c.user or "")
    return out


def record_scopes(lab: Lab) -> None:
    scopes = engine_scopes(lab.name, lab)
    if scopes:
        _scopes_file(lab.name).write_text(json.dumps(scopes, indent=2))


def engines_on(sv: Server, scopes: dict[str, list[str]]) -> list[tuple[Engine, list[str]]]:
    """The engines (and their stores) labkit reads on ``sv``: the default engine's, and those of
    ``engine_scopes`` that labkit drives there (each engine's ``read_remote``)."""
    out: list[tuple[Engine, list[str]]] = [(e, [""]) for e in registry.all_engines() if caps(e.name).primary]
    return out + [(registry.get(name), users) for name, users in scopes.items()
                  if not caps(name).primary and (sv.local or caps(name).read_remote)]


def hosts(lab: str, students: Sequence[str] | None = None, servers: list[Server] | None = None) -> list[HostRow]:
    """The lab's hosts (containers by label on each lab server, VMs by name), whatever their state.
    ``servers``: with their engines reachable (``engines()``); default: this machine."""
    out: list[HostRow] = []
    scopes = engine_scopes(lab)
    for sv in servers or default_servers():
        for eng, users in engines_on(sv, scopes):
            out += eng.hosts(lab, students, sv, users)
    # one order everywhere: by student, then name (containers and VMs alike)
    return sorted(out + vm_hosts(lab, students, servers), key=lambda h: (h.student, h.role == "vm", h.name))


def vm_hosts(lab: str, students: Sequence[str] | None = None, servers: list[Server] | None = None) -> list[HostRow]:
    """The lab's VMs found in libvirt by name (labkit-<lab>-<student>-vm), whatever their state,
    on each lab server (this machine's libvirt, or over SSH on a remote one)."""
    out = []
    others = [o for o in _known_labs() if o != lab]
    for sv in servers or default_servers():
        try:
            p = sv.run(["virsh", "-q", "-c", uri(sv.local), "list", "--all"], timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if p.returncode != 0:  # no libvirt there: a containers-only server
            continue
        for line in p.stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) < 3:
                continue
            name, state = parts[1], parts[2].strip()
            # the same ownership rule `labkit down` sweeps libvirt with
            if not name.endswith("-vm") or not names.owned_by(name, lab, None, others):
                continue
            student = name[len(f"labkit-{lab}-"):-len("-vm")]
            if students and student not in students:
                continue
            out.append(HostRow(name=name, role="vm", student=student, distro="debian:12", state=state, image="",
                               spec=f"ssh://{name}", server=sv.name, local=sv.local))
    return out


def network_names(lab: str, servers: list[Server] | None = None) -> list[str]:
    """The lab's network names on each server, the default engine's and (named with their
    engine) the other engines' in each store the lab used, wherever labkit reads them (``down``
    removes them there, and counts them)."""
    return [n["name"] + (f" ({n['engine']})" if n.get("engine") else "")
            for n in network_rows(lab, servers or default_servers())]


def network_rows(lab: str, servers: list[Server], students: Sequence[str] | None = None) -> list[dict[str, str]]:
    """The lab's networks on each server (by label), with their student and server (and, but for
    the default engine's, their engine and store)."""
    out = []
    scopes = engine_scopes(lab)
    for sv in servers:
        for eng, users in engines_on(sv, scopes):
            out += [n for n in eng.networks(lab, sv, users) if not students or n["student"] in students]
    return out


def ssh_config(lab: str) -> Path:
    """One OpenSSH config for every VM of the lab (from the lab_vm role's per-VM files)."""
    parts = sorted((lab_dir(lab) / "vagrant").glob("*/ssh_config"))
    path = lab_dir(lab) / "ssh_config"
    path.write_text("".join(p.read_text() + "\n" for p in parts))
    path.chmod(0o600)
    return path


@contextmanager
def vm_ssh(lab: str, rows: Sequence[HostRow]) -> Iterator[sshmux.Shared]:
    """The lab's ssh config, with one shared connection to each running VM of ``rows`` for the
    block (labkit.vm.sshmux): commands that read the VMs many times log in once per VM."""
    vms = [r.name for r in rows if r.role == "vm" and r.state == "running"]
    with sshmux.shared(ssh_config(lab), vms) as shared:
        yield shared


def ssh_configs(lab: str, rows: Sequence[HostRow]) -> dict[str, dict[str, str]]:
    """Each VM's OpenSSH settings as this machine reaches it (the lab_vm role's ssh_config)."""
    out = {}
    for r in rows:
        if r.role == "vm":
            f = lab_dir(lab) / "vagrant" / r.student / "ssh_config"
            if f.is_file():
                out[r.name] = read_ssh_config(f)
    return out


def running(lab: Lab, servers: list[Server]) -> list[HostRow]:
    """The lab's running hosts; NotUp when there are none."""
    up = [h for h in hosts(lab.name, servers=servers) if h.state == "running"]
    if not up:
        raise NotUp(f"lab '{lab.name}' has no running hosts", "bring it up with `labkit up`")
    return up


def vm_resources(lab: str, servers: list[Server], students: Sequence[str] | None = None,
                 known: dict[str, dict[str, list[str]]] | None = None) -> dict[str, dict[str, list[str]]]:
    """Per lab server, the lab's (or the students') libvirt domains and pool volumes and the
    server's Vagrant folders, read from each server (labkit.names decides what is the lab's);
    down.yml removes exactly these. ``known``: a reading to filter instead of reading again."""
    others = [o for o in _known_labs() if o != lab]
    out: dict[str, dict[str, list[str]]] = {}
    for sv in servers:
        doms: list[str]
        vols: list[str]
        if known is not None:
            found = known.get(sv.name, {})
            doms, vols = found.get("domains", []), found.get("volumes", [])
        else:
            doms, vols = [], []
            for what, cmd in (("domains", ["virsh", "-q", "-c", uri(sv.local), "list", "--all", "--name"]),
                              ("volumes", ["virsh", "-q", "-c", uri(sv.local), "vol-list", "default"])):
                try:
                    p = sv.run(cmd, timeout=60)
                except (OSError, subprocess.TimeoutExpired):
                    continue
                if p.returncode == 0:  # no libvirt there: a containers-only server
                    found_names = [ln.split()[0] for ln in p.stdout.splitlines() if ln.strip()]
                    (doms if what == "domains" else vols).extend(found_names)
        each: list[str | None] = list(students) if students else [None]
        mine = {"domains": [d for d in doms if any(names.owned_by(d, lab, s, others) for s in each)],
                "volumes": [v for v in vols if any(names.owned_by(v, lab, s, others) for s in each)]}
        base = f"{SERVER_HOME}/labs/{lab}/vagrant"
        mine["vagrant_dirs"] = [] if sv.local else ([f"{base}/{s}" for s in students] if students else [base])
        out[sv.name] = mine
    return out

