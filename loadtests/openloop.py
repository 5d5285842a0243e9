"""Open-loop HTTP load generator: fixed arrival rate, bounded duration and count, loopback only.

Requests are issued at scheduled times ``t0 + i / rate`` whatever the server is doing, and
latency is measured from the *scheduled* time, so a server that falls behind shows it in the
percentiles instead of silently slowing the generator (coordinated omission). The client is
raw asyncio HTTP/1.1 with keep-alive connections (an httpx client tops out near 250 req/s in one
process here), split over several processes for higher rates.

    python -m loadtests.openloop --url http://127.0.0.1:8000/v1/recommend --rate 200 --duration 10 \
        --body '{"user_id": "u0001", "k": 10}'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import numpy as np

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadResult:
    target_rate: float
    achieved_rate: float
    sent: int
    completed: int
    errors: int
    status_counts: dict[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    duration_s: float
    generator_cpu_s: float

    def summary(self) -> str:
        return (
            f"rate {self.achieved_rate:.0f}/{self.target_rate:.0f} req/s, p50 {self.p50_ms:.2f} ms, "
            f"p95 {self.p95_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, errors {self.errors}/{self.sent}"
        )


def _request_bytes(method: str, host: str, port: int, path: str, body: bytes | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


async def _read_response(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _run_async(
    url: str, bodies: list[bytes | None], rate: float, count: int, max_conns: int, timeout_s: float, start_at: float
) -> tuple[list[float], list[int]]:
    u = urlparse(url)
    host, port, path = u.hostname or "127.0.0.1", u.port or 80, u.path or "/"
    method = "POST" if bodies[0] is not None else "GET"
    payloads = [_request_bytes(method, host, port, path, b) for b in bodies]
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = 0
    lat = [float("nan")] * count
    status = [0] * count
    loop = asyncio.get_running_loop()
    # Wall-clock start shared by all processes, mapped onto this loop's clock.
    t0 = loop.time() + max(0.0, start_at - time.time())

    async def get_conn() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal opened
        if idle.empty() and opened < max_conns:
            opened += 1
            return await asyncio.open_connection(host, port)
        return await idle.get()

    async def one(i: int, scheduled: float) -> None:
        conn = None
        try:
            conn = await asyncio.wait_for(get_conn(), timeout_s)
            reader, writer = conn
            writer.write(payloads[i % len(payloads)])
            status[i] = await asyncio.wait_for(_read_response(reader), timeout_s)
            lat[i] = loop.time() - scheduled
            idle.put_nowait(conn)
        except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
            status[i] = -1
            lat[i] = loop.time() - scheduled
            if conn is not None:
                conn[1].close()

    tasks = []
    for i in range(count):
        scheduled = t0 + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait()[1].close()
    return lat, status


def _worker(args: tuple) -> tuple[list[float], list[int], float]:
    url, bodies, rate, count, max_conns, timeout_s, start_at = args
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    cpu0 = time.process_time()
    lat, status = asyncio.run(_run_async(url, bodies, rate, count, max_conns, timeout_s, start_at))
    return lat, status, time.process_time() - cpu0


def run_load(
    url: str,
    bodies: list[dict] | None = None,
    rate: float = 100.0,
    duration_s: float = 10.0,
    max_requests: int = 100_000,
    processes: int = 1,
    max_conns: int = 64,
    timeout_s: float = 5.0,
) -> LoadResult:
    """Send ``rate`` req/s for ``duration_s`` (at most ``max_requests``) and report latency from schedule."""
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"load tests only target loopback addresses, not {host!r}")
    count = min(int(rate * duration_s), max_requests)
    encoded: list[bytes | None] = [json.dumps(b).encode() for b in bodies] if bodies else [None]
    per = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
    start_at = time.time() + 0.3 + 0.1 * processes
    jobs = [
        (url, encoded[i::processes] or encoded, rate / processes, n, max_conns, timeout_s, start_at)
        for i, n in enumerate(per)
        if n
    ]
    wall0 = time.time()
    if processes == 1:
        outs = [_worker(jobs[0])]
    else:
        with mp.get_context("spawn").Pool(processes) as pool:
            outs = pool.map(_worker, jobs)
    wall = time.time() - max(wall0, start_at)
    lat = np.concatenate([np.asarray(o[0]) for o in outs]) * 1e3
    status = np.concatenate([np.asarray(o[1]) for o in outs])
    ok = (status >= 200) & (status < 400)
    good = lat[ok] if ok.any() else np.array([np.nan])
    codes, counts = np.unique(status, return_counts=True)
    return LoadResult(
        target_rate=rate,
        achieved_rate=float(ok.sum() / wall) if wall > 0 else 0.0,
        sent=len(status),
        completed=int(ok.sum()),
        errors=int((~ok).sum()),
        status_counts={str(int(c)): int(n) for c, n in zip(codes, counts, strict=True)},
        p50_ms=float(np.percentile(good, 50)),
        p95_ms=float(np.percentile(good, 95)),
        p99_ms=float(np.percentile(good, 99)),
        max_ms=float(np.max(good)),
        duration_s=wall,
        generator_cpu_s=float(sum(o[2] for o in outs)),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=100_000)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--body", help="JSON body (POST); omit for GET")
    args = ap.parse_args()
    bodies = [json.loads(args.body)] if args.body else None
    res = run_load(args.url, bodies, args.rate, args.duration, args.max_requests, args.processes)
    print(res.summary())
    print(json.dumps(asdict(res), indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
