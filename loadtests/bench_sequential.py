"""Sequential family benchmarks, in one run (`make bench-sequential`, part of `make bench`).

1. Inference: ONNX Runtime vs torch eager for the exported graph (scoring + top-k inside),
   batch 1 and 64, one thread each, same weights.
2. Service: cold start of `services.sequential.app` to ready (process spawn -> /readyz 200), then
   an open-loop sweep of fixed arrival rates against POST /v1/recommend (loopback only), with a
   bare FastAPI hello endpoint at the top rate as the generator/HTTP ceiling check.

The service runs over a demo data dir: $RECSYS_DATA_DIR if it holds a registered `seq-lte`,
else a fresh `recsys demo build --users 2000` in a temporary directory.
Writes var/bench/sequential.{json,md}.
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

from feature_store.config import REPO_ROOT, FeatureStoreSettings
from loadtests.openloop import run_load

HELLO_APP = "loadtests.hello:app"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def inference_bench(n_items: int = 2000, lte_dim: int = 64, iters: int = 300) -> dict:
    import onnxruntime as ort
    import torch

    from models.onnx_runtime import session_options
    from models.sequential.export import export_model
    from models.sequential.model import SASRec, SASRecConfig, exportable

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = SASRecConfig(n_items=n_items, lte_dim=lte_dim, variant="avg")
    model = SASRec(cfg).eval()
    wrapper = exportable(model, 100)
    out: dict = {"n_items": n_items, "max_len": cfg.max_len, "hidden": cfg.hidden, "blocks": cfg.n_blocks}
    with tempfile.TemporaryDirectory() as tmp:
        export_model(model, tmp, [""] + [f"i{i}" for i in range(n_items)])
        sess = ort.InferenceSession(
            f"{tmp}/model.onnx", sess_options=session_options(1), providers=["CPUExecutionProvider"]
        )
        rng = np.random.default_rng(0)
        for batch in (1, 64):
            seq = rng.integers(1, n_items + 1, (batch, cfg.max_len)).astype(np.int64)
            lte = rng.standard_normal((batch, lte_dim)).astype(np.float32)
            exc = np.zeros((batch, n_items + 1), dtype=bool)
            exc[:, 0] = True
            feeds = {"item_seq": seq, "lte": lte, "exclude": exc}
            t_seq, t_lte, t_exc = torch.from_numpy(seq), torch.from_numpy(lte), torch.from_numpy(exc)
            n = iters if batch == 1 else max(iters // 5, 20)
            with torch.no_grad():
                for _ in range(10):
                    wrapper(t_seq, t_lte, t_exc)
                    sess.run(None, feeds)
                tt, to = [], []
                for _ in range(n):  # interleaved so noise hits both alike
                    t = time.perf_counter()
                    wrapper(t_seq, t_lte, t_exc)
                    tt.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    sess.run(None, feeds)
                    to.append(time.perf_counter() - t)
            torch_ms, ort_ms = float(np.median(tt) * 1e3), float(np.median(to) * 1e3)
            out[f"batch_{batch}"] = {"torch_ms": torch_ms, "onnx_ms": ort_ms, "speedup": torch_ms / ort_ms}
        out["threads"] = _thread_bench(f"{tmp}/model.onnx", feeds, max(iters // 5, 20))
    return out


def _hog() -> None:
    while True:
        pass


def _thread_bench(onnx_path: str, feeds: dict, n: int) -> dict:
    """ORT intra-op threads 1 vs 2 at batch 64, alone and with another process busy on a core."""
    import multiprocessing as mp

    import onnxruntime as ort

    from models.onnx_runtime import session_options

    res: dict = {}
    sessions = {
        t: ort.InferenceSession(onnx_path, session_options(t), providers=["CPUExecutionProvider"]) for t in (1, 2)
    }
    for label in ("idle", "other_core_busy"):
        hog = None
        if label == "other_core_busy":
            hog = mp.get_context("spawn").Process(target=_hog, daemon=True)
            hog.start()
            time.sleep(0.5)
        try:
            for t, sess in sessions.items():
                for _ in range(5):
                    sess.run(None, feeds)
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    sess.run(None, feeds)
                    times.append(time.perf_counter() - t0)
                res[f"{label}_threads_{t}_ms"] = float(np.median(times) * 1e3)
                res[f"{label}_threads_{t}_p99_ms"] = float(np.percentile(times, 99) * 1e3)
        finally:
            if hog is not None:
                hog.terminate()
                hog.join()
    return res


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return time.perf_counter() - t0
        except httpx.TransportError:
            pass
        time.sleep(0.01)
    raise RuntimeError("service did not become ready")


def _spawn(app: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    factory = ["--factory"] if app.endswith("app_factory") else []
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            *factory,
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _demo_data_dir(tmp: str) -> Path:
    settings = FeatureStoreSettings()
    if (settings.data_dir / "registry.db").exists():
        return settings.data_dir
    data_dir = Path(tmp) / "demo"
    env = {**os.environ, "RECSYS_DATA_DIR": str(data_dir)}
    print("[service] building a 2,000-user demo to serve ...", flush=True)
    subprocess.run(
        [str(Path(sys.executable).parent / "recsys"), "demo", "build", "--users", "2000"],
        env=env,
        cwd=REPO_ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return data_dir


def service_bench(rates: list[float], duration: float) -> dict:
    import pandas as pd

    out: dict = {"rates": []}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = _demo_data_dir(tmp)
        env = {**os.environ, "RECSYS_DATA_DIR": str(data_dir), "RECSYS_ONLINE_STORE": "sqlite"}
        env.pop("REDIS_URL", None)
        frame = pd.read_parquet(data_dir / "offline" / "recent_items" / "v1.parquet", columns=["user_id"])
        users = frame["user_id"].drop_duplicates().sample(frac=1.0, random_state=0).tolist()[:2000]
        bodies = [{"user_id": u, "k": 10} for u in users]
        colds = []
        for _ in range(3):
            port = _free_port()
            proc = _spawn("services.sequential.app:app_factory", port, env)
            try:
                colds.append(_wait_ready(f"http://127.0.0.1:{port}/readyz", proc))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        out["cold_start_s"] = {"min": min(colds), "median": float(np.median(colds)), "runs": colds}
        port = _free_port()
        proc = _spawn("services.sequential.app:app_factory", port, env)
        try:
            _wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
            url = f"http://127.0.0.1:{port}/v1/recommend"
            for b in bodies[:200]:
                httpx.post(url, json=b)
            for rate in rates:
                res = run_load(url, bodies, rate=rate, duration_s=duration, processes=1 if rate <= 400 else 2)
                print(f"[service] {res.summary()}", flush=True)
                out["rates"].append(asdict(res))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        # The same top rate against a bare hello endpoint: if the generator kept up there, it was
        # not what limited the service.
        port = _free_port()
        proc = _spawn(HELLO_APP, port, env)
        try:
            _wait_ready(f"http://127.0.0.1:{port}/hello", proc)
            res = run_load(f"http://127.0.0.1:{port}/hello", None, rate=max(rates), duration_s=duration, processes=2)
            print(f"[hello] {res.summary()}", flush=True)
            out["hello_at_top_rate"] = asdict(res)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    ok = [r for r in out["rates"] if r["errors"] == 0 and r["achieved_rate"] >= 0.95 * r["target_rate"]]
    out["max_sustained_rate"] = max((r["target_rate"] for r in ok), default=0.0)
    return out


def to_markdown(res: dict) -> str:
    inf = res["inference"]
    lines = [
        f"Sequential model (SASRec + LTE prefix, {inf['n_items']} items, max_len {inf['max_len']}, hidden "
        f"{inf['hidden']}, {inf['blocks']} blocks; scoring + top-100 in the graph; 1 thread):",
        "",
        "| batch | torch eager ms | ONNX Runtime ms | speed-up |",
        "|---|---|---|---|",
    ]
    for b in (1, 64):
        r = inf[f"batch_{b}"]
        lines.append(f"| {b} | {r['torch_ms']:.3f} | {r['onnx_ms']:.3f} | {r['speedup']:.1f}x |")
    th = inf["threads"]
    lines += [
        "",
        "ONNX Runtime intra-op threads at batch 64 (median / p99 ms):",
        "",
        "| | 1 thread | 2 threads |",
        "|---|---|---|",
    ]
    for label in ("idle", "other_core_busy"):
        one = f"{th[f'{label}_threads_1_ms']:.2f} / {th[f'{label}_threads_1_p99_ms']:.2f}"
        two = f"{th[f'{label}_threads_2_ms']:.2f} / {th[f'{label}_threads_2_p99_ms']:.2f}"
        lines.append(f"| {label.replace('_', ' ')} | {one} | {two} |")
    svc = res["service"]
    cs = svc["cold_start_s"]
    lines += [
        "",
        f"Service cold start to ready (spawn -> /readyz 200, model loaded): median {cs['median']:.2f} s "
        f"(min {cs['min']:.2f} s, 3 runs).",
        "",
        "| target req/s | achieved | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in svc["rates"]:
        lines.append(
            f"| {r['target_rate']:.0f} | {r['achieved_rate']:.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['errors']} |"
        )
    h = svc["hello_at_top_rate"]
    lines += [
        "",
        f"Highest rate sustained without errors: {svc['max_sustained_rate']:.0f} req/s (1 uvicorn worker). "
        f"Generator check, bare hello at {h['target_rate']:.0f} req/s: achieved {h['achieved_rate']:.0f}, "
        f"p99 {h['p99_ms']:.2f} ms.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="50,100,200,400,800,1200,1600")
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "var" / "bench")
    args = ap.parse_args()
    print("[inference] ONNX Runtime vs torch eager ...", flush=True)
    res = {"inference": inference_bench()}
    print(json.dumps(res["inference"], indent=1), flush=True)
    res["service"] = service_bench([float(r) for r in args.rates.split(",")], args.duration)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sequential.json").write_text(json.dumps(res, indent=2))
    md = to_markdown(res)
    (args.out / "sequential.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
