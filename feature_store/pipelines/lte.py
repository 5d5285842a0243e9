"""Long-Term Embedding (LTE) user features, computed from a *lagged* window of interactions.

An LTE (after Zalando's long-term embeddings) is a vector in the coordinate system of a
:class:`~feature_store.pipelines.basis.SemanticBasis` that summarises what a user consumed over
a long window. Because it lives in the basis, every model that reads one LTE version can read
any other version computed in the same basis (same fingerprint).

The leakage guard: the lagged window
------------------------------------
For a user at as-of time ``T`` the LTE uses ONLY the interactions with::

    T - lag - window  <=  timestamp  <  T - lag

i.e. the lower bound is inclusive and the upper bound is *strict*: an event at exactly
``T - lag`` is excluded. A model that consumes the LTE at ``T`` sees the user's short-term
sequence in ``[T - lag, T)``, so the two inputs never share an event and the long-term summary
can never leak the recent behaviour the model is supposed to react to (nor, with ``lag > 0``,
anything at or after ``T``). ``lag`` also gives the offline batch job time to run: the LTE for
``T`` only needs data that is at least ``lag`` old.

Two variants, one output contract
---------------------------------
(a) :func:`compute_lte_average`: the uniform average of the basis vectors of the window's items.
(b) :class:`LTEAutoencoder` + :func:`compute_lte_autoencoder`: an asymmetric autoencoder whose
    trainable encoder maps the window to coefficients ``z`` and whose decoder is *fixed* to the
    basis (item logits ``= basis.vectors @ z / temperature``), so ``z`` always lives in the same
    coordinate system as (a).

Both return one row per ``(user, as_of)`` whose window holds at least one in-basis interaction,
with exactly the columns :data:`LTE_COLUMNS`:

* ``user_id`` (str)
* ``event_timestamp`` (datetime64[us, UTC]): the as-of time ``T``
* ``created_timestamp`` (datetime64[us, UTC]): also ``T`` (the value is a pure function of
  ``T`` and the data, so recomputing it gives the same row)
* ``lte``: a float32 numpy array of length ``d`` per row (pyarrow writes ``list<float>``)
* ``n_items`` (int64): the number of in-basis interactions in the window

The window (``lag``, ``window``) is not a column: it is a property of the whole feature version
and the caller records it in the version catalog (:meth:`LTEWindow.to_dict`).

Users with an empty window (or only items outside the basis) get NO row. Readers must apply
the default :func:`default_lte` -- the zero vector with ``n_items = 0`` -- for a missing row.
The zero vector is the neutral point of the basis: decoded by (b) it gives the uniform
distribution over all items, and it adds nothing to a dot-product score.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from feature_store.pipelines.basis import SemanticBasis
from feature_store.sources.schema import to_utc_microseconds

log = logging.getLogger(__name__)

LTE_COLUMNS = ("user_id", "event_timestamp", "created_timestamp", "lte", "n_items")
# Below this many snapshots (or epochs) a progress bar is noise.
PROGRESS_MIN_STEPS = 8
_US = timedelta(microseconds=1)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# Windows, schedules, time conversion


@dataclass(frozen=True)
class LTEWindow:
    """The lagged window of an LTE feature version.

    For a user at as-of time ``T`` the LTE uses only interactions with
    ``T - lag - window <= timestamp < T - lag`` (lower bound inclusive, upper bound strict).
    The short-term sequence a model sees lives in ``[T - lag, T)``, so the two never overlap:
    this is the leakage guard. ``lag`` may be zero (then the window ends just before ``T``).
    """

    lag: timedelta
    window: timedelta

    def __post_init__(self) -> None:
        if self.lag < timedelta(0):
            raise ValueError(f"LTE lag must be >= 0, got {self.lag}")
        if self.window <= timedelta(0):
            raise ValueError(f"LTE window must be positive, got {self.window}")

    @property
    def lag_us(self) -> int:
        return _td_us(self.lag)

    @property
    def window_us(self) -> int:
        return _td_us(self.window)

    def bounds(self, as_of: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
        """``(lower inclusive, upper exclusive)`` timestamps of the window for as-of time ``as_of``."""
        t = _as_utc(as_of)
        return t - self.lag - self.window, t - self.lag

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly form for the version catalog (seconds)."""
        return {"lag_seconds": self.lag.total_seconds(), "window_seconds": self.window.total_seconds()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LTEWindow:
        return cls(lag=timedelta(seconds=float(d["lag_seconds"])), window=timedelta(seconds=float(d["window_seconds"])))


def default_lte(dim: int) -> np.ndarray:
    """The value a reader uses for a (user, as_of) without a row: the zero vector (``n_items = 0``)."""
    return np.zeros(dim, dtype=np.float32)


def snapshot_times(start: pd.Timestamp | str, end: pd.Timestamp | str, every: timedelta) -> list[pd.Timestamp]:
    """As-of times ``start, start + every, ...`` up to and including ``end`` (UTC, microseconds).

    Snapshots are taken on a fixed grid rather than per event because an LTE changes slowly
    (its window is long) and the offline store serves point-in-time joins from the latest
    snapshot at or before each request time.
    """
    if every <= timedelta(0):
        raise ValueError(f"snapshot interval must be positive, got {every}")
    lo, hi = _as_utc(start), _as_utc(end)
    if hi < lo:
        return []
    n = (hi - lo) // pd.Timedelta(every)
    return [lo + k * pd.Timedelta(every) for k in range(int(n) + 1)]


def _td_us(td: timedelta) -> int:
    """A timedelta in whole microseconds (floor)."""
    return int(td // _US)


def _as_utc(ts: pd.Timestamp | str) -> pd.Timestamp:
    """A timestamp as UTC with microsecond unit; naive input is taken to be UTC already."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return t.as_unit("us")


def as_of_us(as_of: Iterable[pd.Timestamp | str]) -> np.ndarray:
    """Sorted, de-duplicated as-of times as int64 microseconds since the epoch (UTC).

    Naive timestamps are taken to be UTC. Sorting lets callers walk the snapshots in time order.
    """
    values = list(as_of)
    if not values:
        return np.zeros(0, dtype=np.int64)
    idx = pd.to_datetime(values, utc=True).as_unit("us")
    return np.unique(idx.asi8)


def us_to_utc(us: np.ndarray) -> pd.Series:
    """int64 microseconds -> a datetime64[us, UTC] series (the offline store's timestamp type)."""
    return pd.Series(pd.DatetimeIndex(np.asarray(us, dtype=np.int64).view("datetime64[us]")).tz_localize("UTC"))


def timestamps_us(ts: pd.Series) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch (UTC)."""
    return np.asarray(to_utc_microseconds(ts).array.asi8, dtype=np.int64)


def track(steps: Iterable[T], total: int, description: str, show: bool = True) -> Iterator[T]:
    """Iterate ``steps`` with a rich progress bar on stderr when there are many.

    On a non-terminal stderr (CI logs, redirected output) rich draws nothing while running and
    prints the finished bar once, so logs stay readable.
    """
    if not show or total < PROGRESS_MIN_STEPS:
        yield from steps
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=console.is_terminal) as progress:
        task = progress.add_task(description, total=total)
        for step in steps:
            yield step
            progress.advance(task)


# --------------------------------------------------------------------------------------------------
# Shared window machinery


@dataclass
class _Events:
    """In-basis interactions as flat arrays sorted by time, for searchsorted window slicing."""

    ts: np.ndarray  # (n,) int64 us, ascending
    user: np.ndarray  # (n,) int64 code into user_ids
    pos: np.ndarray  # (n,) int64 basis row
    user_ids: np.ndarray  # (n_users,) object str
    n_basis: int

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def slice(self, lo_us: int, hi_us: int) -> tuple[np.ndarray, np.ndarray]:
        """(user codes, basis rows) of the events with ``lo_us <= ts < hi_us``."""
        lo = int(np.searchsorted(self.ts, lo_us, side="left"))
        hi = int(np.searchsorted(self.ts, hi_us, side="left"))
        return self.user[lo:hi], self.pos[lo:hi]


def _prepare_events(interactions: pd.DataFrame, basis: SemanticBasis) -> _Events:
    """Map items to basis rows (dropping items outside the basis) and sort by time.

    Item ids are factorised first so the dict lookup runs once per distinct item, not per event.
    The sort is stable, so events with equal timestamps keep their input order.
    """
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in interactions.columns]
    if missing:
        raise ValueError(f"interactions are missing columns {missing}")
    user_codes, user_ids = pd.factorize(interactions["user_id"].astype(str), sort=False)
    item_codes, item_ids = pd.factorize(interactions["item_id"].astype(str), sort=False)
    item_pos = basis.positions(np.asarray(item_ids, dtype=object))
    pos = item_pos[item_codes] if len(item_codes) else np.zeros(0, dtype=np.int64)
    ts = timestamps_us(interactions["timestamp"])
    keep = pos >= 0
    ts, user, pos = ts[keep], user_codes[keep].astype(np.int64), pos[keep]
    order = np.argsort(ts, kind="stable")
    return _Events(
        ts=ts[order],
        user=user[order],
        pos=pos[order],
        user_ids=np.asarray(user_ids, dtype=object),
        n_basis=len(basis.item_ids),
    )


@dataclass
class _Snapshot:
    """The windows of all users with a non-empty window at one as-of time."""

    users: np.ndarray  # (k,) user codes, ascending
    counts: sp.csr_matrix  # (k, n_basis) interaction counts per item
    n_items: np.ndarray  # (k,) int64 row sums of counts


def _window_snapshot(ev: _Events, window: LTEWindow, t_us: int) -> _Snapshot:
    """Item counts per user in the window of as-of time ``t_us``.

    A sparse (users x items) count matrix makes the average a single sparse-dense product,
    without materialising one d-vector per event.
    """
    upper = t_us - window.lag_us
    users, pos = ev.slice(upper - window.window_us, upper)
    return _counts_matrix(ev, users, pos)


def _counts_matrix(ev: _Events, users: np.ndarray, pos: np.ndarray, rows: np.ndarray | None = None) -> _Snapshot:
    """Count matrix with one row per present user, or per user in ``rows`` (absent users dropped)."""
    if rows is None:
        per_user = np.bincount(users, minlength=ev.n_users)
        rows = np.flatnonzero(per_user)
    remap = np.full(ev.n_users, -1, dtype=np.int64)
    remap[rows] = np.arange(len(rows))
    r = remap[users]
    ok = r >= 0
    counts = sp.csr_matrix((np.ones(int(ok.sum()), dtype=np.float64), (r[ok], pos[ok])), shape=(len(rows), ev.n_basis))
    counts.sum_duplicates()
    n_items = np.bincount(r[ok], minlength=len(rows)).astype(np.int64)
    return _Snapshot(users=rows, counts=counts, n_items=n_items)


def _window_means(snap: _Snapshot, vectors64: np.ndarray) -> np.ndarray:
    """(k, d) float64 mean basis vector of each window (every interaction counts once)."""
    sums = np.asarray(snap.counts @ vectors64)
    return sums / snap.n_items[:, None]


def _lte_frame(
    user_ids: np.ndarray, users: np.ndarray, t_us: np.ndarray, lte: np.ndarray, n_items: np.ndarray
) -> pd.DataFrame:
    """Assemble the output contract; rows sorted by (event_timestamp, user_id)."""
    ts = us_to_utc(t_us)
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(user_ids[users] if len(users) else np.zeros(0, dtype=object), dtype=object),
            "event_timestamp": ts,
            "created_timestamp": ts.copy(),
            "lte": pd.Series(list(np.ascontiguousarray(lte, dtype=np.float32)), dtype=object),
            "n_items": pd.Series(n_items, dtype=np.int64),
        }
    )
    if len(frame):
        frame = frame.sort_values(["event_timestamp", "user_id"], kind="stable").reset_index(drop=True)
    return frame[list(LTE_COLUMNS)]


# --------------------------------------------------------------------------------------------------
# Variant (a): uniform average


def compute_lte_average(
    interactions: pd.DataFrame,
    basis: SemanticBasis,
    window: LTEWindow,
    as_of: Sequence[pd.Timestamp],
    show_progress: bool = True,
) -> pd.DataFrame:
    """LTE = the uniform average of the basis vectors of the items in each user's lagged window.

    Every interaction counts once, so an item consumed three times in the window weighs three
    times: repetition is a strong long-term signal (a favourite artist, a staple product) and
    the average should reflect it. Items outside the basis are ignored (they have no
    coordinates); ``n_items`` counts only the interactions that contributed, and a user whose
    window has none gets no row (readers use :func:`default_lte`). A basis item without content
    (a zero row) does count: it adds nothing to the direction but shrinks the norm, which is
    the honest "less evidence" signal.

    The average of unit vectors lies in their convex hull, so its norm (<= 1) also says how
    focused the user's taste is. Cost: one searchsorted slice and one sparse (users x items) @
    (items x d) product per snapshot -- O(window events x d) each, no per-user Python loop.

    Returns the frame described in the module docstring (columns :data:`LTE_COLUMNS`).
    """
    ev = _prepare_events(interactions, basis)
    times = as_of_us(as_of)
    vectors64 = basis.vectors.astype(np.float64)
    users_parts, t_parts, lte_parts, n_parts = [], [], [], []
    for t_us in track(times, len(times), "LTE average snapshots", show_progress):
        snap = _window_snapshot(ev, window, int(t_us))
        if not len(snap.users):
            continue
        users_parts.append(snap.users)
        t_parts.append(np.full(len(snap.users), t_us, dtype=np.int64))
        lte_parts.append(_window_means(snap, vectors64).astype(np.float32))
        n_parts.append(snap.n_items)
    return _concat_frame(ev, basis.dim, users_parts, t_parts, lte_parts, n_parts)


def _concat_frame(
    ev: _Events,
    dim: int,
    users_parts: list[np.ndarray],
    t_parts: list[np.ndarray],
    lte_parts: list[np.ndarray],
    n_parts: list[np.ndarray],
) -> pd.DataFrame:
    if not users_parts:
        empty_i = np.zeros(0, dtype=np.int64)
        return _lte_frame(ev.user_ids, empty_i, empty_i, np.zeros((0, dim), dtype=np.float32), empty_i)
    return _lte_frame(
        ev.user_ids,
        np.concatenate(users_parts),
        np.concatenate(t_parts),
        np.concatenate(lte_parts),
        np.concatenate(n_parts),
    )


# --------------------------------------------------------------------------------------------------
# Variant (b): asymmetric autoencoder with a decoder fixed to the basis


@dataclass
class LTEAutoencoderConfig:
    """Everything needed to rebuild an :class:`LTEAutoencoder` around its basis (saved as JSON)."""

    dim: int
    hidden: int = 128
    use_count: bool = True
    temperature: float = 0.1
    basis_fingerprint: str = ""
    basis_encoder: str = ""
    # Provenance only (window, epochs, seed, final loss, ...); not needed to run the model.
    training: dict[str, Any] = field(default_factory=dict)


class LTEAutoencoder(nn.Module):
    """Asymmetric autoencoder: a trainable encoder and a decoder FIXED to the semantic basis.

    Encoder: ``z = x + MLP([x, log1p(n)])`` where ``x`` is the mean basis vector of the window
    (variant (a)) and ``n`` the number of window interactions. The residual form starts the
    encoder at the average (the last layer is zero-initialised), so an untrained or lightly
    trained model already gives a sensible LTE and training only learns a correction (e.g.
    sharpening focused users, discounting one-off items).

    Decoder: item logits ``= basis @ z / temperature``. The basis is a *buffer*, not a
    parameter: the optimiser cannot move it, it is not in the state dict (the basis is stored
    once, with its fingerprint, not inside every model), and ``z`` keeps the meaning of a
    direction in the basis' coordinate system -- so models that read LTE vectors can read
    versions produced by a different encoder in the same basis.
    """

    basis: torch.Tensor

    def __init__(
        self,
        basis: SemanticBasis,
        hidden: int = 128,
        use_count: bool = True,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.config = LTEAutoencoderConfig(
            dim=basis.dim,
            hidden=hidden,
            use_count=use_count,
            temperature=temperature,
            basis_fingerprint=basis.fingerprint,
            basis_encoder=basis.encoder,
        )
        # persistent=False: the decoder is the basis, which is versioned on its own.
        self.register_buffer("basis", torch.from_numpy(basis.vectors.copy()), persistent=False)
        d_in = basis.dim + (1 if use_count else 0)
        self.encoder = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, basis.dim))
        last = self.encoder[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def basis_fingerprint(self) -> str:
        return self.config.basis_fingerprint

    def forward(self, mean_vec: torch.Tensor, n_items: torch.Tensor) -> torch.Tensor:
        """Encode windows: ``(B, d)`` mean vectors and ``(B,)`` counts -> ``(B, d)`` coefficients ``z``."""
        feats = mean_vec
        if self.config.use_count:
            feats = torch.cat([mean_vec, torch.log1p(n_items.to(mean_vec.dtype)).unsqueeze(1)], dim=1)
        return mean_vec + self.encoder(feats)

    def item_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decode: ``(B, d)`` -> ``(B, n_basis)`` logits over all basis items."""
        return z @ self.basis.T / self.config.temperature


@dataclass
class _Samples:
    """Training examples: one per (user, as_of) with a non-empty window."""

    mean: np.ndarray  # (N, d) float32
    n_items: np.ndarray  # (N,) int64
    targets: sp.csr_matrix  # (N, n_basis) float32 item weights, each row sums to 1


def _row_normalise(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(inv) @ m)


def _build_samples(
    ev: _Events,
    basis: SemanticBasis,
    window: LTEWindow,
    times: np.ndarray,
    horizon_us: int,
    future_weight: float,
    show_progress: bool,
) -> _Samples:
    """Inputs and target distributions per (user, as_of).

    Target = ``(1 - future_weight) * window items + future_weight * items in [T, T + horizon)``,
    each part normalised to sum 1; samples without future events use the window part alone.
    """
    vectors64 = basis.vectors.astype(np.float64)
    means, counts, targets = [], [], []
    for t_us in track(times, len(times), "LTE autoencoder samples", show_progress):
        snap = _window_snapshot(ev, window, int(t_us))
        if not len(snap.users):
            continue
        means.append(_window_means(snap, vectors64).astype(np.float32))
        counts.append(snap.n_items)
        target = _row_normalise(snap.counts)
        if future_weight > 0 and horizon_us > 0:
            fu, fp = ev.slice(int(t_us), int(t_us) + horizon_us)
            future = _row_normalise(_counts_matrix(ev, fu, fp, rows=snap.users).counts)
            has_future = np.asarray(future.sum(axis=1)).ravel() > 0
            w = np.where(has_future, 1.0 - future_weight, 1.0)
            target = sp.csr_matrix(sp.diags(w) @ target + future_weight * future)
        targets.append(target.astype(np.float32))
    if not means:
        raise ValueError("no (user, as_of) has a non-empty LTE window: nothing to train on")
    return _Samples(
        mean=np.concatenate(means),
        n_items=np.concatenate(counts),
        targets=sp.csr_matrix(sp.vstack(targets, format="csr")),
    )


def _batch_loss(model: LTEAutoencoder, s: _Samples, rows: np.ndarray) -> torch.Tensor:
    """Mean multinomial negative log-likelihood of the target distributions of ``rows``.

    ``-sum_i w_i log softmax(logits)_i = logsumexp(logits) - sum_i w_i logits_i`` (weights sum
    to 1), computed from the sparse targets by gathering, without a dense target matrix.
    """
    z = model(torch.from_numpy(s.mean[rows]), torch.from_numpy(s.n_items[rows]))
    logits = model.item_logits(z)
    tgt = s.targets[rows].tocoo()
    r = torch.from_numpy(tgt.row.astype(np.int64))
    c = torch.from_numpy(tgt.col.astype(np.int64))
    w = torch.from_numpy(tgt.data.astype(np.float32))
    picked = torch.zeros(len(rows), dtype=logits.dtype).index_add_(0, r, w * logits[r, c])
    return (torch.logsumexp(logits, dim=1) - picked).mean()


def _resolve_horizon(window: LTEWindow, horizon: timedelta | None) -> int:
    return window.lag_us if horizon is None else _td_us(horizon)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads, restoring the previous setting afterwards.

    The encoder's matmuls are small (batch x d x hidden, batch x d x n_items), so one thread is
    about as fast as several on an idle machine -- and on a busy one (feature builds run next
    to other jobs) OpenMP worker spinning made multi-threaded training ~10x slower in our
    measurements. ``None`` leaves torch's setting alone.
    """
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _epoch_progress(epochs: int, show: bool) -> Iterator[Callable[[int, float], None]]:
    """A per-epoch loss reporter: a rich bar with the latest loss (stderr) plus one log line per epoch."""

    def log_only(epoch: int, loss: float) -> None:
        log.info("LTE autoencoder epoch %d/%d: loss %.4f", epoch + 1, epochs, loss)

    if not show or epochs < 1:
        yield log_only
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (
        TextColumn("LTE autoencoder epochs"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("epochs", total=epochs, loss="-")

        def report(epoch: int, loss: float) -> None:
            log_only(epoch, loss)
            progress.update(task, advance=1, loss=f"{loss:.4f}")

        yield report


def train_lte_autoencoder(
    interactions: pd.DataFrame,
    basis: SemanticBasis,
    window: LTEWindow,
    as_of_times: Sequence[pd.Timestamp],
    epochs: int = 5,
    seed: int = 0,
    *,
    hidden: int = 128,
    use_count: bool = True,
    temperature: float = 0.1,
    future_weight: float = 0.5,
    horizon: timedelta | None = None,
    batch_size: int = 256,
    lr: float = 1e-2,
    max_samples: int | None = 200_000,
    num_threads: int | None = 1,
    show_progress: bool = True,
) -> LTEAutoencoder:
    """Train the encoder of an :class:`LTEAutoencoder` (the decoder stays the basis).

    Examples are the ``(user, T)`` pairs with a non-empty window for ``T`` in ``as_of_times``.
    The loss is the multinomial log-likelihood (softmax over ALL basis items) of a target that
    mixes two parts, each normalised to sum 1 per example:

    * reconstruction of the window's items, weight ``1 - future_weight``;
    * prediction of the items the user consumes in ``[T, T + horizon)`` (``horizon`` defaults to
      ``lag``), weight ``future_weight``; examples without such events use reconstruction only.

    Why predict after ``T`` rather than right after the window: that is exactly how the LTE is
    used -- served at ``T`` (from data older than ``T - lag``) to a model predicting behaviour
    from ``T`` on -- so the encoder learns which parts of the long-term history stay predictive
    across the lag. Future targets are training labels only; the encoder input is always the
    window. Pass only TRAINING interactions: targets are taken from whatever ``interactions``
    contains, and periods past its end simply have no future part. ``future_weight=0`` gives a
    pure reconstruction autoencoder.

    Each example counts once regardless of window size (per-example normalisation), so heavy
    users do not dominate. Deterministic in ``seed`` (model init, subsampling to
    ``max_samples`` and batch order). ``epochs=0`` returns the initial model, whose LTE equals
    the average of variant (a). ``num_threads`` (default 1, see :func:`torch_threads`) is the
    torch thread count while training; the previous setting is restored afterwards.
    """
    if not 0.0 <= future_weight <= 1.0:
        raise ValueError(f"future_weight must be in [0, 1], got {future_weight}")
    torch.manual_seed(seed)
    model = LTEAutoencoder(basis, hidden=hidden, use_count=use_count, temperature=temperature)
    ev = _prepare_events(interactions, basis)
    times = as_of_us(as_of_times)
    horizon_us = _resolve_horizon(window, horizon)
    samples = _build_samples(ev, basis, window, times, horizon_us, future_weight, show_progress)
    n = len(samples.n_items)
    if max_samples is not None and n > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
        samples = _Samples(samples.mean[keep], samples.n_items[keep], samples.targets[keep])
        n = max_samples
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.encoder.parameters(), lr=lr)
    history: list[float] = []
    model.train()
    with torch_threads(num_threads), _epoch_progress(epochs, show_progress) as report:
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=gen).numpy()
            total = 0.0
            for start in range(0, n, batch_size):
                rows = perm[start : start + batch_size]
                loss = _batch_loss(model, samples, rows)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
            history.append(total / n)
            report(epoch, history[-1])
    model.eval()
    model.config.training = {
        "window": window.to_dict(),
        "horizon_seconds": horizon_us / 1e6,
        "future_weight": future_weight,
        "epochs": epochs,
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "n_samples": n,
        "n_as_of": len(times),
        "loss_history": history,
    }
    return model


def evaluate_lte_autoencoder(
    model: LTEAutoencoder,
    interactions: pd.DataFrame,
    basis: SemanticBasis,
    window: LTEWindow,
    as_of_times: Sequence[pd.Timestamp],
    *,
    future_weight: float = 0.5,
    horizon: timedelta | None = None,
    batch_size: int = 1024,
    num_threads: int | None = 1,
) -> float:
    """Mean training-objective loss (see :func:`train_lte_autoencoder`) on the given data."""
    _check_basis(model, basis)
    ev = _prepare_events(interactions, basis)
    samples = _build_samples(
        ev, basis, window, as_of_us(as_of_times), _resolve_horizon(window, horizon), future_weight, False
    )
    n = len(samples.n_items)
    total = 0.0
    with torch.no_grad(), torch_threads(num_threads):
        for start in range(0, n, batch_size):
            rows = np.arange(start, min(n, start + batch_size))
            total += float(_batch_loss(model, samples, rows)) * len(rows)
    return total / n


def _check_basis(model: LTEAutoencoder, basis: SemanticBasis) -> None:
    if model.basis_fingerprint != basis.fingerprint:
        raise ValueError(
            f"LTE autoencoder was built for basis {model.basis_fingerprint[:12]}, got {basis.fingerprint[:12]}"
        )


def compute_lte_autoencoder(
    model: LTEAutoencoder,
    interactions: pd.DataFrame,
    basis: SemanticBasis,
    window: LTEWindow,
    as_of: Sequence[pd.Timestamp],
    show_progress: bool = True,
    batch_size: int = 8192,
    num_threads: int | None = 1,
) -> pd.DataFrame:
    """LTE = the encoder's coefficients ``z`` for each user's lagged window.

    Same rows and columns as :func:`compute_lte_average` (the window rule, the empty-window
    rule and ``n_items`` are identical); only ``lte`` differs. The basis must be the model's
    (same fingerprint), otherwise ``z`` would be read in the wrong coordinate system.
    """
    _check_basis(model, basis)
    ev = _prepare_events(interactions, basis)
    times = as_of_us(as_of)
    vectors64 = basis.vectors.astype(np.float64)
    users_parts, t_parts, lte_parts, n_parts = [], [], [], []
    model.eval()
    with torch.no_grad(), torch_threads(num_threads):
        for t_us in track(times, len(times), "LTE autoencoder snapshots", show_progress):
            snap = _window_snapshot(ev, window, int(t_us))
            if not len(snap.users):
                continue
            means = _window_means(snap, vectors64).astype(np.float32)
            z = np.empty_like(means)
            for start in range(0, len(means), batch_size):
                sl = slice(start, start + batch_size)
                z[sl] = model(torch.from_numpy(means[sl]), torch.from_numpy(snap.n_items[sl])).numpy()
            users_parts.append(snap.users)
            t_parts.append(np.full(len(snap.users), t_us, dtype=np.int64))
            lte_parts.append(z)
            n_parts.append(snap.n_items)
    return _concat_frame(ev, basis.dim, users_parts, t_parts, lte_parts, n_parts)


MODEL_WEIGHTS = "encoder.pt"
MODEL_CONFIG = "config.json"


def save_lte_autoencoder(model: LTEAutoencoder, directory: Path | str) -> Path:
    """Write ``encoder.pt`` (state dict: encoder weights only) and ``config.json`` to ``directory``.

    The encoder is part of the LTE feature version (it defines what ``z`` means), so it is
    stored next to the version; the basis is not duplicated -- only its fingerprint.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / MODEL_WEIGHTS)
    (out / MODEL_CONFIG).write_text(json.dumps(asdict(model.config), indent=2, sort_keys=True))
    return out


def load_lte_autoencoder(directory: Path | str, basis: SemanticBasis, strict_basis: bool = True) -> LTEAutoencoder:
    """Rebuild a saved model around ``basis``.

    ``strict_basis`` (default) refuses a basis with a different fingerprint than the one the
    encoder was trained with; a same-dimension basis is accepted otherwise, with a warning.
    """
    src = Path(directory)
    cfg = json.loads((src / MODEL_CONFIG).read_text())
    if int(cfg["dim"]) != basis.dim:
        raise ValueError(f"saved LTE autoencoder has dim {cfg['dim']}, basis has {basis.dim}")
    if cfg["basis_fingerprint"] != basis.fingerprint:
        msg = f"saved LTE autoencoder basis {cfg['basis_fingerprint'][:12]} != given basis {basis.fingerprint[:12]}"
        if strict_basis:
            raise ValueError(msg)
        log.warning("%s; loading anyway", msg)
    model = LTEAutoencoder(
        basis, hidden=int(cfg["hidden"]), use_count=bool(cfg["use_count"]), temperature=float(cfg["temperature"])
    )
    state = torch.load(src / MODEL_WEIGHTS, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.config.training = dict(cfg.get("training", {}))
    model.eval()
    return model
