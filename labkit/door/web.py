"""The HTTPS page of `labkit serve`: a placeholder that listens (the page lands next)."""
from __future__ import annotations

import ssl

from aiohttp import web

from labkit.door.core import Door


async def start(door: Door, bind: str, port: int, tls: ssl.SSLContext) -> web.AppRunner:
    runner = web.AppRunner(web.Application(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, bind or None, port, ssl_context=tls).start()
    return runner


async def stop(runner: web.AppRunner) -> None:
    await runner.cleanup()
