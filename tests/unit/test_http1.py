"""The gateway's HTTP/1.1 client against real sockets: keep-alive, limits, retries, timeouts, framing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from services.kit.http1 import ConnectionFailed, HostPool

# handler(request_number_on_this_connection, headers, body, writer) -> keep the connection open?
Handler = Callable[[int, dict[str, str], bytes, asyncio.StreamWriter], Awaitable[bool]]


class Server:
    """A raw HTTP/1.1 server whose every answer the test writes by hand."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open_now = 0
        self.max_open = 0
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        n = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                headers[":request-line"] = lines[0]
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((headers, body))
                n += 1
                if not await self.handler(n, headers, body, writer):
                    return
        finally:
            self.open_now -= 1
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


def _json(status: int, payload: object, extra: str = "") -> bytes:
    body = json.dumps(payload).encode()
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


async def echo(n: int, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(_json(200, {"n": n, "got": json.loads(body), "auth": headers.get("authorization")}))
    await writer.drain()
    return True


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_keep_alive_reuses_one_connection_and_sends_the_request_intact() -> None:
    async def main() -> None:
        server = Server(echo)
        async with server as url:
            pool = HostPool(url + "/base")
            for i in range(5):
                status, raw = await pool.post_json("/v1/x", json.dumps({"i": i}).encode(), {"Authorization": "t"}, 2.0)
                assert status == 200 and json.loads(raw) == {"n": i + 1, "got": {"i": i}, "auth": "t"}
            assert server.connections == 1
            headers, _ = server.requests[0]
            assert headers[":request-line"] == "POST /base/v1/x HTTP/1.1"
            assert headers["content-type"] == "application/json" and headers["host"] == url.removeprefix("http://")
            pool.close()

    run(main())


def test_concurrent_calls_stay_within_the_connection_limit() -> None:
    async def slow(n: int, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.02)
        return await echo(n, headers, body, writer)

    async def main() -> None:
        server = Server(slow)
        async with server as url:
            pool = HostPool(url, limit=3)
            answers = await asyncio.gather(*(pool.post_json("/", b"{}", None, 5.0) for _ in range(12)))
            assert all(status == 200 for status, _ in answers)
            assert server.max_open <= 3 and server.connections == 3
            pool.close()

    run(main())


def test_a_kept_alive_connection_the_server_closed_is_retried_on_a_new_one() -> None:
    async def one_per_connection(n: int, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        await echo(n, headers, body, writer)
        return False  # closes without saying so (no "Connection: close"), like an idle timeout

    async def main() -> None:
        server = Server(one_per_connection)
        async with server as url:
            pool = HostPool(url)
            for _ in range(3):  # back to back: the close arrives after the next request went out
                status, _ = await pool.post_json("/", b"{}", None, 2.0)
                assert status == 200
            await asyncio.sleep(0.01)  # or before it: a connection known closed is never picked
            assert (await pool.post_json("/", b"{}", None, 2.0))[0] == 200
            pool.close()

    run(main())


def test_connection_close_and_chunked_answers() -> None:
    async def chunked_then_close(n: int, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        if n == 1:
            writer.write(
                b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{"a"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n'
            )
            await writer.drain()
            return True
        writer.write(_json(503, {"error": "busy"}, "Connection: close\r\n"))
        await writer.drain()
        return True  # the server keeps it open, but the client must not reuse it after "close"

    async def main() -> None:
        server = Server(chunked_then_close)
        async with server as url:
            pool = HostPool(url)
            assert await pool.post_json("/", b"{}", None, 2.0) == (200, b'{"a": 1}')
            status, raw = await pool.post_json("/", b"{}", None, 2.0)
            assert status == 503 and json.loads(raw) == {"error": "busy"}
            assert (await pool.post_json("/", b"{}", None, 2.0))[0] == 200  # a fresh connection
            assert server.connections == 2
            pool.close()

    run(main())


def test_timeouts_refusals_and_broken_answers_fail_the_call_and_leave_the_pool_usable() -> None:
    async def stalls_first(n: int, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter) -> bool:
        if headers.get("x-mode") == "stall":
            await asyncio.sleep(1.0)
            return False
        if headers.get("x-mode") == "broken":
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"trunc')
            await writer.drain()
            return False  # closes mid-body
        return await echo(n, headers, body, writer)

    async def main() -> None:
        server = Server(stalls_first)
        async with server as url:
            pool = HostPool(url)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(TimeoutError):
                await pool.post_json("/", b"{}", {"X-Mode": "stall"}, 0.1)
            assert loop.time() - t0 < 0.5
            with pytest.raises(ConnectionFailed) as broken:
                await pool.post_json("/", b"{}", {"X-Mode": "broken"}, 2.0)
            assert broken.value.sent
            assert (await pool.post_json("/", b'{"ok": 1}', None, 2.0))[0] == 200
            pool.close()
        with pytest.raises(ConnectionFailed) as refused:
            await HostPool(url).post_json("/", b"{}", None, 1.0)  # the server is gone
        assert not refused.value.sent

    run(main())


def test_only_plain_http_base_urls() -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        HostPool("https://example.org")
