"""A local HTTP forward proxy that leaves from a chosen source address: one egress route.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a proxy that opens its upstream
connections from 127.0.0.11 makes the local exchange see requests "from" 127.0.0.11 — another IP
with its own weight budget, as a real proxy with its own public IP would be.

It speaks the two forms an HTTP proxy receives (RFC 9112 §3.2.2 and RFC 9110 §9.3.6):

* ``GET http://host:port/path HTTP/1.1`` (absolute form, for plain-HTTP targets): the upstream
  connection is opened to ``host:port`` and the bytes are relayed as they are (aiohttp's server
  accepts the absolute form; aiohttp pools proxy connections per target, so one client
  connection only ever talks to one target);
* ``CONNECT host:port HTTP/1.1`` (for HTTPS targets): answered ``200`` and tunnelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class LocalProxy:
    """``await proxy.start()`` → ``http://127.0.0.1:<port>``; upstream connections from ``source_ip``."""

    def __init__(self, source_ip: str) -> None:
        self.source_ip = source_ip
        self.url = ""
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1") -> str:
        self._server = await asyncio.start_server(self._serve, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream_reader, upstream_writer = await self._open(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                parts = urlsplit(target)
                upstream_reader, upstream_writer = await self._open(parts.hostname or "", parts.port or 80)
                upstream_writer.write(head)
            self.connections += 1
            await asyncio.gather(_relay(reader, upstream_writer), _relay(upstream_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _open(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port, local_addr=(self.source_ip, 0))


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
