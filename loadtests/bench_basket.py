"""Basket family benchmark: cost per user of CASE at 64, 256 and 1,024 candidate items per user.

    .venv/bin/python -m loadtests.bench_basket [--batch 32] [--seconds 12] [--config reference|demo]

The model is CASE exported to ONNX with ``models.basket.export.export_case`` (random weights:
the cost does not depend on their values) and run with one ONNX Runtime thread, as the service
does. Each user has exactly ``n`` real candidates, all repeat items with purchases spread over the
364-day window, built by ``models.basket.features.build_batch_inputs`` (the serving code), so the
table separates the input building from the graph.

Why these sizes: the induced set attention blocks let ``n_inducing`` (32) learned points attend to
the n candidates and the candidates attend back, O(n * 32) per block instead of O(n^2) for full
self-attention, and every other layer is per candidate. The per-user cost should therefore grow
about linearly: 16x from 64 to 1,024 items at most (less where per-user fixed costs still count).
The report gives the ratio of each cost to the 64-item cost, next to the ratio of item counts.

Writes var/bench/basket.json and var/bench/basket.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from feature_store.config import REPO_ROOT

SIZES: tuple[int, ...] = (64, 256, 1024)
OUT_DIR = REPO_ROOT / "var" / "bench"


def _model(config: str, n_items: int) -> Any:
    import torch

    from models.basket.model import CASE, CASEConfig

    torch.manual_seed(0)
    if config == "reference":  # the served CASE shape (models.basket.model defaults)
        cfg = CASEConfig(n_items=n_items)
    elif config == "demo":  # the small demo model (models.basket.pipeline.DEMO)
        from models.basket.pipeline import DEMO

        cfg = CASEConfig(
            n_items=n_items,
            temporal_dim=DEMO.temporal_dim,
            item_dim=DEMO.item_dim,
            set_dim=DEMO.set_dim,
            n_heads=DEMO.n_heads,
            n_inducing=DEMO.n_inducing,
            n_isab=DEMO.n_isab,
            pma_heads=DEMO.pma_heads,
        )
    else:
        raise ValueError(f"config must be reference or demo, got {config!r}")
    return CASE(cfg).eval()


def _histories(n_users: int, n_candidates: int, n_items: int, as_of_day: int, seed: int) -> list[list[tuple[str, int]]]:
    """``n_users`` histories of exactly ``n_candidates`` distinct items, 1-6 purchase days each inside the window."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_users):
        items = rng.choice(np.arange(1, n_items + 1), size=n_candidates, replace=False)
        hist: list[tuple[str, int]] = []
        for item in items.tolist():
            for d in rng.integers(as_of_day - 364, as_of_day, size=int(rng.integers(1, 7))).tolist():
                hist.append((f"i{item}", int(d)))
        out.append(hist)
    return out


def _interleaved(calls: dict[int, Any], min_seconds: float, min_rounds: int = 5) -> dict[int, tuple[float, int]]:
    """Median seconds per call of each size, timed in interleaved rounds (64, 256, 1024, 64, ...).

    Interleaving makes load from other processes on the machine hit every size alike, so the ratios
    between sizes stay meaningful on a shared machine (one warm-up call each first).
    """
    for fn in calls.values():
        fn()
    times: dict[int, list[float]] = {n: [] for n in calls}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or time.perf_counter() - start < min_seconds:
        for n, fn in calls.items():
            t = time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - t)
        rounds += 1
    return {n: (statistics.median(ts), len(ts)) for n, ts in times.items()}


def run(batch: int = 32, seconds: float = 12.0, config: str = "reference", n_items: int = 12_000) -> dict[str, Any]:
    import torch

    from models.basket.export import export_case
    from models.basket.features import build_batch_inputs
    from models.onnx_runtime import inference_session

    torch.set_num_threads(1)
    as_of_day = 20_000
    item_index = [""] + [f"i{i}" for i in range(1, n_items + 1)]
    mapping = {item: i for i, item in enumerate(item_index) if i}
    model = _model(config, n_items)
    builders: dict[int, Any] = {}
    runners: dict[int, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_case(model, item_index, Path(tmp))
        session = inference_session(Path(tmp) / "model.onnx", 1)
        for n in SIZES:
            histories = _histories(batch, n, n_items, as_of_day, seed=n)

            def build(h: list[list[tuple[str, int]]] = histories) -> tuple[np.ndarray, ...]:
                days, ids, mask, _ = build_batch_inputs(h, as_of_day, mapping, max_items=1024)
                return days, ids, mask

            days, ids, mask = build()
            assert days.shape == (batch, n, 364) and int(mask.sum()) == batch * n
            feeds = {"purchase_days": days, "item_ids": ids, "item_mask": mask}
            builders[n] = build
            runners[n] = lambda f=feeds: session.run(["scores"], f)
        onnx = _interleaved(runners, seconds)
        features = _interleaved(builders, seconds / 3)
    rows: list[dict[str, Any]] = []
    for n in SIZES:
        onnx_s, onnx_reps = onnx[n]
        build_s, build_reps = features[n]
        rows.append(
            {
                "items_per_user": n,
                "batch_users": batch,
                "onnx_ms_per_user": 1000 * onnx_s / batch,
                "features_ms_per_user": 1000 * build_s / batch,
                "total_ms_per_user": 1000 * (onnx_s + build_s) / batch,
                "onnx_users_per_s": batch / onnx_s,
                "total_users_per_s": batch / (onnx_s + build_s),
                "onnx_calls_timed": onnx_reps,
                "feature_builds_timed": build_reps,
            }
        )
        print(f"  {n:5d} items: {rows[-1]['onnx_ms_per_user']:.2f} ms/user (onnx)", flush=True)
    base = rows[0]
    for r in rows:
        r["items_ratio"] = r["items_per_user"] / base["items_per_user"]
        r["onnx_cost_ratio"] = r["onnx_ms_per_user"] / base["onnx_ms_per_user"]
        r["total_cost_ratio"] = r["total_ms_per_user"] / base["total_ms_per_user"]
        # Per-candidate cost relative to 64 items: ~1 (or below) = linear, ~items_ratio = quadratic.
        r["onnx_cost_per_item_ratio"] = r["onnx_cost_ratio"] / r["items_ratio"]
    cfg = model.cfg
    return {
        "config": config,
        "model": {
            "set_dim": cfg.set_dim,
            "n_isab": cfg.n_isab,
            "n_inducing": cfg.n_inducing,
            "n_heads": cfg.n_heads,
            "horizon": cfg.horizon,
            "n_items": n_items,
        },
        "onnx_threads": 1,
        "batch_users": batch,
        "min_seconds_timed": seconds,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["model"]
    lines = [
        "# Basket (CASE) cost per user",
        "",
        f"CASE `{result['config']}` config (set width {m['set_dim']}, {m['n_isab']} ISAB blocks x {m['n_inducing']} "
        f"inducing points, horizon {m['horizon']} days, {m['n_items']} catalogue items), ONNX Runtime with "
        f"{result['onnx_threads']} thread, batches of {result['batch_users']} users, medians of interleaved rounds "
        f"(at least {result['min_seconds_timed']} s of ONNX calls in all). "
        "Features = `build_batch_inputs` (the serving code).",
        "",
        "| items/user | ONNX ms/user | features ms/user | total ms/user | users/s (ONNX) | users/s (total) "
        "| items ratio | ONNX cost ratio | total cost ratio | ONNX cost per item vs 64 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['items_per_user']} | {r['onnx_ms_per_user']:.2f} | {r['features_ms_per_user']:.2f} "
            f"| {r['total_ms_per_user']:.2f} | {r['onnx_users_per_s']:.0f} | {r['total_users_per_s']:.0f} "
            f"| {r['items_ratio']:.0f}x | {r['onnx_cost_ratio']:.1f}x | {r['total_cost_ratio']:.1f}x "
            f"| {r['onnx_cost_per_item_ratio']:.2f} |"
        )
    lines += [
        "",
        "Linear growth means the cost ratio tracks the items ratio (per-item ratio about 1 or below); "
        "quadratic growth would make the per-item ratio grow with the items ratio (4x at 256, 16x at 1,024).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="users per ONNX call")
    parser.add_argument("--seconds", type=float, default=12.0, help="minimum ONNX timing, all sizes together")
    parser.add_argument("--config", choices=("reference", "demo"), default="reference")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    print(f"basket bench: CASE {args.config}, batch {args.batch}, sizes {SIZES}", flush=True)
    result = run(args.batch, args.seconds, args.config)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "basket.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (args.out_dir / "basket.md").write_text(md)
    print(md)
    print(f"wrote {args.out_dir / 'basket.json'} and basket.md in {result['wall_seconds']} s")


if __name__ == "__main__":
    main()
