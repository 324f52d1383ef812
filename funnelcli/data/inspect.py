"""What is in a table, and what a density model will meet in it: the report behind ``funnel data inspect``.

:func:`~funnelcli.data.tables.read_table` refuses NaN, infinities, text and duplicate names, which is right for
training but no help in finding out what is wrong. :func:`inspect_table` reads the raw file instead and
describes every column (type, missing and non-finite counts, distinct values, range, flags), then lists each
problem ``funnel train`` would meet as one line that names the columns and says what to do about it.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from funnelcli.data.columns import constant_columns, integer_columns
from funnelcli.data.messages import cut, plural, reason, shown_value

# The same file, extension, shape and width checks, and the HDF5 reader, as read_table's own
from funnelcli.data.tables import (
    READ_FORMATS,
    PathArg,
    check_is_file,
    check_width,
    delimited_frames,
    delimited_start,
    format_for,
    read_hdf5,
)
from funnelcli.errors import UserError
from funnelcli.strict_json import json_safe

__all__ = ["HUGE", "inspect_table"]

HUGE = 1e15  # finite magnitudes above this are almost never measurements: sentinel codes such as 9.99e30
_NAME_LIMIT = 10  # columns named in one warning before the list is cut short


@dataclass(frozen=True)
class _StrayText:
    """Why a text column is not numbers: how many present values do not parse, and the first of them."""

    count: int
    row: int  # 1-based data row, as read_table's messages count them
    value: str
    mostly_numeric: bool  # read_table refuses such a column (a typo among numbers) instead of skipping it


@dataclass(frozen=True)
class _Column:
    """One column's report entry plus the facts the warnings need."""

    entry: dict[str, Any]
    stray: _StrayText | None = None


# ------------------------------------------------------------------------------------------------ report


def inspect_table(path: PathArg, *, key: str | None = None) -> dict[str, Any]:
    """Describe a CSV, TSV, Parquet or HDF5 table as it is, including what ``read_table`` would refuse.

    Returns ``{"file", "rows", "columns", "warnings"}``. Each column is ``{"name", "dtype", "missing",
    "non_finite", "unique", "min", "max", "mean", "std", "integer_valued", "constant", "numeric"}``:
    ``missing`` counts NaN/None, ``non_finite`` counts +-inf (null for non-numeric columns), and the
    statistics are over the finite values of numeric columns (``std`` with ddof=0; null when there are
    none). A column is numeric when ``read_table`` would read it as numbers. ``warnings`` holds one line
    per problem a density model will meet. The result is strict JSON (no NaN, no numpy scalars).

    Raises UserError, naming the file, for a missing, unreadable or non-regular file, an unknown extension, a
    CSV or TSV row with another number of fields than the header, and a table of more than
    :data:`~funnelcli.data.tables.MAX_COLUMNS` columns (refused from its header, before any row is read).
    ``key`` chooses the table in an HDF5 file holding several; other formats ignore it. Numbers too large for
    a statistic make it null, without a warning on stderr.
    """
    shown = os.fspath(path)
    source = Path(path)
    check_is_file(source, shown)
    fmt = format_for(source, shown, READ_FORMATS, "supported extensions")
    raw = _read_raw(source, shown, fmt, key)
    names = [str(name) for name in raw.columns]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # Sums, casts and comparisons of extreme values (1e308, huge integers) warn; the report says it instead
        warnings.simplefilter("ignore", RuntimeWarning)
        columns = _describe_columns(raw, names)
    return {
        "file": shown,
        "rows": len(raw),
        "columns": [column.entry for column in columns],
        "warnings": _warnings(len(raw), names, columns),
    }


# ------------------------------------------------------------------------------------------------ reading


def _read_raw(source: Path, shown: str, fmt: str, key: str | None) -> pd.DataFrame:
    """Read the file's frame with its own types, names (duplicates kept) and values (NaN, inf, text kept)."""
    if fmt in ("CSV", "TSV"):
        return _read_delimited(source, shown, fmt)
    if fmt == "Parquet":
        return _read_parquet(source, shown)
    return read_hdf5(source, shown, key)


def _read_delimited(source: Path, shown: str, fmt: str) -> pd.DataFrame:
    """Read a CSV or TSV file (gzip-compressed when it ends in .gz); a file without even a header is empty.

    The header is read first, as written (pandas renames repeated names 'a', 'a.1', which would hide them), and
    a table too wide or with a row of another number of fields than the header is refused, as read_table does.
    """
    start = delimited_start(source, shown, fmt, allow_empty=True)
    if not start.names:
        return pd.DataFrame()
    # low_memory=False parses each column in one piece, so a column has one type, not one per chunk
    frame = next(delimited_frames(source, shown, fmt, start, low_memory=False))
    if len(start.names) == frame.shape[1]:
        frame.columns = start.names
    return frame


def _read_parquet(source: Path, shown: str) -> pd.DataFrame:
    """Read every data column of a Parquet file (not a stored pandas index), nested ones included."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(source) as parquet:
            schema = parquet.schema_arrow
            # A stored RangeIndex is described by a dict, not a column; only named index columns are skipped
            stored = (schema.pandas_metadata or {}).get("index_columns", [])
            index_columns = {name for name in stored if isinstance(name, str)}
            to_read = [name for name in schema.names if name not in index_columns]
            check_width(shown, len(to_read))
            table = parquet.read(columns=to_read, use_pandas_metadata=False)
        return table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _unreadable(shown, "Parquet", exc) from None


def _unreadable(shown: str, fmt: str, exc: BaseException) -> UserError:
    """Return the one-line error for a file the library could not parse, with the library's short reason."""
    if isinstance(exc, UserError):  # our own finding inside the reader's try block: keep its message
        return exc
    return UserError(f"{shown}: could not be read as {fmt}: {reason(exc)}")


# ------------------------------------------------------------------------------------------------ columns


def _describe_columns(raw: pd.DataFrame, names: list[str]) -> list[_Column]:
    """Describe every column, by position, so that repeated names are described once each."""
    analysed: list[pd.Series] = []
    values: list[np.ndarray | None] = []
    strays: list[_StrayText | None] = []
    for position in range(raw.shape[1]):
        series = _hashable(raw.iloc[:, position])
        numbers, stray = _as_numbers(series)
        values.append(numbers)
        strays.append(stray)
        # Numbers parsed from text are judged as numbers (as read_table would use them), everything else as is
        keep_raw = numbers is None or (isinstance(series.dtype, np.dtype) and series.dtype.kind in "biuf")
        analysed.append(series if keep_raw else pd.Series(numbers, index=series.index))
    # Positions as labels: constant_columns/integer_columns look columns up by name, which repeats may share
    frame = pd.DataFrame({str(i): column for i, column in enumerate(analysed)}, index=raw.index)
    constant = {int(label) for label in constant_columns(frame)}
    integer = {int(label) for label in integer_columns(frame)}
    return [
        _Column(
            entry=_entry(
                names[i], raw.iloc[:, i], analysed[i], values[i], constant=i in constant, integer=i in integer
            ),
            stray=strays[i],
        )
        for i in range(raw.shape[1])
    ]


def _hashable(series: pd.Series) -> pd.Series:
    """Return the column with unhashable cells (Parquet lists, structs) as text, so values can be counted."""
    if series.dtype != object:
        return series

    def hashable(value: Any) -> Any:
        try:
            hash(value)
        except TypeError:
            return str(value)
        return value

    return series.map(hashable)


def _as_numbers(series: pd.Series) -> tuple[np.ndarray | None, _StrayText | None]:
    """Return the column as float64 (NaN where missing) when read_table would read it as numbers.

    Numeric and boolean columns are numbers; text columns are when every present value parses as one. For a
    text column that does not, the second item says how much of it does not and where it starts.
    """
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
    ):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), None
    if not (pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype | pd.CategoricalDtype)):
        return None, None  # dates, durations, complex numbers: not numbers to read_table either
    text = series.to_numpy(dtype=object)
    present = pd.notna(text)
    try:
        numbers = np.asarray(pd.to_numeric(text, errors="coerce"), dtype=np.float64)
    except (TypeError, ValueError):
        numbers = np.full(len(text), np.nan)  # cells to_numeric cannot even look at are not numbers
    bad = present & np.isnan(numbers)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return numbers, None
    first = int(np.argmax(bad))
    n_present = int(present.sum())
    # The same rule as read_table: a column mostly of numbers is a typo to fix, not a label to skip
    shown = shown_value(text[first], squeeze=True)
    stray = _StrayText(n_bad, first + 1, shown, mostly_numeric=(n_present - n_bad) > n_present / 2)
    return None, stray


def _entry(
    name: str,
    series: pd.Series,
    analysed: pd.Series,
    numbers: np.ndarray | None,
    *,
    constant: bool,
    integer: bool,
) -> dict[str, Any]:
    """Return one column's report entry; statistics only for numeric columns, over their finite values."""
    entry: dict[str, Any] = {
        "name": name,
        "dtype": str(series.dtype),
        "missing": int(series.isna().sum()),
        "non_finite": None if numbers is None else int(np.isinf(numbers).sum()),
        "unique": int(analysed.nunique(dropna=True)),
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "integer_valued": integer,
        "constant": constant,
        "numeric": numbers is not None,
    }
    if numbers is not None:
        entry.update(_statistics(series, numbers))
    return entry


def _statistics(series: pd.Series, numbers: np.ndarray) -> dict[str, Any]:
    """Return min, max, mean and std (ddof=0) of the finite values; exact integers for integer columns."""
    finite = numbers[np.isfinite(numbers)]
    if finite.size == 0:
        return {}
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biu":
        # From the integers themselves: float64 would round int64 values beyond 2**53
        low, high = int(series.min()), int(series.max())
    else:
        low, high = float(finite.min()), float(finite.max())
    # Values near the float64 limit overflow in the sums; such a statistic is reported as unknown (null)
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(np.mean(finite)), float(np.std(finite))
    return {"min": low, "max": high, "mean": json_safe(mean), "std": json_safe(std)}


# ------------------------------------------------------------------------------------------------ warnings


def _warnings(rows: int, names: list[str], columns: list[_Column]) -> list[str]:
    """Return one line per problem, the ones that make ``funnel train`` refuse the table first."""
    found: list[str] = []
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        found.append(
            f"duplicate column name(s) {_names(repeated)}: funnel train refuses the file; "
            "give every column a unique name"
        )
    if rows == 0 or not columns:
        # Every column of an empty table is "constant" and "non-numeric"; those lines would only bury this one
        found.append(
            f"the table is empty ({plural(rows, 'row')}, {plural(len(columns), 'column')}): funnel train refuses it"
        )
        return found
    numeric = [column.entry for column in columns if column.entry["numeric"]]
    stray = [(column.entry, column.stray) for column in columns if column.stray and column.stray.mostly_numeric]
    text = [
        column.entry["name"]
        for column in columns
        if not column.entry["numeric"] and not (column.stray and column.stray.mostly_numeric)
    ]
    return found + _refusals(numeric, stray) + _cautions(numeric, text)


def _refusals(numeric: list[dict[str, Any]], stray: list[tuple[dict[str, Any], _StrayText]]) -> list[str]:
    """Return the lines for what makes ``funnel train`` refuse the table, each with the way out."""
    found: list[str] = []
    if not numeric:
        found.append("the table has no numeric columns: funnel train refuses it")
    if stray:
        described = [
            f"{entry['name']!r} ({plural(facts.count, 'non-numeric value')}, first at row {facts.row}: {facts.value})"
            for entry, facts in stray
        ]
        found.append(
            f"column(s) with stray text among numbers: {_listed(described)}: funnel train refuses them; "
            "fix those values or leave the column(s) out with --columns"
        )
    missing = [entry for entry in numeric if entry["missing"]]
    if missing:
        found.append(
            f"missing values (NaN or empty) in column(s) {_counted(missing, 'missing')}: funnel train refuses them; "
            "drop or impute those rows, or leave the column(s) out with --columns"
        )
    infinite = [entry for entry in numeric if entry["non_finite"]]
    if infinite:
        found.append(
            f"infinite values in column(s) {_counted(infinite, 'non_finite')}: funnel train refuses them; "
            "drop or impute those rows, or leave the column(s) out with --columns"
        )
    constant = [entry["name"] for entry in numeric if entry["constant"]]
    if constant:
        found.append(
            f"constant column(s) {_names(constant)}: a single value has no density, so funnel train refuses them; "
            "leave them out with --columns, or pass --drop-constant"
        )
    return found


def _cautions(numeric: list[dict[str, Any]], text: list[str]) -> list[str]:
    """Return the lines for what ``funnel train`` accepts but the user should know: sentinels, integers, text."""
    found: list[str] = []
    huge = [entry for entry in numeric if _magnitude(entry) > HUGE]
    if huge:
        described = [f"{entry['name']!r} (largest magnitude {_magnitude(entry):.3g})" for entry in huge]
        found.append(
            f"values beyond 1e15 in magnitude in column(s) {_listed(described)}: likely sentinel codes for "
            "missing values, which would swamp the column's scale; replace them, then drop or impute those rows"
        )
    integer = [entry["name"] for entry in numeric if entry["integer_valued"]]
    if integer:
        found.append(
            f"integer-valued column(s) {_names(integer)}: a continuous density degenerates on whole numbers; "
            "funnel train adds uniform noise in [0, 1) (dequantization) by default, --dequantize none turns it off"
        )
    if text:
        found.append(
            f"non-numeric column(s) {_names(text)}: funnel train skips them "
            "(and refuses them if named in --columns); encode them as numbers to model them"
        )
    return found


def _magnitude(entry: dict[str, Any]) -> float:
    """Return the largest finite magnitude in a numeric column (0 when it has no finite values)."""
    ends = [abs(float(value)) for value in (entry["min"], entry["max"]) if value is not None]
    return max(ends, default=0.0)


def _names(names: Sequence[str]) -> str:
    """Return names quoted and comma-separated, cut short after a few."""
    return _listed([repr(name) for name in names])


def _counted(entries: Sequence[dict[str, Any]], field: str) -> str:
    """Return "'a' (3), 'b' (1)": each column's name and its count of ``field``."""
    return _listed([f"{entry['name']!r} ({entry[field]})" for entry in entries])


def _listed(items: Sequence[str]) -> str:
    """Return items comma-separated, ending in "and N more" beyond a few, so a warning stays one short line."""
    return cut(items, _NAME_LIMIT, more=" and {} more")
