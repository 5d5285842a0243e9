"""Shared plumbing for the adapters: locating files, applying the bad-row policy, finishing a Dataset."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from feature_store.sources.loading import (
    BadRowPolicy,
    DatasetNotFoundError,
    LoadReport,
    RowChecks,
    Table,
    check_policy,
    read_table,
    read_text_lines,
    require_path,
)
from feature_store.sources.schema import DAY_INDEX_EPOCH, Dataset, TimeKind, validate_interactions, validate_items


class DatasetLoader(Protocol):
    """What every entry of the registry is: read one dataset from the datasets root."""

    def __call__(self, root: Path, on_bad_rows: BadRowPolicy = "error") -> Dataset: ...


@dataclass
class Source:
    """One dataset's files under the datasets root, plus the load reports gathered while reading them."""

    root: Path
    dataset: str
    on_bad_rows: BadRowPolicy
    reports: list[LoadReport] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.on_bad_rows = check_policy(self.on_bad_rows)
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise DatasetNotFoundError(self.root, self.dataset, self.root)

    def require(self, *relative: str) -> list[Path]:
        """Check every file a loader needs up front, so a missing one fails before any parsing."""
        return [require_path(self.root / rel, self.dataset, self.root) for rel in relative]

    def display(self, path: Path) -> str:
        """How a file is named in errors and reports: relative to the root (several are called train.txt)."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def table(
        self,
        rel: str,
        columns: Sequence[str],
        *,
        sep: str = ",",
        header: bool = True,
        quoting: int = csv.QUOTE_MINIMAL,
        encoding: str = "utf-8",
    ) -> tuple[Table, RowChecks]:
        """Read a delimited file as text and start its checks."""
        path = self.root / rel
        name = self.display(path)
        table = read_table(path, name, sep=sep, columns=columns, header=header, quoting=quoting, encoding=encoding)
        return table, table.checks(name, self.on_bad_rows)

    def lines(self, rel: str, encoding: str = "utf-8") -> list[str]:
        return read_text_lines(self.root / rel, encoding=encoding)

    def checks(self, rel: str, n_rows: int, **kwargs: object) -> RowChecks:
        return RowChecks(self.display(self.root / rel), n_rows, self.on_bad_rows, **kwargs)  # type: ignore[arg-type]

    def apply(self, checks: RowChecks, frame: pd.DataFrame) -> pd.DataFrame:
        """Apply the bad-row policy and keep the report for ``Dataset.meta["load_reports"]``."""
        kept, report = checks.apply(frame)
        self.reports.append(report)
        return kept


def day_index(users: pd.Series | np.ndarray) -> pd.Series:
    """Timestamps for order-only data: the k-th row of each user (file order) is EPOCH + k days."""
    steps = pd.Series(np.asarray(users)).groupby(np.asarray(users), sort=False).cumcount()
    return day_steps(steps.to_numpy())


def day_steps(steps: np.ndarray | pd.Series) -> pd.Series:
    """EPOCH + k days for a given step k (basket number, playlist position)."""
    k = np.asarray(steps, dtype="int64")
    return pd.Series(DAY_INDEX_EPOCH + pd.to_timedelta(k, unit="D"))


def unix_seconds(seconds: pd.Series | np.ndarray) -> pd.Series:
    """UTC timestamps from unix seconds (int or float), rounded to the microsecond."""
    s = np.asarray(seconds)
    if s.dtype.kind == "f":
        us = np.round(s * 1_000_000).astype("int64")
        return pd.Series(pd.to_datetime(us, unit="us", utc=True))
    return pd.Series(pd.to_datetime(s.astype("int64"), unit="s", utc=True))


def cover_items(items: pd.DataFrame | None, item_ids: pd.Series) -> pd.DataFrame:
    """Items from metadata, plus a bare row (text "", no attributes) for every other interacted item."""
    ids = pd.Series(pd.unique(item_ids.astype(str)), dtype=object)
    if items is None or items.empty:
        return pd.DataFrame({"item_id": ids})
    missing = ids[~ids.isin(items["item_id"].astype(str))]
    if missing.empty:
        return items
    return pd.concat([items, pd.DataFrame({"item_id": missing})], ignore_index=True)


def build(
    name: str,
    interactions: pd.DataFrame,
    items: pd.DataFrame | None,
    time_kind: TimeKind,
    source: Source,
    **meta: object,
) -> Dataset:
    """Validate, make items cover every interacted item, and attach the load reports."""
    inter = validate_interactions(interactions.reset_index(drop=True))
    covered = cover_items(None if items is None else items.reset_index(drop=True), inter["item_id"])
    if "attributes" in covered.columns:
        covered["attributes"] = covered["attributes"].map(lambda v: v if isinstance(v, list) else [])
    item_frame = validate_items(covered)
    return Dataset(
        name=name,
        interactions=inter,
        items=item_frame,
        time_kind=time_kind,
        meta={"load_reports": source.reports, "source_root": str(source.root), **meta},
    )
