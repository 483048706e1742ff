"""One SSH connection per VM for the length of a labkit command that reads its VMs many times
(`facts`, `verify`, `grade`).

Every check of the facts, K11's image hand-off and each of the user's testinfra tests runs its
commands over ``ssh``; without a shared connection each one logs in anew, and an emulated VM
(TCG) spends most of a second on every handshake: `labkit verify` of the webclass example
logged in about a hundred times. ``shared(config, hosts)`` starts one OpenSSH master per VM
(``-M -N``), all at once, on a socket in labkit's private run folder (0700), and yields a copy of
the lab's ssh config with ``ControlPath`` and ``ControlMaster no`` ahead of each VM's own
settings: ssh, testinfra's ssh backend and Ansible then send their commands through it. A VM
whose master is not up within the timeout is reached as before, one login per command; so is
any command after the block, which ends the masters and removes their sockets.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from labkit.paths import run_dir, socket_fits, write_private

# a master whose VM went away (reset, destroyed) ends within about 30 s and takes its socket
# along: the commands after it log in to whatever answers at the address now
KEEPALIVE = ("-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3")


@dataclass
class Shared:
    """The ssh config to use inside the block, and each VM's master socket (VMs whose master
    came up)."""
    config: Path
    sockets: dict[str, str] = field(default_factory=dict)

    def settings(self, configs: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
        """Per-VM ssh settings (``ssh_configs``) with the master's socket added as ``ControlPath``."""
        return {h: {**c, **({"ControlPath": self.sockets[h]} if h in self.sockets else {})}
                for h, c in configs.items()}


def head(sockets: Mapping[str, str]) -> str:
    """The config lines that send each VM's commands through its master (the first value ssh
    reads for a setting is the one it uses, so these go ahead of the VM's own block)."""
    return "".join(f"Host {h}\n  ControlPath {s}\n  ControlMaster no\n\n" for h, s in sockets.items())


@contextmanager
def shared(config: Path, hosts: Sequence[str], timeout: float = 30) -> Iterator[Shared]:
    if not hosts or not config.is_file():
        yield Shared(config)
        return
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    procs: dict[str, tuple[str, subprocess.Popen]] = {}
    out = config
    try:
        d = run_dir()
        for i, h in enumerate(hosts):
            sock = str(d / f"mux-{tag}-{i}")
            if not socket_fits(sock):
                continue
            procs[h] = (sock, subprocess.Popen(
                ["ssh", "-F", str(config), "-M", "-N", "-o", f"ControlPath={sock}", "-o", "ControlPersist=no",
                 "-o", "BatchMode=yes", *KEEPALIVE, h],
                # in labkit's process group: a ^C, or the terminal closing, ends it with labkit
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        ready: dict[str, str] = {}
        pending = dict(procs)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for h, (sock, p) in list(pending.items()):
                if os.path.exists(sock):  # ssh listens once it has logged in
                    ready[h] = pending.pop(h)[0]
                elif p.poll() is not None:  # could not log in: that VM goes without
                    pending.pop(h)
            if pending:
                time.sleep(0.05)
        if ready:
            out = config.with_name(f"{config.name}.{tag}")
            write_private(out, (head(ready) + config.read_text()).encode())
        yield Shared(out, ready)
    finally:
        for sock, p in procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            Path(sock).unlink(missing_ok=True)
        if out != config:
            out.unlink(missing_ok=True)
