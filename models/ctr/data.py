"""CTR inputs: raw field values -> one global int64 id per categorical field (+ optional float numerics).

Id layout (one embedding table for all fields)::

    field 0: [offset_0 = 0]  OOV / unseen value (the field's default_id), then its vocabulary
    field 1: [offset_1]      OOV, then its vocabulary
    ...

Every categorical field reserves its first id for values the vocabulary does not know (unseen,
or rarer than ``min_count`` in the fitting rows), so a request can always be encoded. The
vocabulary is built from the rows the model is fitted on only (not validation, not test).

Raw values are normalised to strings by :func:`raw_key` (``3``, ``3.0`` and ``"3"`` are the same
value; ``None``, NaN and ``""`` are the empty string, which is an ordinary vocabulary entry when
it occurs in training: Criteo's missing categoricals become a learned "missing" id).

Numeric fields (Criteo I1..I13) stay floats: :func:`encode_rows` passes the raw number, a
missing value becomes the field's ``default`` (0.0), and the model applies the transform
(``sign(x) * log1p(|x|)``) inside its graph, so a service sends raw numbers. The alternative,
bucketising numerics into categorical ids, was not used: a float input keeps the contract's
``numeric`` input exercised and needs no bucket boundaries in ``fields.json``.

Data sets: :func:`frappe_splits` (the NFM "validation" file as train, "test" file as test,
validation for early stopping carved out of train by a fixed seed), :func:`criteo_splits` (the
1,999-row head sample; format proof only) and :func:`synthetic_splits`
(:mod:`feature_store.sources.synthetic_ctr`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FRAPPE_FIELDS: tuple[str, ...] = ("user_id", "item_id", *(f"context_{j}" for j in range(2, 10)))
CRITEO_NUMERIC: tuple[str, ...] = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CATEGORICAL: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 27))
NUMERIC_TRANSFORM = "signed_log1p"  # applied inside the model graph: sign(x) * log1p(|x|)


@dataclass
class CategoricalField:
    """One categorical field: ids ``offset .. offset + size - 1``; ``default_id`` (= offset) is OOV."""

    name: str
    offset: int
    size: int
    default_id: int
    values: dict[str, int]  # raw_key(value) -> global id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NumericField:
    """One float field; ``default`` replaces a missing or unparseable value before the transform."""

    name: str
    default: float = 0.0
    transform: str = NUMERIC_TRANSFORM

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FieldSpec:
    """Everything needed to turn a raw row into model inputs (written as the artifact's ``fields.json``)."""

    categorical: list[CategoricalField]
    numeric: list[NumericField] = field(default_factory=list)

    @property
    def n_features(self) -> int:
        """Size of the shared id space (embedding table rows)."""
        return sum(f.size for f in self.categorical)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.categorical] + [f.name for f in self.numeric]

    def to_dict(self) -> dict[str, Any]:
        return {"categorical": [f.to_dict() for f in self.categorical], "numeric": [f.to_dict() for f in self.numeric]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FieldSpec:
        return cls(
            categorical=[CategoricalField(**f) for f in d["categorical"]],
            numeric=[NumericField(**f) for f in d.get("numeric", [])],
        )


def raw_key(value: object) -> str:
    """The vocabulary key of a raw value: missing -> "", integral numbers without ".0", else ``str``."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return ""
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if value is pd.NA:
        return ""
    return str(value)


def _numeric_value(value: object, default: float) -> tuple[float, bool]:
    """``(float, unknown)``: missing -> default (expected, not unknown); unparseable -> default, unknown."""
    if value is None or value is pd.NA or (isinstance(value, str) and value.strip() == ""):
        return default, False
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default, True
    if math.isnan(v):
        return default, False
    if not math.isfinite(v):
        return default, True
    return v, False


def build_spec(
    frame: pd.DataFrame,
    categorical: Sequence[str],
    numeric: Sequence[str] = (),
    min_count: int = 1,
) -> FieldSpec:
    """Vocabulary of each categorical column (values seen >= ``min_count`` times), ordered by count then value."""
    fields: list[CategoricalField] = []
    offset = 0
    for name in categorical:
        counts = frame[name].map(raw_key).value_counts()
        kept = counts[counts >= min_count]
        # Deterministic order: frequent first, ties by the key itself.
        order = sorted(kept.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
        values = {str(k): offset + 1 + i for i, (k, _) in enumerate(order)}
        fields.append(
            CategoricalField(name=name, offset=offset, size=len(values) + 1, default_id=offset, values=values)
        )
        offset += len(values) + 1
    return FieldSpec(categorical=fields, numeric=[NumericField(name=n) for n in numeric])


def encode_rows(spec: FieldSpec, rows: list[dict[str, object]]) -> tuple[np.ndarray, np.ndarray | None, dict[str, int]]:
    """Raw request rows -> ``(feature_ids int64 [n, n_cat], numeric float32 [n, n_num] | None, unknown)``.

    ``unknown[field]`` counts the values that fell back to the default: categorical values not in
    the vocabulary (an absent field counts too: it is the value ``""``, unknown unless training saw
    it), numeric values that are present but not a finite number. A missing numeric value is
    expected (Criteo has many) and is not counted.
    """
    n_cat, n_num = len(spec.categorical), len(spec.numeric)
    ids = np.empty((len(rows), n_cat), dtype=np.int64)
    numeric = np.empty((len(rows), n_num), dtype=np.float32) if n_num else None
    unknown = {f.name: 0 for f in spec.categorical} | {f.name: 0 for f in spec.numeric}
    for i, row in enumerate(rows):
        for j, f in enumerate(spec.categorical):
            gid = f.values.get(raw_key(row.get(f.name)))
            if gid is None:
                gid = f.default_id
                unknown[f.name] += 1
            ids[i, j] = gid
        if numeric is not None:
            for j, nf in enumerate(spec.numeric):
                v, bad = _numeric_value(row.get(nf.name), nf.default)
                numeric[i, j] = v
                unknown[nf.name] += int(bad)
    return ids, numeric, unknown


def encode_frame(spec: FieldSpec, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None, dict[str, int]]:
    """:func:`encode_rows` for a whole DataFrame, vectorised per column (same result, row for row)."""
    n = len(frame)
    ids = np.empty((n, len(spec.categorical)), dtype=np.int64)
    unknown: dict[str, int] = {}
    for j, f in enumerate(spec.categorical):
        if f.name not in frame:
            ids[:, j] = f.values.get("", f.default_id)
            unknown[f.name] = n if "" not in f.values else 0
            continue
        codes, uniques = pd.factorize(frame[f.name], use_na_sentinel=True)
        lookup = np.array([f.values.get(raw_key(u), f.default_id) for u in uniques] + [f.values.get("", f.default_id)])
        mapped = lookup[codes]  # code -1 (missing) picks the last entry: the id of ""
        ids[:, j] = mapped
        unknown[f.name] = int((mapped == f.default_id).sum())
    numeric = None
    if spec.numeric:
        numeric = np.empty((n, len(spec.numeric)), dtype=np.float32)
        for j, nf in enumerate(spec.numeric):
            col = frame[nf.name] if nf.name in frame else pd.Series([None] * n)
            parsed = pd.to_numeric(col, errors="coerce").astype("float64").to_numpy()
            present = col.map(lambda v: not (v is None or v is pd.NA or (isinstance(v, str) and not v.strip())))
            present &= ~col.map(lambda v: isinstance(v, float) and math.isnan(v))
            bad = ~np.isfinite(parsed) & present.to_numpy(dtype=bool)
            numeric[:, j] = np.where(np.isfinite(parsed), parsed, nf.default)
            unknown[nf.name] = int(bad.sum())
    return ids, numeric, unknown


@dataclass
class CTRData:
    """Model inputs of one split: ids int64 [n, n_cat], numeric float32 [n, n_num] or None, labels float32 [n]."""

    ids: np.ndarray
    numeric: np.ndarray | None
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.dtype != np.int64 or self.ids.ndim != 2:
            raise ValueError("ids must be an int64 [n, n_categorical] matrix")
        if len(self.labels) != len(self.ids) or (self.numeric is not None and len(self.numeric) != len(self.ids)):
            raise ValueError("ids, numeric and labels must have the same number of rows")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> CTRData:
        return CTRData(self.ids[rows], None if self.numeric is None else self.numeric[rows], self.labels[rows])


@dataclass
class CTRSplits:
    """Train (fitted on), validation (early stopping, calibration), test (reported once), and the spec."""

    name: str
    spec: FieldSpec
    train: CTRData
    valid: CTRData
    test: CTRData
    meta: dict[str, Any] = field(default_factory=dict)
    raw_test: pd.DataFrame | None = None  # the test rows' raw values (for end-to-end checks via encode_rows)


def _to_data(spec: FieldSpec, frame: pd.DataFrame, label: str) -> tuple[CTRData, dict[str, int]]:
    ids, numeric, unknown = encode_frame(spec, frame)
    return CTRData(ids, numeric, frame[label].to_numpy(dtype=np.float32)), unknown


def splits_from_frames(
    name: str,
    fit: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    categorical: Sequence[str],
    numeric: Sequence[str] = (),
    label: str = "label",
    min_count: int = 1,
    meta: Mapping[str, Any] | None = None,
) -> CTRSplits:
    """Vocabulary from ``fit`` only, then encode all three; OOV counts per split go into ``meta``."""
    spec = build_spec(fit, categorical, numeric, min_count=min_count)
    parts = {}
    oov = {}
    for part, frame in (("train", fit), ("valid", valid), ("test", test)):
        parts[part], unknown = _to_data(spec, frame, label)
        oov[part] = {k: v for k, v in unknown.items() if v}
    info = {
        **(meta or {}),
        "rows": {k: len(v) for k, v in parts.items()},
        "positive_rate": {k: float(v.labels.mean()) for k, v in parts.items()},
        "oov": oov,
        "min_count": min_count,
        "n_features": spec.n_features,
    }
    return CTRSplits(name, spec, parts["train"], parts["valid"], parts["test"], info, raw_test=test)


def carve_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit_rows, valid_rows)``: a fixed random ``fraction`` of ``range(n)`` for validation."""
    if not 0.0 < fraction < 1.0:
        raise ValueError("validation fraction must be in (0, 1)")
    perm = np.random.default_rng(seed).permutation(n)
    n_valid = max(1, round(n * fraction))
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


def frappe_splits(root: Path, valid_fraction: float = 0.2, split_seed: int = 2024) -> CTRSplits:
    """Frappe via the shared adapter: NFM validation file = train (minus a validation carve-out), test file = test."""
    from feature_store.sources.adapters.ctr import load_frappe

    ds = load_frappe(Path(root))
    inter = ds.interactions
    split = np.asarray(ds.meta["split"])
    if len(split) != len(inter):
        raise ValueError("Frappe split labels do not line up with the interactions")
    frame = inter[list(FRAPPE_FIELDS)].astype(str).assign(label=inter["value"].to_numpy())
    train_all = frame[split == "train"].reset_index(drop=True)
    test = frame[split == "test"].reset_index(drop=True)
    fit_rows, valid_rows = carve_validation(len(train_all), valid_fraction, split_seed)
    return splits_from_frames(
        "frappe",
        train_all.iloc[fit_rows],
        train_all.iloc[valid_rows],
        test,
        FRAPPE_FIELDS,
        meta={
            "source": "frappe.validation.libfm.gz (train) / frappe.test.libfm.gz (test)",
            "valid_fraction": valid_fraction,
            "split_seed": split_seed,
        },
    )


def criteo_splits(
    root: Path, valid_fraction: float = 0.1, test_fraction: float = 0.1, split_seed: int = 2024, min_count: int = 2
) -> CTRSplits:
    """The Criteo head sample (13 numeric + 26 categorical), randomly split; for the format, not for AUC."""
    from feature_store.sources.adapters.ctr import load_criteo

    ds = load_criteo(Path(root))
    inter = ds.interactions
    frame = pd.DataFrame({"label": inter["value"].to_numpy()})
    for c in CRITEO_NUMERIC:
        frame[c] = pd.to_numeric(inter[f"context_{c}"], errors="coerce").astype("float64")
    for c in CRITEO_CATEGORICAL:
        frame[c] = inter[f"context_{c}"].map(raw_key)
    perm = np.random.default_rng(split_seed).permutation(len(frame))
    n_test, n_valid = round(len(frame) * test_fraction), round(len(frame) * valid_fraction)
    test, valid, fit = (
        frame.iloc[np.sort(perm[:n_test])],
        frame.iloc[np.sort(perm[n_test : n_test + n_valid])],
        frame.iloc[np.sort(perm[n_test + n_valid :])],
    )
    return splits_from_frames(
        "criteo",
        fit,
        valid,
        test,
        CRITEO_CATEGORICAL,
        CRITEO_NUMERIC,
        min_count=min_count,
        meta={"source": "criteo/train_tiny.csv.gz (head sample)", "split_seed": split_seed},
    )


def synthetic_splits(
    n_impressions: int = 50_000,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.2,
    **generator: Any,
) -> CTRSplits:
    """Synthetic impressions (:mod:`feature_store.sources.synthetic_ctr`), randomly split by ``seed``.

    ``generator`` overrides other :class:`SyntheticCTRConfig` fields (n_users, n_items, ...).
    """
    from feature_store.sources.synthetic_ctr import CTR_CATEGORICAL_FIELDS, LABEL, SyntheticCTRConfig, generate_ctr

    frame = generate_ctr(SyntheticCTRConfig(n_impressions=n_impressions, seed=seed, **generator))
    perm = np.random.default_rng(seed + 1).permutation(len(frame))
    n_test, n_valid = round(len(frame) * test_fraction), round(len(frame) * valid_fraction)
    test = frame.iloc[np.sort(perm[:n_test])]
    valid = frame.iloc[np.sort(perm[n_test : n_test + n_valid])]
    fit = frame.iloc[np.sort(perm[n_test + n_valid :])]
    splits = splits_from_frames(
        "synthetic", fit, valid, test, CTR_CATEGORICAL_FIELDS, label=LABEL, meta={"generator_seed": seed}
    )
    # The oracle probability of the test rows: the best AUC any model can expect.
    splits.meta["test_p_click"] = test["p_click"].to_numpy()
    return splits


def rows_from_frame(frame: pd.DataFrame, fields: Iterable[str]) -> list[dict[str, object]]:
    """Request-style rows (``{field: raw value}``) from a frame, for tests and the demo."""
    cols = list(fields)
    return [dict(zip(cols, values, strict=True)) for values in frame[cols].itertuples(index=False, name=None)]
