"""Micro-batching through a real sequential service process: concurrent requests share batches, and
every answer equals what the unbatched service (RECSYS_BATCHING=false) gives for the same request."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.e2e.helpers import start_service

MAX_BATCH = 16


def _start(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    return start_service("sequential", port, env), f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def services(demo_env: dict[str, str]) -> Iterator[dict[str, str]]:
    procs = []
    try:
        batched, b_url = _start({**demo_env, "RECSYS_BATCHING": "true", "RECSYS_BATCH_MAX_SIZE": str(MAX_BATCH)})
        procs.append(batched)
        single, s_url = _start({**demo_env, "RECSYS_BATCHING": "false"})
        procs.append(single)
        yield {"batched": b_url, "single": s_url}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


def _bodies(demo_env: dict[str, str]) -> list[dict[str, Any]]:
    """Known users plus the per-request variations a batch must keep apart."""
    frame = pd.read_parquet(Path(demo_env["RECSYS_DATA_DIR"]) / "offline" / "recent_items" / "v1.parquet")
    users = sorted(frame["user_id"].astype(str).unique())[:28]
    some_item = str(frame.iloc[0]["item_ids"][0])
    bodies: list[dict[str, Any]] = [{"user_id": u, "k": 10} for u in users]
    bodies[1]["exclude_seen"] = False
    bodies[2]["k"] = 3
    bodies[3]["recent_items"] = [some_item]
    bodies += [
        {"user_id": users[0], "k": 10},  # the same user twice in one batch
        {"user_id": "nobody-at-all", "k": 5},  # unknown: flagged popularity fallback
        {"user_id": "nobody-else", "k": 5, "recent_items": [some_item]},  # unknown but with request items
        {"user_id": users[4], "k": 10, "model_version": "1"},  # pinned version = the champion here
    ]
    return bodies


def _batch_histogram(base: str) -> dict[str, float]:
    """{'count': batches, 'sum': items, 'le_1': batches of one, 'le_<MAX>': batches <= MAX} of seq-lte@v1."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        if fam.name != "recsys_batch_size":
            continue
        for s in fam.samples:
            if s.labels.get("batcher") != "seq-lte@v1":
                continue
            if s.name.endswith("_count"):
                out["count"] = s.value
            elif s.name.endswith("_sum"):
                out["sum"] = s.value
            elif s.labels.get("le") in ("1.0", f"{float(MAX_BATCH)}"):
                out[f"le_{int(float(s.labels['le']))}"] = s.value
    return out


async def _burst(base: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/recommend", json=b) for b in bodies))


def test_concurrent_requests_are_batched_and_answer_like_single_requests(
    services: dict[str, str], demo_env: dict[str, str]
) -> None:
    bodies = _bodies(demo_env)
    assert len(bodies) == 32
    before = _batch_histogram(services["batched"])
    for _attempt in range(5):  # one burst virtually always batches; a stalled machine gets retries
        responses = asyncio.run(_burst(services["batched"], bodies))
        assert [r.status_code for r in responses] == [200] * len(bodies), [r.text for r in responses][:3]
        hist = _batch_histogram(services["batched"])
        batches = hist["count"] - before.get("count", 0)
        singles = hist["le_1"] - before.get("le_1", 0)
        if singles < batches:
            break
    else:
        pytest.fail(f"5 bursts of 32 concurrent requests never shared a batch: {hist}")
    assert hist["sum"] - before.get("sum", 0) == len(bodies) * (_attempt + 1), "every request went through a batch"
    assert hist[f"le_{MAX_BATCH}"] == hist["count"], f"a batch exceeded RECSYS_BATCH_MAX_SIZE={MAX_BATCH}"

    # The unbatched service, one request at a time, must answer exactly the same.
    batched = [r.json() for r in responses]
    with httpx.Client(base_url=services["single"], timeout=30) as client:
        single = [client.post("/v1/recommend", json=b).json() for b in bodies]
    for body, got, want in zip(bodies, batched, single, strict=True):
        assert {k: v for k, v in got.items() if k != "items"} == {k: v for k, v in want.items() if k != "items"}, body
        assert [i["item_id"] for i in got["items"]] == [i["item_id"] for i in want["items"]], body
        assert [i["score"] for i in got["items"]] == pytest.approx([i["score"] for i in want["items"]], abs=1e-4)
    assert batched[-3]["fallback"] is True and "unknown user" in batched[-3]["fallback_reason"]
    assert batched[-2]["fallback"] is False, "request items make an unknown user servable by the model"
    assert sum(not b["fallback"] for b in batched) >= 28
    # The unbatched service really ran unbatched.
    assert _batch_histogram(services["single"]).get("count", 0) == 0


def test_a_bad_request_in_a_burst_fails_alone(services: dict[str, str], demo_env: dict[str, str]) -> None:
    bodies = _bodies(demo_env)[:8]
    bad = [{**bodies[0], "k": 1000}, {**bodies[1], "model_version": "v99"}]
    responses = asyncio.run(_burst(services["batched"], bodies + bad))
    assert [r.status_code for r in responses] == [200] * 8 + [422, 404]
