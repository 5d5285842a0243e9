"""CTR inputs: vocabulary/id layout, encode_rows (the service's path) and the vectorised encoder agree."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from feature_store.config import FeatureStoreSettings
from models.ctr.data import (
    FieldSpec,
    build_spec,
    carve_validation,
    encode_frame,
    encode_rows,
    frappe_splits,
    raw_key,
    rows_from_frame,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "color": ["red", "red", "blue", "green", "red", "blue", None],
            "size": [1, 2, 2, 3, 1, 1, 2],
            "price": [1.5, None, -3.0, 10.0, 0.0, 2.0, 4.0],
            "label": [1, 0, 0, 1, 1, 0, 1],
        }
    )


def test_ids_are_contiguous_per_field_with_one_oov_id_first() -> None:
    spec = build_spec(_frame(), ["color", "size"], ["price"])
    color, size = spec.categorical
    assert (color.offset, color.default_id) == (0, 0)
    # red x3, blue x2, then green and "" (missing) once each, ties by key: "" < "green".
    assert color.values == {"red": 1, "blue": 2, "": 3, "green": 4}
    assert color.size == 5
    assert size.offset == 5 and size.default_id == 5
    assert size.values == {"1": 6, "2": 7, "3": 8}
    assert spec.n_features == 9
    assert [f.name for f in spec.numeric] == ["price"]


def test_min_count_sends_rare_values_to_the_oov_id() -> None:
    spec = build_spec(_frame(), ["color"], min_count=2)
    assert spec.categorical[0].values == {"red": 1, "blue": 2}
    ids, _, unknown = encode_rows(spec, [{"color": "green"}, {"color": "red"}])
    assert ids[:, 0].tolist() == [0, 1]
    assert unknown["color"] == 1


def test_encode_rows_maps_unknown_values_to_default_and_counts_them() -> None:
    spec = build_spec(_frame(), ["color", "size"], ["price"])
    rows: list[dict[str, object]] = [
        {"color": "red", "size": 2, "price": 1.0},
        {"color": "purple", "size": 2.0, "price": "n/a"},  # unknown colour; 2.0 is the value "2"
        {"size": "3"},  # colour absent -> "" (seen in training: not unknown), price missing -> default
        {"color": "blue", "size": 99, "price": float("inf")},
    ]
    ids, numeric, unknown = encode_rows(spec, rows)
    assert ids.dtype == np.int64 and ids.shape == (4, 2)
    assert ids.tolist() == [[1, 7], [0, 7], [3, 8], [2, 5]]
    assert numeric is not None and numeric.dtype == np.float32
    assert numeric[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert unknown == {"color": 1, "size": 1, "price": 2}  # "n/a" and inf; a missing price is expected


def test_raw_key_treats_equal_numbers_and_missing_values_alike() -> None:
    assert raw_key(3) == raw_key(3.0) == raw_key("3") == raw_key(np.int64(3)) == "3"
    assert raw_key(None) == raw_key(float("nan")) == raw_key("") == raw_key(pd.NA) == ""
    assert raw_key(2.5) == "2.5"
    assert raw_key(True) == "true"


def test_encode_frame_matches_encode_rows_row_for_row() -> None:
    fit = _frame()
    spec = build_spec(fit, ["color", "size"], ["price"], min_count=1)
    other = pd.DataFrame(
        {
            "color": ["red", "pink", None, "blue", float("nan")],
            "size": [3, 7, 1, 2.0, 2],
            "price": [None, 2.0, "x", 5, float("nan")],
        }
    )
    ids_f, num_f, unk_f = encode_frame(spec, other)
    ids_r, num_r, unk_r = encode_rows(spec, rows_from_frame(other, ["color", "size", "price"]))
    np.testing.assert_array_equal(ids_f, ids_r)
    assert num_f is not None and num_r is not None
    np.testing.assert_array_equal(num_f, num_r)
    assert unk_f == unk_r


def test_spec_round_trips_through_json_dict() -> None:
    spec = build_spec(_frame(), ["color", "size"], ["price"])
    again = FieldSpec.from_dict(spec.to_dict())
    assert again == spec
    assert again.to_dict()["categorical"][0]["values"]["red"] == 1


def test_validation_carve_out_is_fixed_by_seed_and_disjoint() -> None:
    fit_a, valid_a = carve_validation(1000, 0.2, seed=7)
    fit_b, valid_b = carve_validation(1000, 0.2, seed=7)
    _, valid_c = carve_validation(1000, 0.2, seed=8)
    np.testing.assert_array_equal(valid_a, valid_b)
    np.testing.assert_array_equal(fit_a, fit_b)
    assert len(valid_a) == 200 and not set(valid_a) & set(fit_a)
    assert len(set(valid_a) | set(fit_a)) == 1000
    assert not np.array_equal(valid_a, valid_c)
    with pytest.raises(ValueError):
        carve_validation(10, 1.0, seed=0)


@pytest.mark.datasets
def test_frappe_splits_on_the_real_data() -> None:
    root = FeatureStoreSettings().datasets_root
    if not (root / "frappe").is_dir():
        pytest.skip(f"Frappe not found under {root}; set RECSYS_DATASETS_ROOT to run the real-data test")
    splits = frappe_splits(root)
    rows = splits.meta["rows"]
    assert rows["train"] + rows["valid"] == 57_722 and rows["test"] == 28_860
    assert math.isclose(rows["valid"] / 57_722, 0.2, abs_tol=1e-3)
    assert splits.train.ids.shape[1] == 10 and splits.train.numeric is None
    # The fitting rows never hit an OOV id (the vocabulary comes from them); test rows may.
    defaults = np.array([f.default_id for f in splits.spec.categorical])
    assert not (splits.train.ids == defaults).any()
    assert set(np.unique(splits.test.labels)) == {0.0, 1.0}
    assert 0.3 < splits.train.labels.mean() < 0.36
