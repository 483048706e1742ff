"""``access``: the students' handout for the door (`labkit serve`), and their credentials."""
from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

from labkit import names
from labkit.access import creds, handout
from labkit.access.identity import identity
from labkit.api.discover import engines, hosts
from labkit.api.planning import context
from labkit.api.select import check_students
from labkit.lab.spec import Lab
from labkit.plan.model import make_plan


@dataclass
class Handout:
    lab: str
    slips: list[handout.Slip]
    ssh_fingerprint: str
    tls_fingerprint: str
    new: list[str]  # students whose password is new (shown on this handout only)


def this_machine_address() -> str:
    """What a student's laptop can reach this machine by: its name when that resolves to an
    address other than loopback, else the address of its default route."""
    name = socket.getfqdn() or socket.gethostname()
    try:
        if not all(str(ai[4][0]).startswith("127.") or ai[4][0] == "::1" for ai in socket.getaddrinfo(name, None)):
            return name
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))  # TEST-NET-3; no packet is sent: this only picks the outgoing address
            return str(s.getsockname()[0])
        except OSError:
            return name


def _address(server_name: str, local: bool, hostvars: dict, address: str | None) -> str:
    if address:
        return address
    if local:
        return this_machine_address()
    return str(hostvars.get("ansible_host") or server_name)


def access(lab: Lab, students: Sequence[str] | None = None, *, rotate: bool = False,
           address: str | None = None, ssh_port: int | None = None, https_port: int | None = None) -> Handout:
    """The handout of ``students`` (default: all): for each, their lab server, how to reach
    the door there, their hosts, and their password when it is new (or ``rotate``d: a new
    one for each); a student without hosts gets no credentials (``labkit up`` first)."""
    check_students(lab, list(students) if students else None)
    who = list(students) if students else list(lab.students)
    with engines(lab.name) as svs:
        rows = hosts(lab.name, servers=svs)
        placed = {h.student: h.server for h in make_plan(lab, context(lab, svs)).hosts}
        by_name = {sv.name: sv for sv in svs}
    mine: dict[str, list[str]] = {}
    order = {names.lab_prefix(lab.name, st) + c.short: i for st in lab.students for i, c in enumerate(lab.containers)}
    for r in sorted(rows, key=lambda r: (r.role != "container", order.get(r.name, len(order)), r.name)):
        mine.setdefault(r.student, []).append(r.name.removeprefix(names.lab_prefix(lab.name, r.student)))
    up = [s for s in who if s in mine]
    # a password for those without one (for each with rotate); the keys follow the lab file
    new = creds.ensure(lab.name, up, lab.access.ssh_keys, rotate=rotate)
    shown = creds.take_pending(lab.name, up)
    have = creds.entries(lab.name)
    ident = identity()
    slips = []
    for s in who:
        sv = by_name.get(placed.get(s, ""))
        pw = shown.get(s) or (handout.GIVEN if s in have else "(no hosts yet: `labkit up` first)")
        slips.append(handout.Slip(
            s, sv.name if sv else "?", _address(sv.name, sv.local, sv.hostvars, address) if sv else (address or "?"),
            ssh_port or lab.access.ssh_port, https_port or lab.access.https_port, tuple(mine.get(s, [])),
            pw, bool(have.get(s) and have[s].keys)))
    return Handout(lab.name, slips, ident.ssh_fingerprint, ident.tls_fingerprint, new)
