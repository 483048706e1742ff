"""The students' VM networks: one libvirt NAT network per lab and student, its subnet from
labkit's VM address pool.

Role ``lab_network`` makes them on each lab server (module ``labkit_vm_network``) and role
``lab_firewall`` keeps each student's networks to themselves. The pool arithmetic lives in
the role's module_utils (``labkit_netpool``, shipped to remote servers by Ansible); this
module loads the same file, so ``labkit doctor`` counts the pool as the playbooks allocate it.
"""
from __future__ import annotations

import importlib.util
import os
from functools import cache
from types import ModuleType

from labkit import names
from labkit.doctor.check import Check
from labkit.paths import roles_dir

# 2048 networks of 32 addresses (a VM, its gateway, DHCP room for recreated VMs), next to
# the engine's pools scripts/setup.sh configures (10.200.0.0/14) and clear of libvirt's
# default 192.168.122.0/24
DEFAULT_POOL = "10.204.0.0/16"
PREFIX = 27
POOL_HINT = ("set LABKIT_VM_POOL to a free private range (e.g. 10.208.0.0/16) that no interface, route, "
             "libvirt network or engine pool of the server uses")


def pool() -> str:
    """The VM address pool: ``$LABKIT_VM_POOL`` or DEFAULT_POOL."""
    return os.environ.get("LABKIT_VM_POOL", DEFAULT_POOL).strip() or DEFAULT_POOL


@cache
def netpool() -> ModuleType:
    """roles/lab_network/module_utils/labkit_netpool.py, as a module."""
    path = roles_dir() / "lab_network" / "module_utils" / "labkit_netpool.py"
    spec = importlib.util.spec_from_file_location("labkit_netpool", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def network_name(lab: str, student: str) -> str:
    """The libvirt network of a student's VM (labkit.names owns the name)."""
    return names.vm_network(lab, student)


def free_networks(pool_cidr: str | None = None, prefix: int = PREFIX, uri: str = "qemu:///system",
                  daemon_json: str = "/etc/docker/daemon.json") -> tuple[int, int]:
    """(free, total): how many student VM networks the pool still has room for on this
    machine, and how many it has at all. Taken: libvirt's networks (labkit's own included),
    this machine's addresses and routes, the container engine's address pools.
    Raises the pool module's LibvirtError when libvirtd does not answer."""
    np = netpool()
    cidr = pool_cidr or pool()
    nets = np.libvirt_networks(uri)
    return np.free(cidr, prefix, np.taken(nets, daemon_json)), np.slots(cidr, prefix)


def pool_holds(students: int, pool_cidr: str | None = None, prefix: int = PREFIX, **kw: str) -> bool:
    """Does the VM address pool hold ``students`` more student networks on this machine?"""
    return free_networks(pool_cidr, prefix, **kw)[0] >= students


def doctor_check(students: int, need_vm: bool) -> Check:
    """`labkit doctor`'s "VM networks" check: does the pool hold one network per student?"""

    if not need_vm:
        return Check("VM networks", "ok", "the lab has no VM: no VM network needed")
    cidr = pool()
    try:
        free, total = free_networks(cidr)
    except ValueError as e:
        return Check("VM networks", "fail", f"LABKIT_VM_POOL={cidr}: {e}", POOL_HINT)
    except (OSError, netpool().LibvirtError) as e:
        return Check("VM networks", "warn", f"cannot count the pool {cidr}: libvirt does not answer ({e})",
                     "start libvirtd (see the libvirt check), then run `labkit doctor` again")
    detail = (f"{cidr} in /{PREFIX}s: room for {free} more of {total} student VM networks "
              f"({students} needed by this lab)")
    if free < students:
        return Check("VM networks", "fail", detail, POOL_HINT)
    return Check("VM networks", "ok", detail)
