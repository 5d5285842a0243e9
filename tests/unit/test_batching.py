"""The micro-batcher (services/kit/batching.py): who gets batched with whom, when, and what each caller gets.

Behaviour, not speed: time bounds are generous (hundreds of ms where the mechanism needs ~1 ms) so
a loaded 2-core machine cannot fail them; ordering and sizes are checked exactly.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.kit.batching import MicroBatcher


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(coro_fn())


class Recorder:
    """A batch function that records the batches it saw; optionally blocks until released."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Event()
        self.delay_s = delay_s
        self.gate = gate
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        with self.lock:
            self.batches.append(list(items))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        return [x * 10 for x in items]


def test_each_caller_gets_its_own_result_and_batches_keep_submission_order() -> None:
    rec = Recorder(delay_s=0.02)
    b: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=16, max_wait_ms=1)

    async def main() -> list[int]:
        return await asyncio.gather(*(b.submit(i) for i in range(50)))

    assert run(main) == [i * 10 for i in range(50)]
    assert [x for batch in rec.batches for x in batch] == list(range(50))  # FIFO across and within batches
    assert max(len(x) for x in rec.batches) > 1, "concurrent callers behind a busy batch must share one"


def test_max_batch_size_is_never_exceeded() -> None:
    rec = Recorder(delay_s=0.01)
    b: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=8, max_wait_ms=50)

    async def main() -> list[int]:
        return await asyncio.gather(*(b.submit(i) for i in range(100)))

    assert run(main) == [i * 10 for i in range(100)]
    sizes = [len(x) for x in rec.batches]
    assert max(sizes) == 8 and sum(sizes) == 100
    assert sizes[0] == 1, "an idle batcher dispatches the first item at once"


def test_a_full_batch_goes_without_waiting_for_max_wait() -> None:
    gate = threading.Event()
    rec = Recorder(gate=gate)
    # Two slots: the second batch may start while the first is held, as soon as it is full.
    b: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=4, max_wait_ms=60_000, max_concurrency=2)

    async def main() -> None:
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(rec.started.wait, 5)
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 5)]
        for _ in range(200):
            if len(rec.batches) == 2:
                break
            await asyncio.sleep(0.01)
        assert rec.batches == [[0], [1, 2, 3, 4]], "a full batch must not wait 60 s for its deadline"
        gate.set()
        assert await asyncio.gather(first, *rest) == [0, 10, 20, 30, 40]

    run(main)


def test_max_wait_bounds_how_long_an_item_waits_for_companions() -> None:
    gate = threading.Event()
    rec = Recorder(gate=gate)
    wait_ms = 30
    b: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=64, max_wait_ms=wait_ms, max_concurrency=2)

    async def main() -> None:
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(rec.started.wait, 5)
        rec.started.clear()
        t0 = time.monotonic()
        second = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0)
        assert rec.batches == [[0]], "with a batch running and a slot free, a lone item waits for companions"
        await asyncio.to_thread(rec.started.wait, 5)
        waited = time.monotonic() - t0
        # Dispatched while the first batch is still held: by its deadline, not by the first one ending.
        assert rec.batches == [[0], [1]]
        assert wait_ms / 1000 - 0.005 <= waited < 2.0
        gate.set()
        assert await asyncio.gather(first, second) == [0, 10]

    run(main)


def test_low_load_requests_are_not_delayed_by_max_wait() -> None:
    rec = Recorder()
    b: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=64, max_wait_ms=2_000)

    async def main() -> list[float]:
        took = []
        for i in range(5):  # one request in flight at a time
            t0 = time.monotonic()
            assert await b.submit(i) == i * 10
            took.append(time.monotonic() - t0)
        return took

    took = run(main)
    assert max(took) < 1.0, f"an idle batcher must dispatch at once, not after max_wait (2 s): {took}"
    assert rec.batches == [[0], [1], [2], [3], [4]]


def test_an_item_error_fails_only_that_item() -> None:
    def fn(items: list[int]) -> list[int | BaseException]:
        return [ValueError(f"bad {x}") if x % 3 == 0 else x for x in items]

    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=64, max_wait_ms=5)

    async def main() -> list[Any]:
        return await asyncio.gather(*(b.submit(i) for i in range(10)), return_exceptions=True)

    out = run(main)
    for i, r in enumerate(out):
        if i % 3 == 0:
            assert isinstance(r, ValueError) and str(r) == f"bad {i}"
        else:
            assert r == i


def test_a_failing_batch_fails_its_items_and_the_next_batch_still_runs() -> None:
    calls: list[list[int]] = []

    def fn(items: list[int]) -> list[int | BaseException]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("model crashed")
        return items

    b: MicroBatcher[int, int] = MicroBatcher(fn, max_batch_size=64, max_wait_ms=5)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="model crashed"):
            await b.submit(1)
        assert await asyncio.gather(b.submit(2), b.submit(3)) == [2, 3]
        assert b.in_flight == 0 and b.queued == 0

    run(main)


def test_wrong_number_of_results_is_an_error_for_every_item() -> None:
    b: MicroBatcher[int, int] = MicroBatcher(lambda items: items[:-1], max_batch_size=64, max_wait_ms=5)

    async def main() -> list[Any]:
        return await asyncio.gather(b.submit(1), return_exceptions=True)

    (r,) = run(main)
    assert isinstance(r, RuntimeError) and "0 results for 1 items" in str(r)


def test_a_cancelled_caller_is_dropped_and_others_are_answered() -> None:
    gate = threading.Event()
    rec = Recorder(gate=gate)
    b: MicroBatcher[int, int] = MicroBatcher(rec, max_batch_size=64, max_wait_ms=5)

    async def main() -> None:
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.to_thread(rec.started.wait, 5)
        gone = asyncio.ensure_future(b.submit(1))
        kept = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0)
        gone.cancel()
        gate.set()
        assert await asyncio.gather(first, kept) == [0, 20]
        assert gone.cancelled()

    run(main)
    assert rec.batches == [[0], [2]]


def test_batch_sizes_are_observed_in_the_histogram() -> None:
    def count() -> float:
        return REGISTRY.get_sample_value("recsys_batch_size_sum", {"service": "unit", "batcher": "hist"}) or 0.0

    before = count()
    b: MicroBatcher[int, int] = MicroBatcher(Recorder(delay_s=0.01), max_batch_size=64, service="unit", name="hist")

    async def main() -> None:
        await asyncio.gather(*(b.submit(i) for i in range(20)))

    run(main)
    assert count() - before == 20  # every item counted in exactly one batch


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(lambda x: x, max_batch_size=0)
