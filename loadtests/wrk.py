"""Closed-loop throughput with `wrk` (Debian package ``wrk``; ``make bench`` installs it).

A single-process Python client tops out near 250 req/s here, below what the services can take,
so maximum throughput is measured with wrk (C, epoll) and a Lua script that rotates request
bodies over many users. Latency at a *fixed* rate is the open-loop generator's job
(``loadtests/openloop.py``); wrk's closed loop is only for "how many requests per second at most".

    python -m loadtests.wrk --url http://127.0.0.1:8000/v1/recommendations \
        --bodies '[{"user_id": "u1", "surface": "home", "k": 10}]' --duration 10
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from loadtests.openloop import LOOPBACK

# Rotates over the bodies (a counter per wrk thread). No response() callback: defining one makes
# wrk parse every body, which costs the generator CPU the server under test needs.
_LUA = """
local bodies = {}
local n = 0
local i = 0
function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    bodies[n] = line
  end
end
function request()
  i = i % n + 1
  return wrk.format("METHOD", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
"""


@dataclass
class WrkResult:
    url: str
    connections: int
    threads: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    def summary(self) -> str:
        return (
            f"{self.rps:.0f} req/s over {self.connections} connections, p50 {self.p50_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms, non-2xx {self.non_2xx}, socket errors {self.socket_errors}"
        )


def available() -> bool:
    return shutil.which("wrk") is not None


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse_output(text: str) -> dict[str, float]:
    """The numbers of a ``wrk --latency`` report (raises ValueError when a line is missing)."""
    out: dict[str, float] = {}
    for pct, key in (("50", "p50_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if not m:
            raise ValueError(f"no {pct}% latency line in wrk output:\n{text}")
        out[key] = _ms(m.group(1), m.group(2))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(ms|s|m)", text, re.M)
    if not m:
        raise ValueError(f"no request count in wrk output:\n{text}")
    out["requests"] = float(m.group(1))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not m:
        raise ValueError(f"no Requests/sec in wrk output:\n{text}")
    out["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = float(sum(int(g) for g in m.groups())) if m else 0.0
    return out


def run_wrk(
    url: str,
    bodies: list[dict] | None = None,
    duration: float = 10.0,
    connections: int = 32,
    threads: int = 1,
    timeout_s: float = 5.0,
) -> WrkResult:
    """Saturate ``url`` (POST with rotating JSON ``bodies``, or GET without) for ``duration`` seconds."""
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"load tests target loopback only, not {host!r}")
    if not available():
        raise RuntimeError("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    method = "POST" if bodies else "GET"
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bodies.lua"
        script.write_text(_LUA.replace("METHOD", method))
        data = Path(tmp) / "bodies.jsonl"
        data.write_text("\n".join(json.dumps(b, separators=(",", ":")) for b in (bodies or [{}])) + "\n")
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={timeout_s:g}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            str(data),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    nums = parse_output(proc.stdout)
    return WrkResult(
        url=url,
        connections=connections,
        threads=threads,
        duration_s=duration,
        requests=int(nums["requests"]),
        rps=nums["rps"],
        p50_ms=nums["p50_ms"],
        p90_ms=nums["p90_ms"],
        p99_ms=nums["p99_ms"],
        non_2xx=int(nums["non_2xx"]),
        socket_errors=int(nums["socket_errors"]),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--bodies", default=None, help="JSON list of request bodies (POST); none = GET")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    bodies = json.loads(args.bodies) if args.bodies else None
    res = run_wrk(args.url, bodies, args.duration, args.connections, args.threads)
    print(res.summary())
    print(json.dumps(asdict(res), indent=1))


if __name__ == "__main__":
    main()
