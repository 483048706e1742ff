"""`labkit serve`: the student door of one lab server, in the foreground until SIGTERM or
SIGINT: the SSH gate and the HTTPS page (with the instructor's dashboard, labkit.door.dash)
over one Door, a sweep every few seconds that closes revoked and idle sessions, and a state
file the handout reads (ports, fingerprints)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from labkit.access import creds
from labkit.access.identity import Identity
from labkit.door import dash, gate, web
from labkit.door.core import Door, Throttle, log
from labkit.errors import LabkitError
from labkit.lab.spec import Lab

SWEEP = 2.0  # seconds between sweeps: a revoked student's session closes within this


@dataclass(frozen=True)
class Options:
    bind: str
    ssh_port: int
    https_port: int
    servers: Sequence[str] | None
    throttle: Throttle | None = None


def tls_context(ident: Identity) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(ident.cert), str(ident.key))
    except (ssl.SSLError, OSError) as e:
        raise LabkitError(f"cannot use the certificate {ident.cert} with key {ident.key}: {e}") from None
    return ctx


async def _serve(lab: Lab, ident: Identity, opts: Options, ready: asyncio.Event | None = None) -> None:
    door = Door(lab, opts.servers, opts.throttle)
    await asyncio.to_thread(door.open)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            ssh_srv = await gate.start(door, opts.bind, opts.ssh_port, str(ident.host_key))
        except OSError as e:
            raise LabkitError(f"cannot listen for SSH on {opts.bind or '*'}:{opts.ssh_port}: {e.strerror}",
                              "choose another --ssh-port, or stop what listens there") from None
        try:
            web_srv = await web.start(door, opts.bind, opts.https_port, tls_context(ident), [dash.install])
        except OSError as e:
            ssh_srv.close()
            raise LabkitError(f"cannot listen for HTTPS on {opts.bind or '*'}:{opts.https_port}: {e.strerror}",
                              "choose another --https-port, or stop what listens there") from None
        state = {"pid": os.getpid(), "bind": opts.bind, "ssh_port": opts.ssh_port, "https_port": opts.https_port,
                 "ssh_fingerprint": ident.ssh_fingerprint, "tls_fingerprint": ident.tls_fingerprint,
                 "servers": sorted(opts.servers) if opts.servers else None}
        with creds.serving_state(lab.name, state):
            log.info("serving lab %s: ssh on %s:%d (host key %s), https on %s:%d (certificate SHA-256 %s); "
                     "students: %s", lab.name, opts.bind or "*", opts.ssh_port, ident.ssh_fingerprint,
                     opts.bind or "*", opts.https_port, ident.tls_fingerprint, ", ".join(door.students()) or "none yet")
            if ready is not None:
                ready.set()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SWEEP)
                door.sweep()
            log.info("stopping: closing %d open session(s)", len(door.sessions))
            ssh_srv.close()
            for s in list(door.sessions):
                s.close("the door is closing (labkit serve stopped)")
            await web.stop(web_srv)
            await asyncio.sleep(0.2)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(door.close)


def serve(lab: Lab, ident: Identity, opts: Options) -> None:
    """Serve until SIGTERM or SIGINT."""
    asyncio.run(_serve(lab, ident, opts))
