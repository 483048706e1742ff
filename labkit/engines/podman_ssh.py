"""Podman's CLI on a remote lab server, over that server's SSH: the ``podman`` that
containers.podman's connection plugin (``ansible_podman_executable``) and labkit's own reads
run for a Podman container of a remote lab server.

``labkit.servers.base.podman_wrapper`` writes, per server and Podman store, a small executable that
calls ``main`` with the server's ``ssh`` argv (its inventory settings, multiplexed over one
connection) and the Podman of that store on the server (``podman``, or for a rootless user role
lab_podman's ``podman-as`` wrapper there). Every argument is quoted for the remote shell.

Two of the plugin's calls cannot be passed through as they are, because they name paths of
the machine that runs them:

- ``podman mount NAME`` would answer a mount point on the server, which the plugin would then
  copy files into *here*: refused (exit 125), so the plugin copies with ``podman cp``;
- ``podman cp [--pause=false] SRC DST`` with a local path: streamed through ``podman exec -i
  NAME`` on the server (``cat`` in the container), the local file on this side of the pipe.
"""
from __future__ import annotations

import shlex
import subprocess
import sys

from labkit.servers import sshshare

NO_MOUNT = "labkit: `podman mount` is not offered over SSH (the mount point is on the lab server); copy with `podman cp`\n"


def remote(prefix: list[str], args: list[str]) -> str:
    """The remote shell's command line: ``prefix`` (sudo, the store's podman) and ``args``, quoted."""
    return shlex.join([*prefix, *args])


def split_cp(args: list[str]) -> tuple[str, str, str, bool] | None:
    """``cp`` arguments as (container, path in it, local path, into the container?), or None
    when neither side is a local absolute path with the other a ``NAME:PATH``."""
    rest = [a for a in args if a != "--pause=false"]
    if len(rest) != 2:
        return None
    src, dst = rest
    if src.startswith("/") and ":" in dst and not dst.startswith("/"):
        name, path = dst.split(":", 1)
        return name, path, src, True
    if dst.startswith("/") and ":" in src and not src.startswith("/"):
        name, path = src.split(":", 1)
        return name, path, dst, False
    return None


def tty_wanted(args: list[str]) -> bool:
    """``exec -it``/``-t`` from a terminal: ssh then allocates one on the server too."""
    if not args or args[0] != "exec":
        return False
    flags = []
    for a in args[1:]:
        if not a.startswith("-"):
            break
        flags.append(a)
    return any(f in ("-t", "--tty", "-it", "-ti") for f in flags)


def main(ssh: list[str], prefix: list[str], args: list[str], mux: str | None = None) -> int:
    """Run ``podman ARGS`` on the server: ``ssh`` is the server's argv up to (and with) its
    destination; ``prefix`` the remote words before Podman's arguments; ``mux``: the socket of
    the connection shared while a labkit command on the lab runs (``labkit.servers.sshshare``)."""
    if args[:1] == ["mount"]:
        sys.stderr.write(NO_MOUNT)
        return 125
    with sshshare.call(ssh, mux) as shared:
        return _run([*ssh[:-1], *shared], ssh[-1], prefix, args)


def _run(opts: list[str], dest: str, prefix: list[str], args: list[str]) -> int:
    if args[:1] == ["cp"]:
        cp = split_cp(args[1:])
        if cp is not None:
            name, path, local, into = cp
            if into:
                cmd = remote(prefix, ["exec", "-i", name, "/bin/sh", "-c", 'cat > "$1"', "sh", path])
                with open(local, "rb") as f:
                    return subprocess.run([*opts, "-T", dest, cmd], stdin=f).returncode
            cmd = remote(prefix, ["exec", name, "cat", path])
            with open(local, "wb") as f:
                return subprocess.run([*opts, "-T", dest, cmd], stdout=f).returncode
    tty = ["-t"] if tty_wanted(args) and sys.stdin.isatty() else ["-T"]
    return subprocess.run([*opts, *tty, dest, remote(prefix, args)]).returncode
