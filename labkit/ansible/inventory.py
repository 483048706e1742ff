"""The lab's hosts as an Ansible inventory, for the user's own playbooks, plain `ansible`,
testinfra (``--hosts=ansible://GROUP --ansible-inventory=FILE``) and Molecule's verifier.

Lab servers are left out unless asked for, so a play written for ``hosts: all`` (a
Molecule ``converge.yml``) never reaches one. The file labkit keeps current is
``lab_dir(lab)/hosts.yml`` (mode 0600): key paths only, never key material.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from labkit import names
from labkit.ansible import labvars
from labkit.engines import registry
from labkit.engines.base import HostRow
from labkit.lab import catalog
from labkit.paths import lab_dir


def _group(name: str) -> str:
    """An Ansible group name: letters, digits and '_' (``student-1`` -> ``student_1``)."""
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def host_vars(row: Mapping[str, Any], ssh: Mapping[str, str] | None = None, mitogen: bool = False) -> dict[str, Any]:
    """How Ansible reaches one lab host (a row of ``api.hosts``). ``mitogen``: a container with Python
    that Mitogen's strategy can reach gets the connection name it takes over (labkit.ansible.mitogen)."""
    if row["role"] == "vm":
        ssh = ssh or {}
        hv: dict[str, Any] = {"ansible_connection": "ssh", "ansible_host": ssh.get("HostName", row["name"]),
                              "ansible_port": int(ssh.get("Port", 22)), "ansible_user": ssh.get("User", "vagrant"),
                              "ansible_become": True, "ansible_python_interpreter": "/usr/bin/python3",
                              # an emulated VM on a busy lab server can take more than SSH's 10 s to answer
                              "ansible_timeout": 60,
                              # its host key is new at every boot (the options below say so to ssh; this
                              # says it to Ansible and Mitogen, which would put StrictHostKeyChecking=yes first)
                              "ansible_host_key_checking": False}
        if ssh.get("IdentityFile"):
            hv["ansible_ssh_private_key_file"] = ssh["IdentityFile"].strip('"')
        args = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o ConnectTimeout=60"
        if ssh.get("ProxyCommand"):
            args += " -o ProxyCommand=" + json.dumps(ssh["ProxyCommand"])
        if ssh.get("ControlPath"):  # a connection labkit shares for one command (labkit.vm.sshmux)
            args += " -o ControlMaster=no -o ControlPath=" + ssh["ControlPath"]
        hv["ansible_ssh_common_args"] = args
        return hv
    r = HostRow.of(row)
    engine = registry.of(r)
    hv = engine.ansible_hostvars(r)
    if _python(row):
        hv["ansible_python_interpreter"] = "/usr/bin/python3"
        # Mitogen starts its Python on the host: a host without one (BusyBox's raw tasks) keeps its plugin
        fast = engine.mitogen_connection(r) if mitogen else None
        if fast:
            hv["ansible_connection"] = fast
    return hv


def _python(row: Mapping[str, Any]) -> bool:
    if row["role"] == "vm":
        return True
    try:
        return catalog.get(row.get("distro", "")).python
    except Exception:  # noqa: BLE001 - a host of an unknown distro: assume no Python
        return False


def build(rows: Iterable[Mapping[str, Any]], ssh: Mapping[str, Mapping[str, str]] | None = None,
          group_vars: Mapping[str, Mapping[str, Any]] | None = None, servers: Iterable[Any] = (),
          mitogen: bool = False) -> dict:
    """The inventory (Ansible's YAML structure) of the lab's hosts.

    Groups: ``lab`` (every host), ``containers``, ``vms``, ``python`` (hosts that run
    modules), ``no_python`` (BusyBox), one per distro by the name ``labkit shell`` takes
    (``debian12``, ``busybox``, ``vm``, ``debian12-podman`` as ``debian12_podman``), one per
    engine of the containers (``docker``, ``podman``, ``lxc``), ``family_<family>``, ``student_<id>`` and
    ``server_<name>``; ``lab_servers`` only when ``servers`` are given. ``mitogen``: for a run with
    Mitogen's strategy (see ``host_vars``).
    """
    hosts: dict[str, dict] = {}
    groups: dict[str, set[str]] = {}

    def add(group: str, host: str) -> None:
        groups.setdefault(_group(group), set()).add(host)

    for r in rows:
        name = r["name"]
        hosts[name] = host_vars(r, (ssh or {}).get(name), mitogen)
        short = "vm" if r["role"] == "vm" else names.host_slug(catalog.get(r["distro"]).slug, r.get(
            "engine", "docker"), r.get("user", "")) if r.get("distro") else name
        add("lab", name)
        add("vms" if r["role"] == "vm" else "containers", name)
        if r["role"] != "vm":
            add(r.get("engine", "docker"), name)  # docker, podman, lxc
        add("python" if _python(r) else "no_python", name)
        add(short, name)
        family = "debian" if r["role"] == "vm" else catalog.get(r["distro"]).family if r.get("distro") else "unknown"
        add(f"family_{family}", name)
        add(f"student_{r.get('student', '')}", name)
        add(f"server_{r.get('server', 'localhost')}", name)
    children: dict[str, Any] = {}
    for g in sorted(groups):
        children[g] = {"hosts": {h: (hosts[h] if g == "lab" else None) for h in sorted(groups[g])}}
        if group_vars and g in group_vars:
            children[g]["vars"] = dict(group_vars[g])
    for g, v in (group_vars or {}).items():  # vars for groups of no host here still land somewhere
        children.setdefault(_group(g), {"hosts": {}}).setdefault("vars", dict(v))
    sv = list(servers)
    if sv:
        children["lab_servers"] = {"hosts": {s.name: dict(s.hostvars) or (
            {"ansible_connection": "local"} if s.local else {}) for s in sv}}
    return {"all": {"children": children}}


def path(lab: str) -> Path:
    return lab_dir(lab) / "hosts.yml"


def write(lab: str, inv: dict) -> Path:
    """Keep the lab's inventory file current (0600: it names key paths)."""
    return write_to(path(lab), inv)


def write_to(p: Path, inv: dict) -> Path:
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# labkit: the lab's hosts (lab servers left out); rewritten by labkit up/run/inventory\n")
        f.write(labvars.dump(inv))
    os.chmod(p, 0o600)
    return p


def render(inv: dict, fmt: str = "yaml") -> str:
    """The inventory as YAML, JSON (``ansible-inventory --list`` shape) or INI."""
    children = inv["all"]["children"]
    if fmt == "yaml":  # a lab file's values as !unsafe: Ansible never templates them
        return labvars.dump(inv)
    hostvars = {h: v for g in children.values() for h, v in (g.get("hosts") or {}).items() if v}
    if fmt == "json":
        out: dict[str, Any] = {"_meta": {"hostvars": hostvars}, "all": {"children": sorted(children)}}
        for g, body in children.items():
            out[g] = {"hosts": sorted(body.get("hosts") or {})}
            if body.get("vars"):
                out[g]["vars"] = body["vars"]
        return json.dumps(out, indent=2)
    if fmt == "ini":
        lines = []
        for g, body in children.items():
            lines.append(f"[{g}]")
            for h in sorted(body.get("hosts") or {}):
                hv = hostvars.get(h) if g in ("lab", "lab_servers") else None
                lines.append(h + "".join(f" {k}={_ini(v)}" for k, v in (hv or {}).items()))
            if body.get("vars"):
                lines.append(f"\n[{g}:vars]")
                lines += [f"{k}={_ini(v)}" for k, v in body["vars"].items()]
            lines.append("")
        return "\n".join(lines)
    raise ValueError(fmt)


def _ini(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    s = str(v)
    return json.dumps(s) if (" " in s or '"' in s or "'" in s) else s
