"""What a live lab is, read: ``status``, ``facts``, ``verify``, ``shell``, ``report``, ``inventory``."""
from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from labkit import names
from labkit.ansible import inventory as inv_mod
from labkit.ansible import labvars
from labkit.ansible.runner import connection_plugins
from labkit.api.discover import engines, hosts, network_names, running, ssh_config, ssh_configs, vm_ssh
from labkit.api.planning import container_plan, context, vm_plan
from labkit.api.select import check_students
from labkit.engines import registry
from labkit.engines.base import HostRow
from labkit.errors import NotUp, UsageError
from labkit.lab.spec import Lab
from labkit.observe import measure
from labkit.observe import report as rep
from labkit.observe.facts import HostFacts, collect
from labkit.observe.verify import (
    CheckResult,
    build_view,
    check_fact_ids,
    engine_label,
    merge_junit,
    run_checks,
    run_user_tests,
)
from labkit.paths import lab_dir, slug
from labkit.plan.model import make_plan
from labkit.servers.base import Server
from labkit.vm.sshmux import Shared


def status(lab: Lab) -> dict[str, Any]:
    """Hosts and networks of the lab, with what the lab file expects but is missing; ``up``: a
    host of the lab is running (none after ``labkit down``: the CLI says "not up", exit 8)."""
    with engines(lab.name) as svs:
        found = hosts(lab.name, servers=svs)
        have = {h.name for h in found}
        plan = make_plan(lab, context(lab, svs))  # the same plan `up` applies (and `up --plan` diffs)
        absent = [{"name": h.name, "role": h.role, "student": h.student, "distro": h.distro, "server": h.server,
                   **({"engine": h.engine, "user": h.user} if h.role == "container" else {})}
                  for h in plan.hosts if h.name not in have]
        return {
            "lab": lab.name,
            "up": any(h.state == "running" for h in found),
            "servers": [sv.name for sv in svs],
            "hosts": [h.as_dict() for h in found],
            "missing": [p["name"] for p in absent],
            "missing_hosts": absent,
            "networks": network_names(lab.name, svs),
        }


def facts(lab: Lab) -> list[HostFacts]:
    """Side-by-side facts of the lab server and every running host of the lab."""
    with engines(lab.name) as svs:
        up = running(lab, svs)
        with vm_ssh(lab.name, up) as vm:
            return collect(up, vm.config, servers=svs)


def verify(lab: Lab, only: list[str] | None = None, junit: str | Path | None = None,
           tests: list[str] | None = None) -> list[CheckResult]:
    """Check the kernel-sharing facts K1..K12 on the live lab, and the user's own tests
    (``tests``; default: the lab file's ``tests:`` unless ``only`` names facts); one result
    per fact (or test) and host, and one JUnit file for both."""
    check_fact_ids(only)  # a typo is said at once, before any host is read
    user = tests if tests is not None else ([] if only else list(lab.tests))
    with engines(lab.name) as svs:
        up = running(lab, svs)
        with vm_ssh(lab.name, up) as vm:
            return _verify(lab, up, svs, vm, only, junit, user)


def _verify(lab: Lab, up: list[HostRow], svs: list[Server], vm: Shared, only: list[str] | None,
            junit: str | Path | None, user: list[str]) -> list[CheckResult]:
    view = build_view(collect(up, vm.config, servers=svs), lab.name, vm.config)
    work = lab_dir(lab.name) / "verify"
    work.mkdir(exist_ok=True)
    facts_junit = work / "facts.xml" if (junit and user) else junit
    results = run_checks(view, only, facts_junit)
    if user:
        inv_path = inv_mod.write_to(work / "hosts.yml", inv_mod.build(
            up, vm.settings(ssh_configs(lab.name, up)), labvars.group_vars(lab.provision.group_vars, lab.trusted)))
        mine, user_junit = run_user_tests(user, inv_path, lab.provision.hosts, work, trust=lab.trusted)
        for r in mine:  # the engine of each host, as for the facts' rows
            h = view.hosts.get(r.host)
            r.engine = engine_label(h) if h is not None else ""
        results += mine
        if junit and facts_junit:
            merge_junit([Path(facts_junit), user_junit], Path(junit))
    return results


def shell_command(lab: Lab, host: str, student: str | None = None, root: bool = False,
                  command: list[str] | None = None) -> list[str]:
    """The command that opens a shell (or runs ``command``) on a lab host as the student.

    ``host`` is a full host name (``labkit-demo-s01-debian12``) or its short form
    (``debian12``, ``vm``) for ``student`` (default: the lab's first student).
    """
    check_students(lab, [student] if student else None)
    with engines(lab.name) as svs:
        found = {h.name: h for h in hosts(lab.name, servers=svs)}
    server = {sv.name: sv for sv in svs}
    if host in found:  # a full name says whose host it is: a different --student is a mistake
        if student and found[host].student != student:
            raise UsageError(f"{host} is student {found[host].student}'s host, not {student}'s",
                             f"drop --student, or name the host by its short form: `labkit shell --student "
                             f"{student} {host.rsplit('-', 1)[-1]}`")
        name = host
    else:
        student = student or lab.students[0]
        name = names.lab_prefix(lab.name, student) + host  # a short name: debian12, debian12-podman
        if name not in found:
            name = f"labkit-{lab.name}-{student}-{slug(host)}"  # or a distro: debian:12
    h = found.get(name)
    if h is None:
        prefix = f"labkit-{lab.name}-{student}-"
        choices = sorted(n.removeprefix(prefix) for n in found if n.startswith(prefix))
        raise UsageError(f"no host '{host}' in lab '{lab.name}' for student {student}",
                         "hosts: " + (", ".join(choices) or "none running: `labkit up` first"))
    if h.state != "running":
        raise NotUp(f"{name} is {h.state}", "bring it back with `labkit up`")
    return _shell_argv(h, lab.provision.user, root, command, ssh_config(lab.name) if h.role == "vm" else None,
                       server.get(h.server))


# In a VM the command runs through sudo without -i: `sudo -i CMD` hands CMD to a login shell
# with `$` left unescaped, so `$x` and `$0` were expanded once too often. Instead sh runs the
# arguments as they are (`exec "$@"`) from the user's home, as `docker exec -u -w` does.
_RUN_AS_TYPED = 'cd "$HOME" && exec "$@"'


def host_argv(lab: Lab, h: HostRow, command: list[str] | None, *, tty: bool, servers: list[Server]) -> list[str]:
    """The argv that runs ``command`` (or a login shell) on host ``h`` as the lab's student
    user, on a terminal or not (``tty``): what the student door runs for a session."""
    server = {sv.name: sv for sv in servers}.get(h.server)
    argv = _shell_argv(h, lab.provision.user, False, command, ssh_config(lab.name) if h.role == "vm" else None,
                       server, tty=tty)
    if h.role == "vm":  # no escape character: `~C`, `~&`, `~^Z` would reach the ssh client on the server
        argv[1:1] = ["-e", "none"]
    return argv


def _shell_argv(h: HostRow, user: str, root: bool, command: list[str] | None, ssh_cfg: Path | None,
                server: Server | None, tty: bool | None = None) -> list[str]:
    """The argv that runs ``command`` (or a login shell) on host ``h``: the same argv, same
    quoting, same user and working folder on a container as in the VM. ``tty``: with a
    terminal (default: a shell when stdin is one, a command never)."""
    if tty is None:
        tty = sys.stdin.isatty() and not command
    if h.role == "vm":
        if command:
            # ssh hands the VM's login shell one string: quote every word so it arrives as typed
            sudo = ["sudo", "-H"] + ([] if root else ["-u", user])
            remote = shlex.join([*sudo, "--", "sh", "-c", _RUN_AS_TYPED, "sh", *command])
            return ["ssh", "-F", str(ssh_cfg), "-t" if tty else "-T", h.name, remote]
        return ["ssh", "-F", str(ssh_cfg), "-t" if tty else "-T", h.name,
                shlex.join(["sudo", "-i"] + ([] if root else ["-u", user]))]
    return registry.of(h).exec_argv(h, command or ["/bin/sh", "-l"], user=None if root else user,
                                    workdir="/root" if root else f"/home/{user}", interactive=tty,
                                    server=server)


@dataclass
class ReportResult:
    files: list[Path]
    data: dict[str, Any]


def report(lab: Lab, out_dir: str | Path, with_checks: bool = True, junit_dir: str | Path | None = None) -> ReportResult:
    """Write report.md, report.html (chart inlined as SVG: self-contained) and chart.png into
    ``out_dir``; the data (hosts, summary, checks) is returned too."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with engines(lab.name) as svs:
        up = running(lab, svs)
        cfg = ssh_config(lab.name)
        host_facts = collect(up, cfg, servers=svs)
    meas = measure.load(lab.name)
    checks = None
    if with_checks:
        checks = run_checks(build_view(host_facts, lab.name, cfg))
    expected = [p["name"] for p in container_plan(lab) + vm_plan(lab)]
    data = rep.build(lab.name, host_facts, meas, checks, expected)
    files = [out / "chart.png", out / "report.md", out / "report.html"]
    files[0].write_bytes(rep.chart_png(data))
    files[1].write_text(rep.markdown(data))
    files[2].write_text(rep.html_page(data, rep.chart_svg(data)))
    if junit_dir and checks is not None:
        files += rep.junit_per_student(lab.name, checks, {h.name: h.student for h in up}, Path(junit_dir))
    return ReportResult(files, data)


def _ssh_url(sv: Server) -> str:
    hv = sv.hostvars
    user = hv.get("ansible_user")
    return f"ssh://{user + '@' if user else ''}{hv.get('ansible_host', sv.name)}:{hv.get('ansible_port', 22)}"


def _outside_rows(lab: Lab) -> tuple[list[HostRow], list[Server]]:
    """The lab's hosts as a program outside labkit reaches them: a remote engine through
    ssh://, not labkit's short-lived tunnel."""
    with engines(lab.name) as svs:
        rows = hosts(lab.name, servers=svs)
    by_name = {sv.name: sv for sv in svs}
    return [replace(r, via={**r.via, "docker_host": _ssh_url(by_name[r.server])})
            if not r.local and r.role == "container" else r for r in rows], svs


def inventory(lab: Lab, fmt: str = "yaml", *, with_servers: bool = False) -> tuple[str, Path]:
    """The lab's hosts as an inventory (YAML, INI or JSON) and the file labkit keeps current."""
    rows, svs = _outside_rows(lab)
    gv = labvars.group_vars(lab.provision.group_vars, lab.trusted)
    cfgs = ssh_configs(lab.name, rows)
    inv = inv_mod.build(rows, cfgs, gv, svs if with_servers else ())
    path = inv_mod.write(lab.name, inv_mod.build(rows, cfgs, gv))
    return inv_mod.render(inv, fmt), path


@contextmanager
def shared_inventory(lab: Lab) -> Iterator[Path]:
    """The lab's inventory for a session of many commands (labkit's pytest plugin): while the
    block runs, a copy whose VMs are reached through one shared SSH connection each
    (labkit.vm.sshmux); the file labkit keeps current when no VM is up."""
    rows, _ = _outside_rows(lab)
    gv = labvars.group_vars(lab.provision.group_vars, lab.trusted)
    cfgs = ssh_configs(lab.name, rows)
    path = inv_mod.write(lab.name, inv_mod.build(rows, cfgs, gv))
    with vm_ssh(lab.name, rows) as vm:
        if not vm.sockets:
            yield path
            return
        shared = inv_mod.write_to(path.with_name(f"hosts.shared-{os.getpid()}.yml"),
                                  inv_mod.build(rows, vm.settings(cfgs), gv))
        try:
            yield shared
        finally:
            shared.unlink(missing_ok=True)


def inventory_env(lab: Lab, path: Path) -> dict[str, str]:
    """What plain pytest/testinfra and Molecule-style tests read, for the lab's inventory file
    ``path`` (``labkit inventory --env``): Molecule's ``MOLECULE_INVENTORY_FILE`` (tests that
    build ``testinfra_hosts`` from it), Ansible's ``ANSIBLE_INVENTORY`` (testinfra's ansible
    backend without ``--ansible-inventory``), labkit's connection plugins (LXC hosts) and
    ``LABKIT_LAB`` (later labkit commands act on this lab)."""
    return {"MOLECULE_INVENTORY_FILE": str(path), "ANSIBLE_INVENTORY": str(path),
            "ANSIBLE_CONNECTION_PLUGINS": connection_plugins(), "LABKIT_LAB": lab.name}
