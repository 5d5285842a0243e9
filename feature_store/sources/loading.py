"""The bad-row policy every dataset adapter shares, and the low-level readers that enforce it.

Real dumps contain the odd broken line (an empty field, a timestamp that is not a number). The
default is to stop at the first one and say exactly where it is (``file line N: reason``), because
silently dropping data changes every metric computed from it. With ``on_bad_rows="skip"`` the bad
rows are dropped instead, counted in a :class:`LoadReport` and logged as a warning, so the loss is
visible but does not block work.

Parsing stays vectorised: a file is read once with pandas (all columns as text), each check is a
boolean mask over the whole frame, and only the first few bad rows are turned into messages. The
line numbers are what an editor shows: 1-based, the header line counted, blank lines and quoted
multi-line fields accounted for.
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

BadRowPolicy = Literal["error", "skip"]
BAD_ROW_POLICIES: tuple[str, ...] = ("error", "skip")
# How many bad-row reasons a LoadReport keeps; enough to see the pattern without flooding logs.
MAX_REPORTED_REASONS = 5


class MalformedRowError(ValueError):
    """A row of a dataset file cannot be read; names the file, the 1-based line and the reason."""

    def __init__(self, file: str, line: int | None, reason: str, location: str | None = None) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        # For whole-document JSON files there are no useful line numbers; "user '17' basket 3" instead.
        self.location = location
        where = f"line {line}" if line is not None else (location or "(unknown position)")
        super().__init__(f"{file} {where}: {reason}")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder or file is missing; says how to point the loader at the shared datasets."""

    def __init__(self, path: Path, dataset: str, root: Path | None = None) -> None:
        self.path = Path(path)
        self.dataset = dataset
        self.root = root
        hint = f" (datasets root: {root})" if root is not None and Path(root) != self.path else ""
        super().__init__(
            f"dataset {dataset!r}: {self.path} not found{hint}. "
            "Set RECSYS_DATASETS_ROOT or pass --datasets-root to the folder that holds the shared datasets."
        )


@dataclass
class LoadReport:
    """What one file contributed: rows read, rows dropped as malformed, and why (first few).

    A row is the file's unit: a line, or for JSON documents a basket / an item entry.
    """

    file: str
    rows_read: int
    rows_skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.rows_skipped

    def __str__(self) -> str:
        if not self.rows_skipped:
            return f"{self.file}: {self.rows_read:,} rows, none skipped"
        return (
            f"{self.file}: skipped {self.rows_skipped:,} of {self.rows_read:,} malformed rows; "
            f"first: {'; '.join(self.reasons)}"
        )


def check_policy(on_bad_rows: str) -> BadRowPolicy:
    """Fail early on a typo such as ``on_bad_rows="skp"`` instead of silently defaulting."""
    if on_bad_rows not in BAD_ROW_POLICIES:
        raise ValueError(f"on_bad_rows must be one of {BAD_ROW_POLICIES}, got {on_bad_rows!r}")
    return on_bad_rows  # type: ignore[return-value]


def require_path(path: Path, dataset: str, root: Path | None = None) -> Path:
    """Return ``path`` if it exists, else raise DatasetNotFoundError (before any parsing starts)."""
    if not path.exists():
        raise DatasetNotFoundError(path, dataset, root)
    return path


_INTEGER = r"[+-]?\d+"


class RowChecks:
    """Vectorised validity checks over the rows of one file, then the bad-row policy.

    Each check marks rows as bad with a boolean mask and a template for the reason; the reason text
    is only built for the rows that end up in an error or a report. ``lines`` gives each row's
    1-based line in the file; ``locate`` (JSON documents) names a row instead of a line number.
    """

    def __init__(
        self,
        file: str,
        n_rows: int,
        on_bad_rows: BadRowPolicy,
        lines: np.ndarray | None = None,
        locate: Callable[[int], str] | None = None,
        pre_bad: Sequence[tuple[int, str]] = (),
    ) -> None:
        self.file = file
        self.n_rows = n_rows
        self.policy = check_policy(on_bad_rows)
        self.lines = lines if lines is not None else np.arange(1, n_rows + 1, dtype=np.int64)
        self.locate = locate
        self.bad = np.zeros(n_rows, dtype=bool)
        self._checks: list[tuple[np.ndarray, Callable[[int], str]]] = []
        # Lines the parser itself rejected (wrong field count); they have no row in the frame.
        self.pre_bad = sorted(pre_bad)

    # -- checks -------------------------------------------------------------------------------------

    def flag(self, mask: np.ndarray | pd.Series, reason: Callable[[int], str]) -> None:
        """Mark rows where ``mask`` is true as bad; ``reason(row_position)`` explains one of them."""
        m = np.asarray(mask, dtype=bool)
        if m.any():
            self.bad |= m
            self._checks.append((m, reason))

    def nonempty(self, raw: pd.Series, column: str) -> None:
        self.flag(raw.eq("").to_numpy(), lambda i: f"{column} is empty")

    def integer(self, raw: pd.Series, column: str, *, allow_empty: bool = False) -> pd.Series:
        """Parse integers; rows that are not integers are flagged. Empty -> <NA> when allowed."""
        digits = raw.str.isdecimal().to_numpy(dtype=bool)
        if digits.all():  # the common case, and ~10x cheaper than a regex
            try:
                values = raw.astype("int64")
                return values.astype("Int64") if allow_empty else values
            except (ValueError, OverflowError):
                pass
        ok = raw.str.fullmatch(_INTEGER).to_numpy(dtype=bool)
        values = pd.to_numeric(raw.where(ok, None), errors="coerce")
        ok &= values.notna().to_numpy() & (values.abs() < 2**63).to_numpy()
        empty = raw.eq("").to_numpy()
        self._flag_values(~ok & ~(empty & allow_empty), raw, column, "is not an integer")
        values = values.where(ok)
        return values.astype("Int64") if allow_empty else values.fillna(0).astype("int64")

    def number(self, raw: pd.Series, column: str) -> pd.Series:
        """Parse finite floats (decimal or exponent notation); anything else is flagged."""
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        ok = np.isfinite(values.to_numpy())
        self._flag_values(~ok, raw, column, "is not a number")
        return values.where(ok, 0.0)

    def one_of(self, raw: pd.Series, column: str, allowed: Sequence[str]) -> None:
        ok = raw.isin(list(allowed)).to_numpy()
        self._flag_values(~ok, raw, column, f"is not one of {list(allowed)}")

    def matches(self, raw: pd.Series, column: str, pattern: str, expected: str) -> None:
        """Flag values that do not fully match ``pattern``; ``expected`` says in words what should be there."""
        ok = raw.str.fullmatch(pattern).to_numpy(dtype=bool)
        self._flag_values(~ok, raw, column, f"is not {expected}")

    def date(self, raw: pd.Series, column: str, fmt: str, expected: str) -> pd.Series:
        """Parse calendar dates with an exact format (as UTC midnight); unparseable ones are flagged."""
        parsed = pd.to_datetime(raw, format=fmt, errors="coerce", utc=True)
        self._flag_values(parsed.isna().to_numpy(), raw, column, f"is not a date ({expected})")
        return parsed

    def unique(self, raw: pd.Series, column: str) -> None:
        """Flag repeats of a key (a user or item listed twice); the first good occurrence wins.

        Call it after the other checks of the key, so rows already bad do not claim a key.
        """
        good = ~self.bad
        dup = np.zeros(len(raw), dtype=bool)
        dup[good] = raw[good].duplicated().to_numpy()
        if dup.any():
            first = good & ~dup
            first_line = dict(zip(raw[first].to_numpy(), self.lines[first], strict=True))

            def reason(i: int) -> str:
                v = raw.iloc[i]
                return f"{column} {_clip(v)!r} repeats (first at line {first_line[v]})"

            self.flag(dup, reason)

    def _flag_values(self, mask: np.ndarray, raw: pd.Series, column: str, what: str) -> None:
        def reason(i: int) -> str:
            value = raw.iloc[i]
            return f"{column} is empty" if value == "" else f"{column} {_clip(value)!r} {what}"

        self.flag(mask, reason)

    # -- policy -------------------------------------------------------------------------------------

    def reason_for(self, i: int) -> str:
        for mask, reason in self._checks:
            if mask[i]:
                return reason(i)
        raise AssertionError("row is not bad")  # pragma: no cover

    def _where(self, i: int) -> tuple[int | None, str | None]:
        if self.locate is not None:
            return None, self.locate(i)
        return int(self.lines[i]), None

    def _first_bad(self, limit: int) -> list[tuple[int | None, str | None, str]]:
        """The first ``limit`` problems in file order: (line, location, reason)."""
        out: list[tuple[int, int | None, str | None, str]] = []
        rows = np.flatnonzero(self.bad)[:limit]
        for i in rows:
            line, loc = self._where(int(i))
            out.append((int(self.lines[i]), line, loc, self.reason_for(int(i))))
        for line, reason in self.pre_bad[:limit]:
            out.append((line, line, None, reason))
        out.sort(key=lambda t: t[0])
        return [(line, loc, reason) for _, line, loc, reason in out[:limit]]

    def apply(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, LoadReport]:
        """Raise on the first bad row ("error") or drop the bad rows and report them ("skip").

        ``frame`` has one row per checked row, in the same order.
        """
        if len(frame) != self.n_rows:
            raise ValueError(f"frame has {len(frame)} rows but {self.n_rows} were checked")
        n_bad = int(self.bad.sum()) + len(self.pre_bad)
        report = LoadReport(self.file, rows_read=self.n_rows + len(self.pre_bad), rows_skipped=0)
        if n_bad == 0:
            return frame, report
        if self.policy == "error":
            line, loc, reason = self._first_bad(1)[0]
            raise MalformedRowError(self.file, line, reason, location=loc)
        report.rows_skipped = n_bad
        report.reasons = [
            f"{'line ' + str(line) if line is not None else loc}: {reason}"
            for line, loc, reason in self._first_bad(MAX_REPORTED_REASONS)
        ]
        log.warning(
            "%s: skipped %d of %d rows as malformed (on_bad_rows='skip'); first: %s",
            self.file,
            n_bad,
            report.rows_read,
            report.reasons[0],
        )
        return frame.loc[~self.bad].reset_index(drop=True), report


def _clip(value: object, limit: int = 60) -> object:
    """Keep error messages readable when a broken line is very long."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "..."
    return value


@dataclass
class Table:
    """A delimited file read as text: the frame, each row's 1-based line, and lines the parser rejected."""

    frame: pd.DataFrame
    lines: np.ndarray
    parse_errors: list[tuple[int, str]]

    def checks(self, file: str, on_bad_rows: BadRowPolicy) -> RowChecks:
        return RowChecks(file, len(self.frame), on_bad_rows, lines=self.lines, pre_bad=self.parse_errors)


_SKIPPING = re.compile(r"Skipping line (\d+): expected \d+ fields, saw (\d+)")
# One spare column catches a single surplus field per row, so pandas never guesses an index column
# (it does that when the first data row is longer than the header) and never drops it silently.
_SPARE = "\x00spare"


def read_table(
    path: Path,
    file: str,
    *,
    sep: str = ",",
    columns: Sequence[str],
    header: bool = True,
    quoting: int = csv.QUOTE_MINIMAL,
    encoding: str = "utf-8",
) -> Table:
    """Read a (possibly gzipped) delimited file with every field as text, keeping exact line numbers.

    ``columns`` are the expected header names (or the names to give a headerless file). Rows with
    the wrong number of fields are not fatal here: short rows come back with empty fields (the
    caller's checks flag them), long rows come back in ``parse_errors``, so the caller's bad-row
    policy decides. Blank lines carry no data and are dropped silently; a line of empty fields is a
    parse error.
    A wrong header is always an error: no row can be trusted then.
    """
    n = len(columns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(
                path,
                sep=sep,
                header=None,
                names=[*columns, _SPARE],
                index_col=False,
                dtype=str,
                na_filter=False,
                skip_blank_lines=False,
                quoting=quoting,
                encoding=encoding,
                compression="infer",
                on_bad_lines="warn",
                engine="c",
            )
        except pd.errors.EmptyDataError:
            raise MalformedRowError(file, 1, "file is empty") from None
        except pd.errors.ParserError as exc:
            # E.g. an unclosed quote swallowing the rest of the file: nothing after it can be trusted,
            # so this is fatal under either policy.
            # pandas says "line N" 1-based but "row N" 0-based (records; quoted newlines not counted).
            m = re.search(r"(line|row) (\d+)", str(exc))
            line = None if m is None else int(m.group(2)) + (m.group(1) == "row")
            raise MalformedRowError(file, line, f"cannot be parsed: {str(exc).strip()}", location="file") from None
    # pandas numbers records from 1 (a header counts); mapped to physical lines below.
    rejected: list[tuple[int, str]] = []
    for w in caught:
        for m in _SKIPPING.finditer(str(w.message)):
            rejected.append((int(m.group(1)), f"expected {n} fields, found {m.group(2)}"))
    records = np.arange(1, len(frame) + len(rejected) + 1, dtype=np.int64)
    if rejected:
        records = np.setdiff1d(records, np.array([r for r, _ in rejected], dtype=np.int64))
    lines, hidden = _records_to_lines(frame, records)
    parse_errors = []
    for rec, why in rejected:
        kept_before = int(np.searchsorted(records, rec))
        parse_errors.append((rec + (int(hidden[kept_before - 1]) if kept_before else 0), why))
    surplus = frame[_SPARE].ne("").to_numpy()
    if header:
        if not len(frame) or records[0] != 1:
            raise MalformedRowError(file, 1, f"header should have {n} fields {list(columns)}")
        found = frame.iloc[0, :n].tolist()
        if found != list(columns) or surplus[0]:
            raise MalformedRowError(file, 1, f"header is {frame.iloc[0].tolist()[: n + 1]}; expected {list(columns)}")
        frame, lines, surplus = frame.iloc[1:], lines[1:], surplus[1:]
    # Rows with exactly one surplus field: report them like the parser's rejects.
    if surplus.any():
        parse_errors.extend((int(line), f"expected {n} fields, found {n + 1}") for line in lines[surplus])
        parse_errors.sort()
        frame, lines = frame.loc[~surplus], lines[~surplus]
    frame = frame.drop(columns=_SPARE)
    # Blank lines come back as all-empty rows: drop them, they carry nothing. A row of empty fields
    # (",,") looks the same to pandas but is a broken record, so look at the raw line to tell them apart.
    if len(frame):
        empty = np.ones(len(frame), dtype=bool)
        for col in frame.columns:
            empty &= frame[col].eq("").to_numpy()
            if not empty.any():
                break
        if empty.any():
            raw = read_text_lines(path, encoding=encoding)
            for line in lines[empty]:
                if line <= len(raw) and raw[line - 1].strip():
                    parse_errors.append((int(line), "all fields are empty"))
            parse_errors.sort()
            frame, lines = frame.loc[~empty], lines[~empty]
    return Table(frame.reset_index(drop=True), lines, parse_errors)


def _records_to_lines(frame: pd.DataFrame, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Physical lines of records: shifted by the newlines inside quoted fields of earlier rows.

    Returns the lines and, per row, the newlines hidden up to and including that row.
    """
    embedded = np.zeros(len(frame), dtype=np.int64)
    for col in frame.columns:
        s = frame[col]
        has = s.str.contains("\n", regex=False).to_numpy(dtype=bool)
        if has.any():
            embedded[has] += s[has].str.count("\n").to_numpy(dtype=np.int64)
    hidden = np.cumsum(embedded)
    return records + hidden - embedded, hidden


def read_text_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """All lines of a (gzipped) text file without line endings; index i is line i + 1."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    lines = data.decode(encoding).replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
