"""Online feature read latency: the project's reader vs raw redis-py vs Feast's SDK, in one run.

    make bench-features            (or: python -m loadtests.bench_features --users 10000)

Starts a private redis-server on a free loopback port, builds one 64-d LTE version for N users
through Feast (apply + materialize), then times reads of 1 and 100 random users with:
  raw    redis-py HMGET (1) / a non-transactional pipeline of HMGETs (100) of the same keys and
         fields, no decoding: the floor any Redis reader pays;
  ours   feature_store.online (key building + HMGET + decoding to a float32 matrix);
  feast  FeatureStore.get_online_features (the response object, not converted to a dict).
Readers run interleaved in small blocks so machine noise hits all of them alike. The SQLite
store is measured the same way (ours vs Feast). Prints p50/p99 and ratios to raw Redis and
writes var/bench/features.{json,md}. Also reports import and start-up time of the reader.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store.config import REPO_ROOT, FeatureStoreSettings


def _percentiles(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(samples)}


def _start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    import socket

    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def _build(settings: FeatureStoreSettings, n_users: int, dim: int):
    from feature_store import feast_ops
    from feature_store.build import lte_fields, window_of, write_version

    rng = np.random.default_rng(0)
    as_of = pd.Timestamp("2024-06-01", tz="UTC")
    frame = pd.DataFrame(
        {
            "user_id": [f"user-{i}" for i in range(n_users)],
            "event_timestamp": [as_of] * n_users,
            "lte": list(rng.standard_normal((n_users, dim)).astype(np.float32)),
            "n_items": rng.integers(1, 100, n_users),
        }
    )
    spec = write_version(
        settings,
        view="lte_avg",
        entity="user",
        frame=frame,
        fields=lte_fields(dim),
        window=window_of(as_of.to_pydatetime(), timedelta(days=7), timedelta(days=365), None, None),
        dataset="bench",
    )
    store = feast_ops.get_store(settings)
    feast_ops.apply(settings, store)
    t0 = time.perf_counter()
    feast_ops.materialize(settings, spec.ref, store)
    return spec, store, time.perf_counter() - t0


def _measure(readers: dict[str, object], batches: list[list[str]], block: int = 20) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in readers}
    for start in range(0, len(batches), block):
        chunk = batches[start : start + block]
        for name, fn in readers.items():
            for ids in chunk:
                t = time.perf_counter()
                fn(ids)  # type: ignore[operator]
                times[name].append(time.perf_counter() - t)
    return times


def pit_comparison(n_rows: int = 10_000, n_users: int = 2_000, dim: int = 64) -> dict:
    """Point-in-time join of n_rows training examples: DuckDB offline store vs Feast's file store.

    Same version, same entity frame (a quarter of the rows timed before their user's first
    snapshot). Reports rows returned, whether input order survived, and time.
    """
    from feast import FeatureStore

    from feature_store import feast_ops
    from feature_store.build import lte_fields, window_of, write_version
    from feature_store.feast_defs import repo_config

    rng = np.random.default_rng(2)
    first = pd.Timestamp("2024-01-01", tz="UTC")
    snaps = [first + pd.Timedelta(days=30 * k) for k in range(10)]
    frame = pd.DataFrame(
        {
            "user_id": [f"user-{u}" for _ in snaps for u in range(n_users)],
            "event_timestamp": [t for t in snaps for _ in range(n_users)],
            "lte": list(rng.standard_normal((len(snaps) * n_users, dim)).astype(np.float32)),
            "n_items": rng.integers(1, 100, len(snaps) * n_users),
        }
    )
    users = rng.integers(0, n_users, n_rows)
    offsets = rng.integers(-90 * 86400, 300 * 86400, n_rows)
    entity_df = pd.DataFrame(
        {
            "user_id": [f"user-{u}" for u in users],
            "event_timestamp": (first + pd.to_timedelta(offsets, unit="s")).astype("datetime64[us, UTC]"),
            "row": np.arange(n_rows),
        }
    )
    out: dict = {"rows_in": n_rows, "rows_before_first_snapshot": int((offsets < 0).sum())}
    with tempfile.TemporaryDirectory() as tmp:
        settings = FeatureStoreSettings(data_dir=Path(tmp), project="pit", online_store="sqlite")
        spec = write_version(
            settings,
            view="lte_avg",
            entity="user",
            frame=frame,
            fields=lte_fields(dim),
            window=window_of(snaps[-1].to_pydatetime(), timedelta(days=7), timedelta(days=365), None, None),
            dataset="bench",
        )
        store = feast_ops.get_store(settings)
        feast_ops.apply(settings, store)
        feast_ops.historical_features(settings, entity_df.head(100), [spec.ref], store)  # warm-up
        t = time.perf_counter()
        res = feast_ops.historical_features(settings, entity_df, [spec.ref], store)
        out["duckdb"] = {
            "seconds": round(time.perf_counter() - t, 3),
            "rows_out": len(res),
            "order_kept": bool((res["row"].to_numpy() == np.arange(n_rows)).all()),
        }
        try:
            # The same repo and registry through Feast's default "file" offline store (Dask-based in 0.67).
            file_store = FeatureStore(config=repo_config(settings, offline_store="file"))
            t = time.perf_counter()
            df = entity_df.copy()
            df["event_timestamp"] = df["event_timestamp"].astype("datetime64[ns, UTC]")
            got = file_store.get_historical_features(entity_df=df, features=[f"{spec.feast_name}:lte"]).to_df()
            out["file"] = {
                "seconds": round(time.perf_counter() - t, 3),
                "rows_out": len(got),
                "order_kept": len(got) == n_rows and bool((got["row"].to_numpy() == np.arange(n_rows)).all()),
            }
        except Exception as exc:
            out["file"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


def _startup_times() -> dict[str, float]:
    code_reader = (
        "import time; t=time.perf_counter(); from feature_store.online import make_client; "
        "t1=time.perf_counter(); print(t1-t)"
    )
    code_feast = "import time; t=time.perf_counter(); import feast; print(time.perf_counter()-t)"
    out = {}
    for name, code in (("import_reader_s", code_reader), ("import_feast_s", code_feast)):
        vals = [float(subprocess.check_output([sys.executable, "-c", code], cwd=REPO_ROOT).strip()) for _ in range(3)]
        out[name] = min(vals)
    return out


def run(n_users: int, dim: int, iters_1: int, iters_100: int) -> dict:
    from feature_store.online import make_client
    from feature_store.online.redis import RedisOnlineReader

    results: dict = {"users": n_users, "dim": dim, "stores": {}}
    rng = np.random.default_rng(1)
    ids_all = [f"user-{i}" for i in range(n_users)]
    batches = {
        1: [[ids_all[j]] for j in rng.integers(0, n_users, iters_1)],
        100: [list(rng.choice(ids_all, 100, replace=False)) for _ in range(iters_100)],
    }
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = _start_redis(Path(tmp))
        try:
            for backend in ("redis", "sqlite"):
                settings = FeatureStoreSettings(
                    data_dir=Path(tmp) / backend,
                    project="bench",
                    online_store=backend,
                    redis_url=url if backend == "redis" else None,
                )
                print(f"[{backend}] building {n_users} users x {dim}-d LTE through Feast ...", flush=True)
                spec, store, mat_s = _build(settings, n_users, dim)
                t_start = time.perf_counter()
                client = make_client(settings)
                client.read("lte_avg@v1", ids_all[:1])
                first_read_s = time.perf_counter() - t_start
                feast_refs = [f"{spec.feast_name}:lte", f"{spec.feast_name}:n_items"]

                def ours(ids: list[str], client=client) -> None:
                    client.read("lte_avg@v1", ids)

                def feast_sdk(ids: list[str], store=store, refs=feast_refs) -> None:
                    store.get_online_features(features=refs, entity_rows=[{"user_id": e} for e in ids])

                readers: dict[str, object] = {"ours": ours, "feast": feast_sdk}
                if backend == "redis":
                    reader: RedisOnlineReader = client.reader  # type: ignore[assignment]
                    raw_client = reader.client
                    fields = reader._hash_fields(spec.feast_name, ("lte", "n_items"))
                    keys = {e: reader.keys("user_id", [e])[0] for e in ids_all}

                    def raw(ids: list[str], raw_client=raw_client, keys=keys, fields=fields) -> None:
                        if len(ids) == 1:
                            raw_client.hmget(keys[ids[0]], fields)
                            return
                        pipe = raw_client.pipeline(transaction=False)
                        for e in ids:
                            pipe.hmget(keys[e], fields)
                        pipe.execute()

                    readers = {"raw_redis": raw, **readers}
                # Warm-up: registry caches, connections.
                for fn in readers.values():
                    for ids in batches[100][:5] + batches[1][:20]:
                        fn(ids)  # type: ignore[operator]
                store_res: dict = {"materialize_s": round(mat_s, 2), "first_read_ms": round(first_read_s * 1e3, 2)}
                for size, bs in batches.items():
                    times = _measure(readers, bs)
                    stats = {name: _percentiles(t) for name, t in times.items()}
                    base = stats.get("raw_redis")
                    if base:
                        for s in stats.values():
                            s["p50_ratio_to_raw"] = s["p50_ms"] / base["p50_ms"]
                            s["p99_ratio_to_raw"] = s["p99_ms"] / base["p99_ms"]
                    store_res[f"{size}_entities"] = stats
                results["stores"][backend] = store_res
                client.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    results["startup"] = _startup_times()
    print("[pit] point-in-time join: DuckDB vs file offline store ...", flush=True)
    results["pit"] = pit_comparison()
    return results


def to_markdown(res: dict) -> str:
    lines = [
        f"Online reads of a {res['dim']}-d LTE + count for {res['users']:,} users "
        "(`python -m loadtests.bench_features`).",
        "",
        "| store | entities | reader | p50 ms | p99 ms | p50 / raw | p99 / raw |",
        "|---|---|---|---|---|---|---|",
    ]
    for store, sres in res["stores"].items():
        for size in (1, 100):
            for name, s in sres[f"{size}_entities"].items():
                r50 = f"{s['p50_ratio_to_raw']:.2f}x" if "p50_ratio_to_raw" in s else "-"
                r99 = f"{s['p99_ratio_to_raw']:.2f}x" if "p99_ratio_to_raw" in s else "-"
                lines.append(f"| {store} | {size} | {name} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {r50} | {r99} |")
    st = res["startup"]
    lines += [
        "",
        f"Import of the reader (`from feature_store.online import make_client`): {st['import_reader_s'] * 1e3:.0f} ms; "
        f"`import feast`: {st['import_feast_s']:.1f} s (best of 3, fresh processes).",
    ]
    for store, sres in res["stores"].items():
        lines.append(
            f"{store}: reader start-up (construct client + first read) {sres['first_read_ms']:.1f} ms; "
            f"Feast materialize of {res['users']:,} users {sres['materialize_s']:.1f} s."
        )
    pit = res.get("pit")
    if pit:
        lines += [
            "",
            f"Point-in-time join of {pit['rows_in']:,} examples ({pit['rows_before_first_snapshot']:,} timed before "
            "their user's first snapshot):",
            "",
            "| offline store | rows out | input order kept | seconds |",
            "|---|---|---|---|",
        ]
        for name in ("duckdb", "file"):
            r = pit[name]
            if "error" in r:
                lines.append(f"| {name} | error: {r['error']} | | |")
            else:
                lines.append(f"| {name} | {r['rows_out']:,} | {r['order_kept']} | {r['seconds']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--iters-1", type=int, default=3000)
    ap.add_argument("--iters-100", type=int, default=600)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "var" / "bench")
    args = ap.parse_args()
    os.environ.setdefault("FEAST_USAGE", "False")
    res = run(args.users, args.dim, args.iters_1, args.iters_100)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "features.json").write_text(json.dumps(res, indent=2))
    md = to_markdown(res)
    (args.out / "features.md").write_text(md)
    print(md)
    print(f"wrote {args.out / 'features.json'} and features.md")


if __name__ == "__main__":
    main()
