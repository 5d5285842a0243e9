"""The cross-version compatibility experiment's machinery (no Feast, no SASRec training: fast).

What must hold for its numbers to mean anything: queries never see their own future, the control's
windows follow the LTE's lag rule exactly, a control "version" trained at T never reads events
after T, the alignment mitigation really aligns, and the report only ever touches its own section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from models.eval.split import leave_one_out
from models.sequential.compat import (
    DAY,
    MARK_END,
    MARK_START,
    CompatPlan,
    EventLog,
    FreeSpaceAE,
    control_vectors,
    cut_times,
    first_event_queries,
    histories_before,
    popularity_scores,
    procrustes,
    splice_section,
    train_control,
    window_counts,
)
from models.sequential.data import US

T0 = 1_700_000_000  # a whole-second unix time


def _frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "timestamp": pd.to_datetime([t for _, _, t in rows], unit="s", utc=True),
        }
    )


@pytest.fixture
def split():
    day = DAY
    rows = [
        ("a", "i1", T0),
        ("a", "i2", T0 + 10 * day),
        ("a", "i3", T0 + 20 * day),
        ("a", "i4", T0 + 30 * day),
        ("b", "i2", T0 + 25 * day),  # no event before T = T0 + 20 days... and one after
        ("b", "i3", T0 + 26 * day),
        ("b", "i5", T0 + 27 * day),
        ("c", "i1", T0 + 1 * day),
        ("c", "i4", T0 + 2 * day),
        ("c", "i5", T0 + 3 * day),  # nothing after T
    ]
    return leave_one_out(_frame(rows), "toy")


def test_cut_times_are_whole_seconds_in_order() -> None:
    ts = np.array([T0, T0 + 100 * DAY + 7], dtype=np.int64)
    t1, t2 = cut_times(ts, CompatPlan(t1=0.6, t2=0.85))
    assert isinstance(t1, int) and T0 < t1 < t2 < ts.max()
    assert t1 == pytest.approx(T0 + 0.6 * (100 * DAY + 7), abs=1)
    e1, e2 = cut_times(np.arange(100, dtype=np.int64) + T0, CompatPlan(cut="events", t1=0.5, t2=0.9))
    assert (e1, e2) == (T0 + 50, T0 + 90)  # ceil of the quantiles
    with pytest.raises(ValueError):
        cut_times(ts, CompatPlan(cut="weeks"))


def test_first_event_queries_never_see_the_target_or_later(split) -> None:
    t = T0 + 20 * DAY
    q = first_event_queries(split, t)
    users = list(split.users[q.rows])
    assert users == ["a"]  # b has no event before t, c none after it
    i = split.item_index
    assert q.targets.tolist() == [i["i3"]] and q.times.tolist() == [t]
    assert q.hist[0].tolist() == [i["i1"], i["i2"]] and (q.hist_ts[0] < q.times[0]).all()
    # An end bound drops users whose first event after the start is not before it.
    assert len(first_event_queries(split, T0 + 15 * DAY, end=T0 + 20 * DAY)) == 0
    hist, _ = histories_before(split, t)
    assert [len(h) for h in hist] == [2, 0, 3]


def test_window_counts_follow_the_lte_lag_rule() -> None:
    plan = CompatPlan(lag_days=1, window_days=2, every_days=1)
    s = T0 + 10 * DAY
    upper = s - DAY  # exclusive
    lower = upper - 2 * DAY  # inclusive
    user = np.array([0, 0, 0, 0, 1])
    item = np.array([1, 2, 3, 4, 2])
    ts = np.array([lower - 1, lower, upper - 1, upper, upper + 5])
    log = EventLog(user, item, ts, n_users=3, n_items=4)
    rows, m = window_counts(log, s, plan)
    assert rows.tolist() == [0]  # user 1's event is inside the lag, not the window
    assert m.toarray()[0].tolist() == [0, 0, 1, 1, 0]  # lower bound in, upper bound out
    rows, m = window_counts(log, s, plan, rows=np.array([0, 2]))
    assert m.shape == (2, 5) and m[1].nnz == 0


def test_control_vectors_read_the_assigned_snapshot_and_default_to_zero() -> None:
    plan = CompatPlan(lag_days=1, window_days=5, every_days=1, ctrl_dim=4, ctrl_hidden=8)
    log = EventLog(np.array([0, 0]), np.array([1, 2]), np.array([T0, T0 + 3 * DAY]), n_users=2, n_items=3)
    torch.manual_seed(0)
    model = FreeSpaceAE(3, 4, 8)
    snaps = np.array([T0 + 2 * DAY, T0 + 5 * DAY, T0 + 5 * DAY], dtype=np.int64) * US
    z = control_vectors(model, log, np.array([0, 0, 1]), snaps, plan)
    with torch.no_grad():
        e = model.item_in.numpy()
    np.testing.assert_allclose(z[0], e[1], rtol=1e-5)  # window of day 2: only item 1
    np.testing.assert_allclose(z[1], (e[1] + e[2]) / 2, rtol=1e-5)  # day 5: both
    assert not z[2].any()  # user 1 has no events: the LTE default (zeros)


def test_control_version_never_reads_events_after_its_as_of() -> None:
    """Item 3 only occurs after ``as_of``: its input embedding must receive no gradient at all."""
    rng = np.random.default_rng(0)
    n = 400
    ts = np.sort(rng.integers(T0, T0 + 60 * DAY, n))
    item = rng.integers(1, 3, n)
    as_of = T0 + 40 * DAY
    item[ts >= as_of] = 3
    log = EventLog(rng.integers(0, 20, n), item, ts, n_users=20, n_items=3)
    plan = CompatPlan(lag_days=2, window_days=20, every_days=3, ctrl_dim=4, ctrl_hidden=8, ctrl_epochs=2)
    torch.manual_seed(5)
    init = FreeSpaceAE(3, 4, 8).item_in.detach().clone()
    model, info = train_control(log, as_of, plan, seed=5)
    assert info["samples"] > 0 and all(np.isfinite(info["losses"]))
    after = model.item_in.detach()
    assert torch.equal(after[3], init[3])
    assert not torch.equal(after[1], init[1])


def test_procrustes_undoes_a_rotation_of_the_control_space() -> None:
    torch.manual_seed(0)
    a, b = FreeSpaceAE(30, 6, 8), FreeSpaceAE(30, 6, 8)
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    with torch.no_grad():
        b.item_out.copy_(a.item_out @ q)  # the same space, rotated
    r = procrustes(b, a)
    np.testing.assert_allclose(b.item_out.detach().numpy() @ r, a.item_out.detach().numpy(), atol=1e-5)


def test_popularity_counts_only_events_before_the_cut(split) -> None:
    scores = popularity_scores(split, T0 + 20 * DAY, 2)
    i = split.item_index
    assert scores.shape == (2, split.n_items + 1)
    assert scores[0, i["i1"]] == 2 and scores[0, i["i3"]] == 0 and scores[0, 0] == 0


def test_splice_section_touches_only_its_markers() -> None:
    sec = f"{MARK_START}\nnew\n{MARK_END}\n"
    assert splice_section("", sec) == sec
    doc = "# Title\n\nother helper's text\n"
    once = splice_section(doc, sec)
    assert once.startswith(doc.rstrip("\n")) and once.endswith(sec)
    old = f"# Title\n\n{MARK_START}\nold\n{MARK_END}\n\n## After\n\nkept\n"
    out = splice_section(old, sec)
    assert "old" not in out and "new" in out and out.endswith("## After\n\nkept\n") and out.startswith("# Title")
    assert splice_section(out, sec) == out  # idempotent
