"""CTR ranker benchmark (`make bench-ctr`, part of `make bench`).

In one run, on the demo's registered ranker (``ctr-ssr@champion``; a 2,000-user demo is built into
a temporary directory when ``RECSYS_DATA_DIR`` has none):

1. **Graph only**: scored candidates per second at 100 and 1,000 candidates per call, ONNX Runtime
   against torch eager on the same rows and the same calibrated model, one thread each (the
   baseline is torch, measured in the same process).
2. **Service**: the real ``/v1/score`` process (features read at the pinned versions, rows
   assembled and encoded, one ONNX call per request): candidates per second at 100 and 1,000
   candidates per request, closed loop with 4 concurrent clients; and p99 latency at 200 candidates
   per request in an open loop at half of the rate the closed loop sustained.

Writes var/bench/ctr.json and var/bench/ctr.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from feature_store.config import REPO_ROOT, FeatureStoreSettings
from loadtests.bench_sequential import _demo_data_dir, _free_port, _wait_ready
from loadtests.openloop import run_load
from services.commands import service_command

CONTEXT = {"hour_bucket": "evening", "weekday": "fri", "device": "mobile", "surface": "home"}


def graph_bench(artifact_dir: Path, sizes: tuple[int, ...] = (100, 1000), repeats: int = 60) -> list[dict]:
    """ONNX Runtime vs torch eager on the same calibrated model (the artifact's torch checkpoint)."""
    import torch

    from models.ctr.export import OnnxCTRScorer
    from models.ctr.model import CalibratedCTR, load_checkpoint
    from models.ctr.pipeline import CHECKPOINT_FILE

    scorer = OnnxCTRScorer(artifact_dir, intra_op_num_threads=1)
    model, blob = load_checkpoint(artifact_dir / CHECKPOINT_FILE)
    cal = blob.get("calibration") or {}
    torch_model = CalibratedCTR(model, cal.get("scale", 1.0), cal.get("bias", 0.0)).eval()
    spec = scorer.spec
    rng = np.random.default_rng(0)
    out = []
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for n in sizes:
            ids = np.stack([rng.integers(f.offset, f.offset + f.size, n) for f in spec.categorical], axis=1)
            t_ids = torch.from_numpy(ids)
            with torch.no_grad():
                ref = torch_model(t_ids).numpy()
            np.testing.assert_allclose(scorer.predict_encoded(ids), ref, atol=1e-5)
            timings: dict[str, list[float]] = {"onnxruntime": [], "torch": []}
            for i in range(repeats + 5):
                t0 = time.perf_counter()
                scorer.predict_encoded(ids)
                t1 = time.perf_counter()
                with torch.no_grad():
                    torch_model(t_ids)
                t2 = time.perf_counter()
                if i >= 5:
                    timings["onnxruntime"].append(t1 - t0)
                    timings["torch"].append(t2 - t1)
            ort, eager = float(np.median(timings["onnxruntime"])), float(np.median(timings["torch"]))
            out.append(
                {
                    "candidates": n,
                    "onnxruntime_ms": ort * 1e3,
                    "torch_ms": eager * 1e3,
                    "onnxruntime_candidates_per_s": n / ort,
                    "torch_candidates_per_s": n / eager,
                    "speedup": eager / ort,
                }
            )
            print(f"  graph, {n} candidates: ORT {ort * 1e3:.3f} ms, torch {eager * 1e3:.3f} ms", flush=True)
    finally:
        torch.set_num_threads(prev)
    return out


async def _closed_loop(url: str, bodies: list[dict], seconds: float, clients: int) -> dict:
    done, errors = 0, 0
    lat: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(k: int) -> None:
        nonlocal done, errors
        async with httpx.AsyncClient(timeout=10) as c:
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await c.post(url, json=bodies[i % len(bodies)])
                lat.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    done += 1
                else:
                    errors += 1
                i += clients

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - t0
    return {"requests_per_s": done / wall, "errors": errors, "p50_ms": float(np.percentile(lat, 50) * 1e3)}


def service_bench(data_dir: Path, duration: float) -> dict:
    env = {**os.environ, "RECSYS_DATA_DIR": str(data_dir), "RECSYS_ONLINE_STORE": "sqlite"}
    for var in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(var, None)
    offline = data_dir / "offline"
    users = pd.read_parquet(offline / "user_profile" / "v1.parquet", columns=["user_id"])["user_id"].tolist()
    items = pd.read_parquet(offline / "item_features" / "v1.parquet", columns=["item_id"])["item_id"].tolist()
    rng = np.random.default_rng(0)

    def bodies(n: int) -> list[dict]:
        return [
            {
                "user_id": users[i % len(users)],
                "candidates": rng.choice(items, n, replace=False).tolist(),
                "context": CONTEXT,
            }
            for i in range(200)
        ]

    import subprocess
    import sys

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", *service_command("ctr", "127.0.0.1", port)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1/score"
    out: dict = {"closed_loop": []}
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", proc, timeout=120)
        for b in bodies(100)[:20]:
            httpx.post(url, json=b)
        for n in (100, 1000):
            r = asyncio.run(_closed_loop(url, bodies(n), duration, clients=4))
            r |= {"candidates": n, "candidates_per_s": r["requests_per_s"] * n}
            out["closed_loop"].append(r)
            print(
                f"  service, {n} candidates/request: {r['requests_per_s']:.0f} req/s "
                f"= {r['candidates_per_s']:.0f} candidates/s",
                flush=True,
            )
        cap = asyncio.run(_closed_loop(url, bodies(200), duration, clients=4))
        rate = max(cap["requests_per_s"] / 2, 1.0)
        load = run_load(url, bodies(200), rate=rate, duration_s=duration)
        out["p99_at_200"] = {"capacity_req_s": cap["requests_per_s"], **asdict(load)}
        print(f"  service, 200 candidates at {rate:.0f} req/s (half capacity): {load.summary()}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return out


def to_markdown(res: dict) -> str:
    lines = [
        "# CTR ranker benchmark",
        "",
        f"Model `{res['model']}`; one thread each; torch eager runs the same calibrated model "
        "(the artifact's checkpoint).",
        "",
        "| candidates per call | ONNX Runtime ms | torch eager ms | ORT candidates/s | torch candidates/s "
        "| ORT / torch |",
        "|---|---|---|---|---|---|",
    ]
    for g in res["graph"]:
        lines.append(
            f"| {g['candidates']} | {g['onnxruntime_ms']:.3f} | {g['torch_ms']:.3f} | "
            f"{g['onnxruntime_candidates_per_s']:,.0f} | {g['torch_candidates_per_s']:,.0f} | {g['speedup']:.2f}x |"
        )
    lines += [
        "",
        "| service, candidates per request | req/s (4 clients) | candidates/s | p50 ms |",
        "|---|---|---|---|",
    ]
    for c in res["service"]["closed_loop"]:
        lines.append(
            f"| {c['candidates']} | {c['requests_per_s']:.0f} | {c['candidates_per_s']:,.0f} | {c['p50_ms']:.2f} |"
        )
    p = res["service"]["p99_at_200"]
    lines += [
        "",
        f"`/v1/score` with 200 candidates, open loop at {p['target_rate']:.0f} req/s (half of the "
        f"{p['capacity_req_s']:.0f} req/s closed-loop capacity): p50 {p['p50_ms']:.2f} ms, "
        f"p99 {p['p99_ms']:.2f} ms, errors {p['errors']}/{p['sent']}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "var" / "bench")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = _demo_data_dir(tmp)
        from models.registry import ModelRegistry

        mv = ModelRegistry.from_settings(FeatureStoreSettings(data_dir=data_dir)).resolve("ctr-ssr", "champion")
        res: dict = {"model": f"ctr-ssr@v{mv.manifest.version}"}
        print("[graph] ONNX Runtime vs torch eager ...", flush=True)
        res["graph"] = graph_bench(Path(mv.path))
        print("[service] /v1/score ...", flush=True)
        res["service"] = service_bench(data_dir, args.duration)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ctr.json").write_text(json.dumps(res, indent=2))
    md = to_markdown(res)
    (args.out / "ctr.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
