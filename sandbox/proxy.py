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

With ``socks=True`` it is a SOCKS5 proxy instead (``socks5://127.0.0.1:<port>``, RFC 1928): no
authentication (method ``0x00``), the ``CONNECT`` command to an IPv4, IPv6 or domain-name
address, then a tunnel. Other commands are refused with reply ``0x07`` (command not supported).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import urlsplit

_Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class LocalProxy:
    """``await proxy.start()`` → ``http://127.0.0.1:<port>`` (``socks5://…`` with ``socks``);
    upstream connections from ``source_ip``."""

    def __init__(self, source_ip: str, *, socks: bool = False) -> None:
        self.source_ip = source_ip
        self.socks = socks
        self.url = ""
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1") -> str:
        self._server = await asyncio.start_server(self._serve, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'socks5' if self.socks else 'http'}://{host}:{port}"
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
            upstream = await (self._socks(reader, writer) if self.socks else self._http(reader, writer))
            if upstream is None:
                return
            upstream_reader, upstream_writer = upstream
            self.connections += 1
            await asyncio.gather(_relay(reader, upstream_writer), _relay(upstream_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Streams:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = await self._open(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            return upstream
        parts = urlsplit(target)
        upstream = await self._open(parts.hostname or "", parts.port or 80)
        upstream[1].write(head)
        return upstream

    async def _socks(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Streams | None:
        version, methods = await reader.readexactly(2)
        offered = await reader.readexactly(methods)
        if version != 5 or 0 not in offered:
            writer.write(b"\x05\xff")  # no acceptable method
            return None
        writer.write(b"\x05\x00")
        _, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode("idna")
        port = int.from_bytes(await reader.readexactly(2), "big")
        if command != 1:
            writer.write(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
            return None
        upstream = await self._open(host, port)
        writer.write(b"\x05\x00\x00\x01" + bytes(6))  # succeeded; bound address not told
        await writer.drain()
        return upstream

    async def _open(self, host: str, port: int) -> _Streams:
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
