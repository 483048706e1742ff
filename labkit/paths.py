"""Where labkit keeps its state, and where its Ansible content lives."""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from labkit.errors import LabkitError

PKG_DIR = Path(__file__).resolve().parent  # the labkit package itself
UNIX_PATH_MAX = 107  # bytes of a UNIX socket's path (sun_path, without its NUL)
_PKG = PKG_DIR


def state_dir() -> Path:
    """Root of labkit's state: ``$LABKIT_HOME`` or ``~/.local/share/labkit``."""
    env = os.environ.get("LABKIT_HOME")
    base = Path(env) if env else Path.home() / ".local" / "share" / "labkit"
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 and not env:
        # an ordinary account's labs (a student's, on a shared classroom machine whose homes other
        # accounts may read): its state, keys and door credentials are its own (0700)
        st = os.lstat(base)
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            base.chmod(0o700)
    return base


def lab_dir(lab: str) -> Path:
    """Per-lab working folder (inventory, ssh config, Vagrant folders, runner artifacts)."""
    d = state_dir() / "labs" / lab
    d.mkdir(parents=True, exist_ok=True)
    return d


def vagrant_home() -> Path:
    """A private VAGRANT_HOME, so labkit's boxes never mix with the user's."""
    d = state_dir() / "vagrant.d"
    d.mkdir(parents=True, exist_ok=True)
    return d


SYSTEM_URI = "qemu:///system"
SESSION_URI = "qemu:///session"


def libvirt_uri() -> str:
    """The libvirt instance this account's VMs live in: root's the system instance
    (``qemu:///system``: bridged networks, firewall rules); an ordinary account's its own
    session instance (``qemu:///session``: a libvirtd per account, started on demand, with
    user-mode networking; docs/instructors/shared-machine.md). ``$LABKIT_LIBVIRT_URI``
    chooses one of the two."""
    env = os.environ.get("LABKIT_LIBVIRT_URI", "")
    if env in (SYSTEM_URI, SESSION_URI):
        return env
    if env:
        raise LabkitError(f"LABKIT_LIBVIRT_URI={env!r} is not a libvirt instance labkit uses",
                          f"set it to {SYSTEM_URI} or {SESSION_URI}, or unset it")
    return SYSTEM_URI if os.geteuid() == 0 else SESSION_URI


def ansible_root() -> Path:
    """Folder holding ``playbooks/``, ``roles/`` and ``inventories/``.

    In a source checkout (editable install) that is the repository root; in a
    wheel the same folders are shipped as ``labkit/_ansible``.
    """
    shipped = _PKG / "_ansible"
    if (shipped / "playbooks").is_dir():
        return shipped
    return _PKG.parent


def playbooks_dir() -> Path:
    return ansible_root() / "playbooks"


def roles_dir() -> Path:
    return ansible_root() / "roles"


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """``debian:12`` -> ``debian12``: a name part legal for Docker and libvirt."""
    return _SLUG.sub("", text.lower())


def run_dir() -> Path:
    """labkit's private folder for sockets and locks of this user: ``/run/labkit`` for root,
    ``$XDG_RUNTIME_DIR/labkit`` (else ``~/.cache/labkit/run``) for others; made 0700.

    Never a fixed, shared path such as ``/tmp/labkit-...``: another local user could make it
    first (a symlink, a held lock). An existing folder is used only if it is a real folder,
    owned by this user and open to nobody else; otherwise a clear error."""
    uid = os.geteuid()
    if uid == 0:
        d = Path("/run/labkit")
    elif os.environ.get("XDG_RUNTIME_DIR"):
        d = Path(os.environ["XDG_RUNTIME_DIR"]) / "labkit"
    else:
        d = Path.home() / ".cache" / "labkit" / "run"
    return private_dir(d)


def session_env() -> None:
    """An ordinary account with no ``XDG_RUNTIME_DIR`` (a classroom machine without
    systemd-logind: no login session makes ``/run/user/UID``) gets one for this process and
    what it starts: ``~/.cache/labkit/xdg-run``, private (0700). Rootless Podman keeps its
    runtime state there, and without one it would fall back to ``$TMPDIR``, which differs
    between labkit and the Ansible it runs: the container made by one would be unknown to the
    other. Root, and an account that has one, keep theirs."""
    if os.geteuid() == 0:
        return
    cur = os.environ.get("XDG_RUNTIME_DIR", "")
    if cur and os.path.isdir(cur) and os.access(cur, os.W_OK):
        return
    os.environ["XDG_RUNTIME_DIR"] = str(private_dir(Path.home() / ".cache" / "labkit" / "xdg-run"))


def socket_fits(path: str | Path) -> bool:
    """Whether a UNIX socket can be bound at ``path``: the kernel takes UNIX_PATH_MAX bytes at most."""
    return len(os.fsencode(str(path))) <= UNIX_PATH_MAX


def private_dir(d: Path) -> Path:
    """Folder ``d`` made 0700 if missing (its parents too), and checked: a real folder, owned
    by this user and open to nobody else; otherwise a clear error (never written through)."""
    d.parent.mkdir(parents=True, exist_ok=True)
    try:
        d.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise LabkitError(f"{d}: not a private folder of this user (a symlink, another owner, or open to others)",
                          f"remove it (`rm -rf {d}`) and run the command again; labkit makes it 0700")
    return d


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole, readable by this user only (0600): a file beside it,
    never followed if a link, renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def locked_beside(path: Path) -> Iterator[None]:
    """An exclusive flock on ``PATH.lock`` beside ``path`` while the block runs: other threads
    and processes doing the same wait their turn (the kernel frees it if the holder dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
