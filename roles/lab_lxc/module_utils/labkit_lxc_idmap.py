"""Each LXC container of a lab server gets its own range of server ids: root in one student's
container is not root, nor any user, in another's (a file one makes is nobody's in the other;
per-user kernel limits are not shared). The ranges are IDMAP_RANGE ids each, from role
lab_lxc's ``idmap_base`` (IDMAP_SLOTS of them: root's line in ``/etc/subuid`` and
``/etc/subgid``, labkit_lxc_layout.IDMAP); a container's range is written in its marker file
(``idmap``) under a lock, so two runs (two labs) never pick the same one.

Used by the module labkit_lxc (Ansible ships this file with it), which passes the layout's
numbers (module_utils/labkit_lxc_layout.py). Standard library only.
"""

import contextlib
import fcntl
import json
import os

IDMAP_LOCK = ".labkit-idmap.lock"  # in lxc_path: one run at a time picks a container's ids


class IdmapError(Exception):
    pass


def _marker(folder, marker):
    try:
        with open(os.path.join(folder, marker)) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def idmaps_in_use(lxc_path, marker, per):
    """The server id ranges (first, count) of the containers under ``lxc_path``: labkit's by
    their marker file ``marker`` (written first: a half-made one counts; ``per`` ids each), any
    container's by the ``lxc.idmap`` lines of its configuration."""
    used = []
    for name in sorted(os.listdir(lxc_path)) if os.path.isdir(lxc_path) else []:
        folder = os.path.join(lxc_path, name)
        m = _marker(folder, marker)
        if m and isinstance(m.get("idmap"), int):
            used.append((m["idmap"], per))
        try:
            with open(os.path.join(folder, "config")) as f:
                for ln in f:
                    k, _, v = ln.partition("=")
                    w = v.split()
                    if k.strip() == "lxc.idmap" and len(w) == 4 and w[2].isdigit() and w[3].isdigit():
                        used.append((int(w[2]), int(w[3])))
        except OSError:
            pass
    return used


def allocate(base, used, per, slots):
    """The first server id of a free range of ``per`` ids (of ``slots`` from ``base``) for a
    new container, given the ranges ``used``: each container has its own, so root in one is
    not root (nor any user) in another."""
    for k in range(slots):
        lo = base + k * per
        if all(lo + per <= a or a + n <= lo for a, n in used):
            return lo
    raise IdmapError(f"no free id range for another LXC container on this lab server: the {slots} ranges "
                     f"of {per} ids from {base} are all taken (`labkit down` the labs no longer needed)")


@contextlib.contextmanager
def idmap_lock(lxc_path):
    """One run at a time (of any lab) picks a range and writes the marker that takes it."""
    os.makedirs(lxc_path, exist_ok=True)
    fd = os.open(os.path.join(lxc_path, IDMAP_LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
