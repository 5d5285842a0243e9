"""A minimal pooled HTTP/1.1 client for the gateway's calls to its services (JSON POST, keep-alive).

Why not aiohttp (which this replaces on that hop): under wrk, aiohttp's client was ~30% of the
gateway's CPU (py-spy), ~0.1 ms per call, for what is one write and one read on a kept-alive
loopback connection. This client does exactly that and nothing else: an ``asyncio.Protocol`` per
connection, the response parsed by httptools (uvicorn's parser, already a dependency), idle
connections reused LIFO. It speaks only to the platform's own services, whose answers are small
JSON bodies with a Content-Length or chunked encoding: no redirects, cookies, proxies, TLS,
compression or 100-continue. Anything it does not understand fails the call (the gateway falls
back), never a wrong answer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import urlsplit

import httptools


class ConnectionFailed(Exception):
    """Could not connect, or the connection broke before a whole response arrived."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent  # whether any byte of the request may have reached the server


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.closed = False
        self.received = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionFailed(f"bad response: {exc}", sent=True))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionFailed(f"connection closed: {exc or 'by the server'}", sent=self.received))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.parser.should_keep_alive():
            self.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.body)))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        self.waiter = self.loop.create_future()
        self.body = []
        self.received = False
        assert self.transport is not None
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HostPool:
    """Keep-alive connections to one ``http://host:port``, at most ``limit`` open at once."""

    def __init__(self, base_url: str, limit: int = 100) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"only http://host:port base URLs are supported, got {base_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        self.prefix = url.path.rstrip("/")
        self._host_header = f"{self.host}:{self.port}".encode()
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(limit)
        self._open: set[_Connection] = set()

    async def post_json(
        self, path: str, body: bytes, headers: dict[str, str] | None, timeout: float
    ) -> tuple[int, bytes]:
        head = [
            b"POST ", (self.prefix + path).encode(), b" HTTP/1.1\r\nHost: ", self._host_header,
            b"\r\nContent-Type: application/json\r\nContent-Length: ", str(len(body)).encode(), b"\r\n",
        ]  # fmt: skip
        for k, v in (headers or {}).items():
            head += [k.encode("latin-1"), b": ", v.encode("latin-1"), b"\r\n"]
        data = b"".join(head) + b"\r\n" + body
        async with asyncio.timeout(timeout), self._slots:
            while True:
                conn, reused = self._checkout()
                if conn is None:
                    conn = await self._connect()
                try:
                    status, payload = await conn.request(data)
                except ConnectionFailed as exc:
                    self._open.discard(conn)
                    if reused and not exc.sent:
                        continue  # a kept-alive connection the server had closed: retry on another
                    raise
                except BaseException:  # timeout or cancellation mid-response: the connection is unusable
                    conn.close()
                    self._open.discard(conn)
                    raise
                if conn.closed:
                    self._open.discard(conn)
                else:
                    self._idle.append(conn)
                return status, payload

    def _checkout(self) -> tuple[_Connection | None, bool]:
        while self._idle:
            conn = self._idle.pop()  # LIFO: the warmest connection
            if not conn.closed:
                return conn, True
            self._open.discard(conn)
        return None, False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: _Connection(loop), self.host, self.port)
        except OSError as exc:
            raise ConnectionFailed(f"cannot connect to {self.host}:{self.port}: {exc}", sent=False) from exc
        self._open.add(conn)
        return conn

    def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
