"""LXC on a remote lab server, over that server's SSH: what the wrappers
``labkit.engines.lxc.lxc_wrappers`` writes (per server, in the lab's folder) run.

- ``attach``: ``lxc-attach ARGS`` on the server, every argument quoted for the remote shell,
  stdin, stdout and stderr passed through (a terminal on the server too when this side has
  one, as lxc-attach itself gives one here). It is the ``lxc_attach`` of labkit's connection
  plugin ``labkit_lxc`` (playbooks/connection_plugins) and the command labkit's ``shell``
  and facts' probe run for an LXC container of a remote server.
- ``read``: ``labkit/engines/lxc_server.py`` run by the server's Python (the file on stdin, after the LXC layout), which
  answers labkit's reads there (the lab's containers by marker, measurements, accounts,
  what the server lacks) as JSON.

Within a labkit command on the lab every call shares one SSH connection with the Podman
wrappers' (``labkit.servers.sshshare``).
"""
from __future__ import annotations

import shlex
import subprocess
import sys

from labkit.engines.lxc_layout import server_source
from labkit.servers import sshshare


def remote(sudo: list[str], program: list[str], args: list[str]) -> str:
    """The remote shell's command line: ``sudo`` (or nothing), the program and ``args``, quoted."""
    return shlex.join([*sudo, *program, *args])


def tty_wanted(stdin_tty: bool, stdout_tty: bool) -> bool:
    """A terminal on the server when this side is one (an interactive `labkit shell`);
    never for Ansible's calls (pipes)."""
    return stdin_tty and stdout_tty


def main(mode: str, ssh: list[str], sudo: list[str], args: list[str], mux: str | None = None,
         python: str = "python3") -> int:
    """Run ``lxc-attach ARGS`` (mode ``attach``) or labkit's reads (mode ``read``) on the server:
    ``ssh`` is the server's argv up to (and with) its destination; ``sudo`` the words before
    the program there (``sudo -n`` when the inventory says become); ``mux`` the socket of the
    connection shared while a labkit command on the lab runs (``labkit.servers.sshshare``)."""
    if mode not in ("attach", "read"):
        sys.stderr.write(f"labkit: unknown LXC wrapper mode {mode!r}\n")
        return 2
    dest = ssh[-1]
    with sshshare.call(ssh, mux) as shared:
        opts = [*ssh[:-1], *shared]
        if mode == "read":
            p = subprocess.run([*opts, "-T", dest, remote(sudo, [python, "-"], args)], input=server_source())
            return p.returncode
        tty = ["-t"] if tty_wanted(sys.stdin.isatty(), sys.stdout.isatty()) else ["-T"]
        return subprocess.run([*opts, *tty, dest, remote(sudo, ["lxc-attach"], args)]).returncode
