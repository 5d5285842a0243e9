"""Gateway cost and topology comparison, in ONE run (`make bench-gateway`, part of `make bench`).

Targets (each one uvicorn worker, real processes on loopback):
  hello       a bare FastAPI endpoint: the HTTP ceiling
  service     the sequential service directly (POST /v1/recommend)
  gateway     the gateway in microservice mode -> the service over pooled HTTP
  embedded    gateway + service in one process, in-process calls
  embedded_unbatched  the same with RECSYS_BATCHING=false (micro-batching off), for a same-run
              before/after of services/kit/batching.py

For each: an open-loop sweep of fixed arrival rates (latency from scheduled send time) and the
highest rate sustained (>= 95% achieved, no errors). Gateway cost: median latency added by the
hop at low load, and CPU seconds per request of the gateway process vs the service process at the
top sustained rate, read from the processes' own CPU time (on 2 shared cores, raw throughput through
two processes says little).

Capacity (needs ``wrk``; ``make bench-deps``): closed-loop throughput with 32 connections, the
targets measured in turn for several short rounds and the median kept, so machine noise (other
jobs on the 2 cores) hits every target alike. The sweep's "highest rate sustained" stops at the
first noisy step and at its top rate, so the embedded / hello ratio is read from capacity.
Writes var/bench/gateway.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
import psutil

from feature_store.config import REPO_ROOT
from loadtests import wrk
from loadtests.bench_sequential import _demo_data_dir, _free_port, _wait_ready
from loadtests.openloop import run_load
from services.commands import service_command


def _spawn(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *cmd, "--no-access-log"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _cpu(proc: subprocess.Popen) -> float:
    t = psutil.Process(proc.pid).cpu_times()
    return t.user + t.system


def _sweep(url: str, bodies: list[dict] | None, rates: list[float], duration: float) -> list[dict]:
    out = []
    for rate in rates:
        res = asdict(run_load(url, bodies, rate=rate, duration_s=duration, processes=1 if rate <= 400 else 2))
        print(
            f"  {url.rsplit('/', 2)[-2:]} {rate:>6.0f}/s -> {res['achieved_rate']:.0f}/s p50 {res['p50_ms']:.2f} "
            f"p99 {res['p99_ms']:.2f} err {res['errors']}",
            flush=True,
        )
        out.append(res)
        if res["errors"] or res["achieved_rate"] < 0.9 * rate:
            break  # saturated: higher rates only queue
    return out


def _serial(url: str, bodies: list[dict] | None, n: int = 400) -> dict:
    """One request at a time on one keep-alive connection, timed around each call: the low-load latency.

    The open-loop generator measures from each request's scheduled send time, and at a few requests
    per second asyncio's sleeps (epoll timeouts in whole milliseconds) add up to a millisecond of
    schedule slack to every sample; a serial client has no schedule, so the difference of two
    targets' medians is the hop itself.
    """
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    times = []
    try:
        for i in range(n + 20):
            body = None if bodies is None else json.dumps(bodies[i % len(bodies)]).encode()
            t0 = time.perf_counter()
            if body is None:
                conn.request("GET", u.path)
            else:
                conn.request("POST", u.path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if i >= 20:  # warm-up excluded
                times.append(time.perf_counter() - t0)
            if resp.status != 200:
                raise RuntimeError(f"{url}: {resp.status}")
            time.sleep(0.005)  # a few requests per 10 ms: every process idles between requests
    finally:
        conn.close()
    arr = np.array(times) * 1e3
    return {"n": n, "p50_ms": float(np.median(arr)), "p99_ms": float(np.percentile(arr, 99))}


def _max_sustained(runs: list[dict]) -> float:
    ok = [r["target_rate"] for r in runs if r["errors"] == 0 and r["achieved_rate"] >= 0.95 * r["target_rate"]]
    return max(ok, default=0.0)


def _capacity(urls: dict[str, tuple[str, list[dict] | None]], rounds: int, duration: float) -> dict:
    """Closed-loop req/s per target: ``rounds`` interleaved wrk runs, median kept."""
    runs: dict[str, list[dict]] = {name: [] for name in urls}
    for i in range(rounds):
        for name, (url, bodies) in urls.items():
            r = wrk.run_wrk(url, bodies, duration=duration, connections=32)
            print(f"  capacity round {i + 1}/{rounds} {name:>18}: {r.summary()}", flush=True)
            runs[name].append(asdict(r))
    out = {}
    for name, rs in runs.items():
        ok = [r for r in rs if r["non_2xx"] == 0 and r["socket_errors"] == 0]
        med = sorted(ok, key=lambda r: r["rps"])[len(ok) // 2] if ok else None
        out[name] = {
            "rps": med["rps"] if med else 0.0,
            "p50_ms": med["p50_ms"] if med else None,
            "p99_ms": med["p99_ms"] if med else None,
            "rounds": [r["rps"] for r in rs],
            "failed_rounds": len(rs) - len(ok),
        }
    return out


def run(rates: list[float], duration: float, low_rate: float, cap_rounds: int = 3, cap_duration: float = 4.0) -> dict:
    res: dict = {"targets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = _demo_data_dir(tmp)
        seq_port, gw_port, emb_port, hello_port, unb_port = (_free_port() for _ in range(5))
        env = {
            **os.environ,
            "RECSYS_DATA_DIR": str(data_dir),
            "RECSYS_ONLINE_STORE": "sqlite",
            "RECSYS_SERVICES": json.dumps({"sequential": f"http://127.0.0.1:{seq_port}"}),
            "RECSYS_EXPOSURE_LOG": str(Path(tmp) / "exposures.jsonl"),
        }
        env.pop("REDIS_URL", None)
        import pandas as pd

        users = pd.read_parquet(data_dir / "offline" / "recent_items" / "v1.parquet", columns=["user_id"])
        users = users["user_id"].drop_duplicates().sample(frac=1.0, random_state=0).tolist()[:2000]
        procs = {
            "hello": _spawn(
                [
                    "uvicorn",
                    "loadtests.hello:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(hello_port),
                    "--log-level",
                    "warning",
                ],
                env,
            ),
            "service": _spawn(service_command("sequential", "127.0.0.1", seq_port), env),
            "gateway": _spawn(service_command("gateway", "127.0.0.1", gw_port), env),
            "embedded": _spawn(service_command("embedded", "127.0.0.1", emb_port), env),
            "embedded_unbatched": _spawn(
                service_command("embedded", "127.0.0.1", unb_port), {**env, "RECSYS_BATCHING": "false"}
            ),
        }
        urls = {
            "hello": (f"http://127.0.0.1:{hello_port}/hello", None),
            "service": (f"http://127.0.0.1:{seq_port}/v1/recommend", [{"user_id": u, "k": 10} for u in users]),
            "gateway": (
                f"http://127.0.0.1:{gw_port}/v1/recommendations",
                [{"user_id": u, "surface": "home", "k": 10} for u in users],
            ),
            "embedded": (
                f"http://127.0.0.1:{emb_port}/v1/recommendations",
                [{"user_id": u, "surface": "home", "k": 10} for u in users],
            ),
            "embedded_unbatched": (
                f"http://127.0.0.1:{unb_port}/v1/recommendations",
                [{"user_id": u, "surface": "home", "k": 10} for u in users],
            ),
        }
        try:
            for name, port in (
                ("hello", hello_port),
                ("service", seq_port),
                ("gateway", gw_port),
                ("embedded", emb_port),
                ("embedded_unbatched", unb_port),
            ):
                path = "/hello" if name == "hello" else "/readyz"
                _wait_ready(f"http://127.0.0.1:{port}{path}", procs[name], timeout=120)
            for url, bodies in urls.values():  # warm-up: caches, connections, first inference
                for b in (bodies or [None])[:100]:
                    httpx.post(url, json=b) if b else httpx.get(url)
            res["serial"] = {name: _serial(url, bodies) for name, (url, bodies) in urls.items()}
            for name, (url, bodies) in urls.items():
                if name == "embedded_unbatched":  # only its low-load latency and capacity
                    low = asdict(run_load(url, bodies, rate=low_rate, duration_s=duration))
                    res["targets"][name] = {"low_load": low, "sweep": [], "max_sustained_rate": None}
                    continue
                print(f"[{name}] low load {low_rate:.0f}/s, then sweep", flush=True)
                low = asdict(run_load(url, bodies, rate=low_rate, duration_s=duration))
                sweep = _sweep(url, bodies, rates, duration)
                res["targets"][name] = {"low_load": low, "sweep": sweep, "max_sustained_rate": _max_sustained(sweep)}
            # CPU per request through the gateway, at its top sustained rate: both processes' own CPU time.
            top = res["targets"]["gateway"]["max_sustained_rate"] or rates[0]
            url, bodies = urls["gateway"]
            c_gw, c_svc = _cpu(procs["gateway"]), _cpu(procs["service"])
            load = run_load(url, bodies, rate=top, duration_s=duration, processes=1 if top <= 400 else 2)
            d_gw, d_svc = _cpu(procs["gateway"]) - c_gw, _cpu(procs["service"]) - c_svc
            n = max(load.completed, 1)
            res["cpu_per_request"] = {
                "rate": top,
                "completed": load.completed,
                "gateway_ms": d_gw / n * 1e3,
                "service_ms": d_svc / n * 1e3,
                "ratio": (d_gw / d_svc) if d_svc else None,
                "generator_cpu_s": load.generator_cpu_s,
            }
            if wrk.available() and cap_rounds > 0:
                print(f"[capacity] wrk, 32 connections, {cap_rounds} rounds of {cap_duration:.0f} s", flush=True)
                res["capacity"] = _capacity(urls, cap_rounds, cap_duration)
                # The latency target: p99 at half the maximum rate (open loop, from the scheduled send time).
                res["half_capacity"] = {}
                for name in ("service", "gateway", "embedded"):
                    rate = res["capacity"][name]["rps"] / 2
                    url, bodies = urls[name]
                    load = run_load(url, bodies, rate=rate, duration_s=duration, processes=1 if rate <= 400 else 2)
                    res["half_capacity"][name] = asdict(load)
                    print(f"[half capacity] {name}: {load.summary()}", flush=True)
            else:
                print("[capacity] skipped: wrk is not installed (make bench-deps)", flush=True)
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                p.wait(timeout=10)
    t = res["targets"]
    cap = res.get("capacity")
    res["summary"] = {
        "gateway_hop_p50_ms": res["serial"]["gateway"]["p50_ms"] - res["serial"]["service"]["p50_ms"],
        "gateway_hop_open_loop_p50_ms": t["gateway"]["low_load"]["p50_ms"] - t["service"]["low_load"]["p50_ms"],
        "embedded_vs_hello": (t["embedded"]["max_sustained_rate"] / t["hello"]["max_sustained_rate"])
        if t["hello"]["max_sustained_rate"]
        else None,
        "service_vs_hello": (t["service"]["max_sustained_rate"] / t["hello"]["max_sustained_rate"])
        if t["hello"]["max_sustained_rate"]
        else None,
    }
    if cap and cap["hello"]["rps"]:
        hello = cap["hello"]["rps"]
        res["summary"]["capacity_vs_hello"] = {name: c["rps"] / hello for name, c in cap.items()}
        if cap["embedded_unbatched"]["rps"]:
            res["summary"]["batching_gain"] = cap["embedded"]["rps"] / cap["embedded_unbatched"]["rps"]
    return res


def to_markdown(res: dict) -> str:
    t = res["targets"]
    lines = [
        "| target | max sustained req/s | low-load p50 ms | low-load p99 ms |",
        "|---|---|---|---|",
    ]
    for name in ("hello", "service", "gateway", "embedded", "embedded_unbatched"):
        x = t[name]
        top = "-" if x["max_sustained_rate"] is None else f"{x['max_sustained_rate']:.0f}"
        lines.append(f"| {name} | {top} | {x['low_load']['p50_ms']:.2f} | {x['low_load']['p99_ms']:.2f} |")
    s, c = res["summary"], res["cpu_per_request"]
    ratio = f"{c['ratio']:.2f}" if c["ratio"] is not None else "n/a"
    lines += [
        "",
        "",
        "Serial requests (one at a time, 5 ms apart, timed around each call):",
        "",
        "| target | p50 ms | p99 ms |",
        "|---|---|---|",
        *[f"| {n} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} |" for n, v in res["serial"].items()],
        "",
        f"- Gateway hop at low load (serial medians): +{s['gateway_hop_p50_ms']:.2f} ms (target <= 1 ms); "
        f"from the open loop at {res['targets']['gateway']['low_load']['target_rate']:.0f} req/s: "
        f"+{s['gateway_hop_open_loop_p50_ms']:.2f} ms.",
        f"- CPU per request at {c['rate']:.0f} req/s: gateway {c['gateway_ms']:.2f} ms, "
        f"service {c['service_ms']:.2f} ms, ratio {ratio} (target <= 0.5).",
        f"- Embedded / hello ceiling (sweep): {s['embedded_vs_hello']:.2f}x; service / hello "
        f"{s['service_vs_hello']:.2f}x.",
    ]
    cap = res.get("capacity")
    if cap:
        ratio = s.get("capacity_vs_hello", {})
        lines += [
            "",
            "Capacity (wrk, 32 connections, median of interleaved rounds):",
            "",
            "| target | req/s | / hello | p50 ms | p99 ms | rounds req/s |",
            "|---|---|---|---|---|---|",
        ]
        for name, c in cap.items():
            rel = f"{ratio[name]:.2f}x" if name in ratio else "-"
            p50 = f"{c['p50_ms']:.2f}" if c["p50_ms"] is not None else "-"
            p99 = f"{c['p99_ms']:.2f}" if c["p99_ms"] is not None else "-"
            rounds = ", ".join(f"{x:.0f}" for x in c["rounds"])
            lines.append(f"| {name} | {c['rps']:.0f} | {rel} | {p50} | {p99} | {rounds} |")
        half = res.get("half_capacity") or {}
        if half:
            lines += ["", "At half of each target's capacity (open loop; target p99 <= 15 ms):", ""]
            lines += ["| target | offered req/s | achieved | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
            for name, h in half.items():
                lines.append(
                    f"| {name} | {h['target_rate']:.0f} | {h['achieved_rate']:.0f} | {h['p50_ms']:.2f} | "
                    f"{h['p99_ms']:.2f} | {h['errors']} |"
                )
        if "embedded" in ratio:
            gain = s.get("batching_gain")
            lines += [
                "",
                f"- Embedded / hello capacity: {ratio['embedded']:.2f}x (target >= 0.5x); micro-batching gain "
                + (f"{gain:.2f}x" if gain else "n/a")
                + " (embedded vs embedded_unbatched).",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="100,200,400,600,800,1200,1600")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--low-rate", type=float, default=20.0)
    ap.add_argument("--capacity-rounds", type=int, default=3, help="wrk rounds per target; 0 skips capacity")
    ap.add_argument("--capacity-duration", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "var" / "bench")
    args = ap.parse_args()
    res = run(
        [float(r) for r in args.rates.split(",")],
        args.duration,
        args.low_rate,
        args.capacity_rounds,
        args.capacity_duration,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gateway.json").write_text(json.dumps(res, indent=2))
    md = to_markdown(res)
    (args.out / "gateway.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
