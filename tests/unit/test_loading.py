"""The bad-row policy: exact line numbers, error by default, counted skips, helpful not-found errors.

Every file here is synthetic and written by the test itself; no shared dataset content is used.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store.sources.adapters import list_datasets, load_dataset
from feature_store.sources.adapters.ctr import infer_field_ranges
from feature_store.sources.loading import (
    DatasetNotFoundError,
    LoadReport,
    MalformedRowError,
    RowChecks,
    read_table,
)


def write_gz(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text)
    return path


def ml_root(tmp_path: Path, ratings_rows: list[str]) -> Path:
    """A fake datasets root with a made-up ml-latest-small layout."""
    root = tmp_path / "datasets"
    write_gz(
        root / "ml-latest-small/ratings.csv.gz", "userId,movieId,rating,timestamp\n" + "\n".join(ratings_rows) + "\n"
    )
    write_gz(
        root / "ml-latest-small/movies.csv.gz",
        "movieId,title,genres\n10,Film A,Comedy|Drama\n20,Film B,(no genres listed)\n",
    )
    return root


GOOD = ["1,10,4.0,1000000000", "1,20,3.5,1000000100", "2,10,5.0,1000000200"]


def test_bad_timestamp_names_file_and_editor_line(tmp_path: Path) -> None:
    # Header is line 1, so the 4th data row is line 5.
    root = ml_root(tmp_path, [*GOOD, "2,20,1.0,abc", "3,10,2.0,1000000300"])
    with pytest.raises(MalformedRowError) as info:
        load_dataset("ml-latest-small", root=root)
    err = info.value
    assert (err.file, err.line) == ("ml-latest-small/ratings.csv.gz", 5)
    assert str(err) == "ml-latest-small/ratings.csv.gz line 5: timestamp 'abc' is not an integer"


def test_error_reports_the_first_bad_row_in_file_order(tmp_path: Path) -> None:
    # The later row fails an earlier-run check (userId); the earlier row fails a later one (timestamp).
    root = ml_root(tmp_path, [*GOOD, "2,20,1.0,x", "u,10,2.0,1"])
    with pytest.raises(MalformedRowError, match=r"line 5: timestamp 'x'"):
        load_dataset("ml-latest-small", root=root)


def test_skip_drops_bad_rows_reports_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = ml_root(tmp_path, [*GOOD, "2,20,1.0,abc", "2,20,,1000000400", "3,10,2.0,1000000300,extra"])
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("ml-latest-small", root=root, on_bad_rows="skip")
    assert len(ds.interactions) == 3
    report = next(r for r in ds.meta["load_reports"] if r.file.endswith("ratings.csv.gz"))
    assert isinstance(report, LoadReport)
    assert (report.rows_read, report.rows_skipped, report.rows_kept) == (6, 3, 3)
    assert report.reasons == [
        "line 5: timestamp 'abc' is not an integer",
        "line 6: rating is empty",
        "line 7: expected 4 fields, found 5",
    ]
    assert "skipped 3 of 6" in caplog.text and "ratings.csv.gz" in caplog.text
    assert "skipped 3 of 6" in str(report)


def test_clean_file_reports_nothing_skipped(tmp_path: Path) -> None:
    ds = load_dataset("ml-latest-small", root=ml_root(tmp_path, GOOD))
    assert [r.rows_skipped for r in ds.meta["load_reports"]] == [0, 0]
    assert ds.interactions["timestamp"].dtype == "datetime64[us, UTC]"
    assert ds.items.set_index("item_id").loc["20", "attributes"] == []


def test_line_numbers_survive_blank_lines_quoted_newlines_and_long_rows(tmp_path: Path) -> None:
    text = 'a,b,c\n1,2,3\n\n"multi\nline",5,6\n7,8,9,10,11\n12,13,x\n'
    path = tmp_path / "t.csv.gz"
    write_gz(path, text)
    table = read_table(path, "t.csv.gz", columns=["a", "b", "c"])
    assert table.lines.tolist() == [2, 4, 7]  # blank line 3 dropped; "multi\nline" spans lines 4-5
    assert table.parse_errors == [(6, "expected 3 fields, found 5")]
    checks = table.checks("t.csv.gz", "error")
    checks.integer(table.frame["c"], "c")
    with pytest.raises(MalformedRowError) as info:
        checks.apply(table.frame)
    assert info.value.line == 6  # the parser's reject comes before the bad value on line 7


def test_row_of_empty_fields_is_bad_but_blank_line_is_not(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n\n,\n3,4\n")
    table = read_table(path, "t.csv", columns=["a", "b"])
    assert table.lines.tolist() == [2, 5]
    assert table.parse_errors == [(4, "all fields are empty")]


def test_wrong_header_is_always_an_error(tmp_path: Path) -> None:
    path = write_gz(tmp_path / "h.csv.gz", "user,item\n1,2\n")
    with pytest.raises(MalformedRowError, match=r"h.csv.gz line 1: header"):
        read_table(path, "h.csv.gz", columns=["userId", "movieId"])


def test_unclosed_quote_is_fatal_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text('a,b\n1,2\n3,"oops\n4,5\n')
    with pytest.raises(MalformedRowError, match=r"line 3: cannot be parsed"):
        read_table(path, "q.csv", columns=["a", "b"])


def test_row_checks_unique_and_numeric_parsing() -> None:
    raw = pd.Series(["5", "-3", "5", "7.5", ""])
    checks = RowChecks("f", len(raw), "skip")
    values = checks.integer(raw, "n", allow_empty=True)
    checks.unique(raw, "n")
    assert values.iloc[1] == -3 and pd.isna(values.iloc[4])
    kept, report = checks.apply(pd.DataFrame({"n": raw}))
    assert kept["n"].tolist() == ["5", "-3", ""]
    assert report.reasons == ["line 3: n '5' repeats (first at line 1)", "line 4: n '7.5' is not an integer"]


def test_json_document_errors_name_the_entry(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    doc = {"u1": [[1, 2], [3]], "u2": [[4], "not-a-basket", [5]]}
    write_gz(root / "tafeng/tafeng_merged.json.gz", json.dumps(doc))
    with pytest.raises(MalformedRowError) as info:
        load_dataset("tafeng", root=root)
    assert info.value.line is None and info.value.location == "user 'u2' basket 1"
    assert str(info.value).startswith("tafeng/tafeng_merged.json.gz user 'u2' basket 1: ")
    ds = load_dataset("tafeng", root=root, on_bad_rows="skip")
    assert ds.meta["load_reports"][0].rows_skipped == 1
    # Basket positions are kept: u2's third basket is still day 2 after its second was dropped.
    u2 = ds.interactions[ds.interactions["user_id"] == "u2"]
    assert u2["basket_id"].tolist() == ["u2:0", "u2:2"]
    assert (u2["timestamp"].dt.day - 1).tolist() == [0, 2]


def test_missing_root_and_missing_dataset_are_helpful(tmp_path: Path) -> None:
    missing_root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("groceries", root=missing_root)
    msg = str(info.value)
    assert str(missing_root) in msg and "'groceries'" in msg
    assert "RECSYS_DATASETS_ROOT" in msg and "--datasets-root" in msg
    assert isinstance(info.value, FileNotFoundError)

    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"Groceries_dataset.csv.gz not found"):
        load_dataset("groceries", root=tmp_path / "empty")


def test_env_var_sets_the_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_DATASETS_ROOT", str(ml_root(tmp_path, GOOD)))
    assert len(load_dataset("ml-latest-small").interactions) == 3


def test_unknown_dataset_and_policy_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known datasets: ml-latest-small"):
        load_dataset("ml-100k", root=tmp_path)
    with pytest.raises(ValueError, match="on_bad_rows"):
        load_dataset("ml-latest-small", root=tmp_path, on_bad_rows="ignore")  # type: ignore[arg-type]


def test_registry_names() -> None:
    names = list_datasets()
    for expected in (
        "ml-latest-small",
        "ml-1m",
        "amazon-beauty",
        "amazon-sports",
        "groceries",
        "tafeng",
        "frappe",
        "criteo",
        "lastfm-2k",
        "lastfm-1k-sample",
        "mpd-sample",
        "yoochoose-100k",
        "diginetica-sample",
        "amazon-musical-instruments",
        "cdr-sport-cloth",
        "cdr-cloth-sport",
        "cdr-electronic-phone",
        "cdr-phone-electronic",
    ):
        assert expected in names


def test_infer_field_ranges_from_one_hot_rows() -> None:
    rng = np.random.default_rng(0)
    bounds = [(0, 9), (10, 14), (15, 16)]
    ids = np.column_stack([rng.integers(lo, hi + 1, size=200) for lo, hi in bounds])
    ids[0] = [0, 10, 15]
    ids[1] = [9, 14, 16]
    assert infer_field_ranges(ids) == bounds
    broken = ids.copy()
    broken[2] = [3, 5, 15]  # two features of field 0, none of field 1
    with pytest.raises(ValueError, match="contiguous"):
        infer_field_ranges(broken)
