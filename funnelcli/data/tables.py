"""Reading and writing numeric tables: CSV/TSV, Parquet and HDF5 in; CSV/TSV and Parquet out.

Every table read comes back as a DataFrame of float64 columns with a fresh RangeIndex. Every mistake in the
file (missing, unreadable, duplicate or non-numeric columns, NaN or infinite values) comes back as a
:class:`~funnelcli.errors.UserError` whose one line names the file, column or row and says what to do.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import stat
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from funnelcli.errors import UserError

__all__ = [
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "atomic_path",
    "check_output_path",
    "read_columns",
    "read_table",
    "split_validation",
    "write_table",
]

log = logging.getLogger("funnelcli")

PathArg = str | os.PathLike[str]

# Extension -> format; matched case-insensitively against the end of the file name.
_READ_FORMATS: dict[str, str] = {
    ".csv": "CSV",
    ".csv.gz": "CSV",
    ".tsv": "TSV",
    ".parquet": "Parquet",
    ".pq": "Parquet",
    ".h5": "HDF5",
    ".hdf5": "HDF5",
    ".hdf": "HDF5",
}
_WRITE_FORMATS: dict[str, str] = {
    ".csv": "CSV",
    ".csv.gz": "CSV",
    ".tsv": "TSV",
    ".parquet": "Parquet",
    ".pq": "Parquet",
}
READ_EXTENSIONS: tuple[str, ...] = tuple(_READ_FORMATS)
WRITE_EXTENSIONS: tuple[str, ...] = tuple(_WRITE_FORMATS)

_LIST_LIMIT = 20  # names shown before a list is cut short with "... (N more)"
_REPORT_LIMIT = 10  # columns described in one NaN/inf or non-numeric message
_REASON_LIMIT = 200  # characters kept of a library's error message
_HDF5_INSTALL = "pip install 'funnelcli[hdf5]'"


# --------------------------------------------------------------------------------------------------- reading


def read_table(path: PathArg, *, key: str | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a numeric table from a CSV, TSV, Parquet or HDF5 file as float64 columns with a fresh RangeIndex.

    The format follows the extension (case-insensitive): ``.csv``, ``.csv.gz``, ``.tsv``, ``.parquet``,
    ``.pq``, ``.h5``, ``.hdf5``, ``.hdf``. ``key`` chooses the pandas key or dataset in an HDF5 file; it
    may be left out when the file holds one table. With ``columns=None`` every numeric (int, float, bool)
    column is used in file order and text columns are skipped with a warning on the ``funnelcli`` logger;
    with ``columns`` exactly those are used, in that order (a single string is one column name).

    Raises UserError for a missing, unreadable or empty file, an unknown extension, duplicate or missing
    column names, a mostly-numeric column with stray text, a selected non-numeric column, and NaN or
    infinite values (all offending columns reported at once).
    """
    shown = os.fspath(path)
    source = Path(path)
    _check_is_file(source, shown)
    fmt = _format_for(source, shown, _READ_FORMATS, "supported extensions")
    wanted = _normalise_selection(columns)
    skipped: list[str] = []
    if fmt in ("CSV", "TSV"):
        raw = _read_delimited(source, shown, fmt, wanted)
    elif fmt == "Parquet":
        raw, skipped = _read_parquet(source, shown, wanted)
    else:
        raw = _read_hdf5(source, shown, key)
    return _numeric_frame(raw, shown, wanted, skipped=skipped)


def read_columns(path: PathArg, columns: Sequence[str], *, key: str | None = None) -> pd.DataFrame:
    """Read the named columns as they are (ids, labels: any type), for passing them through to an output."""
    shown = os.fspath(path)
    source = Path(path)
    _check_is_file(source, shown)
    fmt = _format_for(source, shown, _READ_FORMATS, "supported extensions")
    wanted = _normalise_selection(columns) or []
    if fmt in ("CSV", "TSV"):
        raw = _read_delimited(source, shown, fmt, wanted)
    elif fmt == "Parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(source) as parquet:
            _check_selection(shown, parquet.schema_arrow.names, wanted)
        raw = pq.read_table(source, columns=wanted).to_pandas()
    else:
        raw = _read_hdf5(source, shown, key)
        _check_selection(shown, [str(c) for c in raw.columns], wanted)
    return raw[wanted].reset_index(drop=True)


def _check_is_file(source: Path, shown: str) -> None:
    """Refuse a path that does not exist or is a directory."""
    if source.is_dir():
        raise _error(f"{shown} is a directory; expected a table file ({', '.join(READ_EXTENSIONS)})")
    if not source.exists():
        raise _error(f"{shown}: no such file")


def _format_for(source: Path, shown: str, formats: dict[str, str], what: str) -> str:
    """Return the format whose extension ends the file name, or refuse the name listing the extensions."""
    name = source.name.lower()
    # Longest first, so a specific suffix such as ".csv.gz" wins over any shorter one that also matches
    for extension in sorted(formats, key=len, reverse=True):
        if name.endswith(extension):
            return formats[extension]
    found = f"'{source.suffix}'" if source.suffix else "no extension"
    raise _error(f"{shown}: unsupported file type ({found}); {what}: {', '.join(formats)}")


def _normalise_selection(columns: Sequence[str] | None) -> list[str] | None:
    """Return the selected column names as a list of strings (None for "all numeric columns")."""
    if columns is None:
        return None
    if isinstance(columns, str):
        # A bare string is a Sequence[str] too; iterating it would select one column per character
        return [columns]
    return [str(name) for name in columns]


def _read_delimited(source: Path, shown: str, fmt: str, columns: list[str] | None) -> pd.DataFrame:
    """Read a CSV or TSV file (gzip-compressed when it ends in .gz), checking the header first."""
    return next(iter_delimited(source, shown, fmt, columns))


def iter_delimited(
    source: Path, shown: str, fmt: str, columns: list[str] | None, chunksize: int | None = None
) -> Iterator[pd.DataFrame]:
    """The rows of a CSV or TSV file, whole or in chunks of ``chunksize`` rows, after checking the header."""
    sep = "\t" if fmt == "TSV" else ","
    compressed = source.name.lower().endswith(".gz")
    header = _delimited_header(source, shown, fmt, sep, compressed)
    _check_unique(shown, header)
    if columns is not None:
        _check_selection(shown, header, columns)
    try:
        with warnings.catch_warnings():
            # Chunks of one column parsed as different types are expected; the numeric check reports them
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            result = pd.read_csv(
                source,
                sep=sep,
                encoding="utf-8",
                compression="gzip" if compressed else None,
                # Rows with a trailing separator must not silently turn the first column into an index
                index_col=False,
                usecols=columns,
                chunksize=chunksize,
            )
            if chunksize is None:
                yield result
            else:
                with result:
                    yield from result
    except pd.errors.EmptyDataError:
        raise _error(f"{shown} has no rows") from None
    except (OSError, EOFError, ValueError, csv.Error) as exc:
        raise _unreadable(shown, fmt, exc) from None


def _delimited_header(source: Path, shown: str, fmt: str, sep: str, compressed: bool) -> list[str]:
    """Return the column names of the first non-blank line, named as pandas names them.

    Read with the csv module because pandas renames duplicate names ('a', 'a.1') before we could see them.
    """
    try:
        # utf-8-sig drops a byte-order mark, as pandas does, so the first name matches pandas' name
        opener = gzip.open if compressed else open
        with opener(source, "rt", encoding="utf-8-sig", newline="") as handle:
            row = next((row for row in csv.reader(handle, delimiter=sep) if row), None)
    except (OSError, EOFError, ValueError, csv.Error) as exc:
        raise _unreadable(shown, fmt, exc) from None
    if row is None:
        raise _error(f"{shown} has no rows")
    return [name if name else f"Unnamed: {i}" for i, name in enumerate(row)]


def _read_parquet(source: Path, shown: str, columns: list[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """Read a Parquet file with pyarrow; return the frame and the nested columns left unread.

    Nested (list, struct, map) columns are never numbers, so they are not read at all in default mode and
    refused when selected.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(source) as parquet:
            schema = parquet.schema_arrow
            index_columns = _parquet_index_columns(schema)
            fields = [field for field in schema if field.name not in index_columns]
            _check_unique(shown, [field.name for field in fields])
            if parquet.metadata.num_rows == 0:
                raise _error(f"{shown} has no rows")
            nested = {field.name: field.type for field in fields if pa.types.is_nested(field.type)}
            if columns is None:
                to_read = [field.name for field in fields if field.name not in nested]
            else:
                _check_selection(shown, [field.name for field in fields], columns)
                _refuse_nested(shown, columns, nested)
                to_read = columns
            table = parquet.read(columns=to_read, use_pandas_metadata=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _unreadable(shown, "Parquet", exc) from None
    frame = table.to_pandas()
    del table  # the Arrow copy is no longer needed; let it go before the float64 copy is made
    return frame, list(nested) if columns is None else []


def _parquet_index_columns(schema: Any) -> set[str]:
    """Return the names of the columns pandas stored for a DataFrame index (not data)."""
    metadata = schema.pandas_metadata or {}
    return {name for name in metadata.get("index_columns", []) if isinstance(name, str)}


def _refuse_nested(shown: str, columns: list[str], nested: dict[str, Any]) -> None:
    """Refuse selected columns whose Parquet type is nested (list, struct, map)."""
    chosen = [name for name in columns if name in nested]
    if chosen:
        described = ", ".join(f"column {name!r} holds {nested[name]} values" for name in chosen)
        raise _error(f"{shown}: {described}, not numbers; leave the column(s) out of --columns")


def _read_hdf5(source: Path, shown: str, key: str | None) -> pd.DataFrame:
    """Read one pandas object or plain h5py dataset from an HDF5 file, choosing it by ``key``."""
    h5py = _import_hdf5(shown, "h5py")
    try:
        with h5py.File(source, "r") as handle:
            name, kind = _choose_hdf5_table(shown, _hdf5_tables(h5py, handle), key)
            if kind == "dataset":
                return _dataset_frame(shown, handle[name], name)
    except OSError as exc:
        raise _unreadable(shown, "HDF5", exc) from None
    # The h5py handle is closed by now: PyTables opens the file itself, possibly with its own libhdf5
    return _read_pandas_hdf5(source, shown, name)


def _import_hdf5(shown: str, module: str) -> ModuleType:
    """Import h5py or tables, or tell the user how to install the HDF5 extra."""
    try:
        return __import__(module)
    except ImportError:
        raise _error(f"{shown}: reading HDF5 files needs h5py and PyTables; {_HDF5_INSTALL}") from None


def _hdf5_tables(h5py: ModuleType, group: Any) -> dict[str, str]:
    """Map every table under ``group`` to its kind, "pandas" or "dataset", keyed by path without a '/'.

    A group carrying pandas' ``pandas_type`` attribute is one pandas object; its PyTables internals
    (``table``, ``axis0``, ``block0_values``...) are not tables of their own, so it is not descended into.
    """
    found: dict[str, str] = {}
    for child_name in group:
        child = group.get(child_name)  # None for a dangling soft link
        path = f"{group.name.rstrip('/')}/{child_name}".lstrip("/")
        if isinstance(child, h5py.Dataset):
            found[path] = "dataset"
        elif isinstance(child, h5py.Group):
            if "pandas_type" in child.attrs:
                found[path] = "pandas"
            else:
                found.update(_hdf5_tables(h5py, child))
    return found


def _choose_hdf5_table(shown: str, tables: dict[str, str], key: str | None) -> tuple[str, str]:
    """Return (path, kind) of the table named by ``key``, or of the only table when no key is given."""
    if not tables:
        raise _error(f"{shown} holds no datasets or pandas tables")
    if key is None:
        if len(tables) == 1:
            return next(iter(tables.items()))
        raise _error(f"{shown} holds several tables ({_plain_list(tables)}); choose one with --key")
    wanted = key.strip("/")
    if wanted not in tables:
        raise _error(f"{shown}: no table {key!r}; keys in the file: {_plain_list(tables)}; choose one with --key")
    return wanted, tables[wanted]


def _dataset_frame(shown: str, dataset: Any, name: str) -> pd.DataFrame:
    """Turn a plain h5py dataset into a frame: 2-D is a table, 1-D a column, compound a column per field."""
    if dataset.dtype.names:
        # Compound datasets (e.g. tables written with PyTables itself) have one named field per column
        try:
            return pd.DataFrame(dataset[()])
        except ValueError as exc:
            raise _unreadable(shown, "HDF5", exc) from None
    if dataset.dtype.kind not in "biuf":
        raise _error(f"{shown}: dataset {name!r} holds {dataset.dtype} values, not numbers; choose another with --key")
    if dataset.ndim not in (1, 2):
        raise _error(f"{shown}: dataset {name!r} has {dataset.ndim} dimensions; expected a 2-D table or a 1-D column")
    # Cast once here so the float64 frame below is the only copy (no copy at all for float64 data)
    values = dataset[()].astype(np.float64, copy=False)
    if dataset.ndim == 1:
        return pd.DataFrame(values.reshape(-1, 1), columns=[name.rsplit("/", 1)[-1]], copy=False)
    return pd.DataFrame(values, columns=_dataset_column_names(shown, dataset, name), copy=False)


def _dataset_column_names(shown: str, dataset: Any, name: str) -> list[str]:
    """Return the names in the dataset's "columns" attribute, or x0, x1, ... when it has none."""
    width = dataset.shape[1]
    if "columns" not in dataset.attrs:
        return [f"x{i}" for i in range(width)]
    names = [
        value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        for value in np.atleast_1d(dataset.attrs["columns"])
    ]
    if len(names) != width:
        raise _error(
            f"{shown}: dataset {name!r} has {width} columns but its 'columns' attribute lists {len(names)} "
            "names; fix the attribute or remove it"
        )
    return names


def _read_pandas_hdf5(source: Path, shown: str, name: str) -> pd.DataFrame:
    """Read a pandas object written by ``DataFrame.to_hdf`` (table or fixed format)."""
    tables = _import_hdf5(shown, "tables")
    try:
        obj = pd.read_hdf(source, key="/" + name, mode="r")
    except (OSError, ValueError, KeyError, TypeError, tables.exceptions.HDF5ExtError) as exc:
        raise _unreadable(shown, "HDF5", exc) from None
    if isinstance(obj, pd.Series):
        return obj.to_frame(name=obj.name if obj.name is not None else name.rsplit("/", 1)[-1])
    if not isinstance(obj, pd.DataFrame):
        raise _error(f"{shown}: key {name!r} holds a {type(obj).__name__}, not a table; choose another with --key")
    return obj


# --------------------------------------------------------------------------------- checking and converting


@dataclass(frozen=True)
class _Verdict:
    """What to do with one column: use ``values``, refuse it for ``problem``, or (neither) skip it."""

    values: np.ndarray | None = None
    problem: str | None = None


def _numeric_frame(
    raw: pd.DataFrame, shown: str, columns: list[str] | None, *, skipped: Sequence[str] = (), row_offset: int = 0
) -> pd.DataFrame:
    """Check ``raw`` and return its selected columns as float64 with a fresh RangeIndex.

    ``skipped`` names columns the reader already left out as non-numeric, for the warning. ``row_offset`` is
    the number of data rows before ``raw`` in the file (a chunk of a streamed file), so messages name rows of
    the file.
    """
    raw.columns = [str(name) for name in raw.columns]
    names = list(raw.columns)
    _check_unique(shown, names)
    if len(raw) == 0:
        raise _error(f"{shown} has no rows")
    if columns is not None:
        _check_selection(shown, names, columns)
    explicit = columns is not None
    kept: list[str] = []
    values: list[np.ndarray] = []
    problems: list[str] = []
    skipped = list(skipped)
    for name in columns if explicit else names:
        verdict = _inspect_column(raw[name], name, explicit, row_offset)
        if verdict.values is not None:
            kept.append(name)
            values.append(verdict.values)
        elif verdict.problem is not None:
            problems.append(verdict.problem)
        else:
            skipped.append(name)
    if skipped:
        log.warning("skipping non-numeric column(s) %s in %s; choose columns with --columns", _quoted(skipped), shown)
    if problems:
        raise _error(f"{shown}: {_joined(problems)}; fix these values or exclude the column(s) with --columns")
    if not kept:
        raise _error(f"{shown} has no numeric columns{_delimiter_hint(names)}")
    _check_finite(shown, kept, values, row_offset)
    return _assemble(raw, kept, values)


def _delimiter_hint(names: Sequence[str]) -> str:
    """A way out for a table that read as one text column: most often the file uses another delimiter."""
    if len(names) == 1:
        for delimiter, label in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
            if delimiter in names[0]:
                return (
                    f"; its header reads as one column {names[0]!r}, so the file seems to be delimited by {label}: "
                    "save it comma-separated (or as .tsv for tabs)"
                )
    return "; give the table at least one column of numbers, or name them with --columns"


def _inspect_column(series: pd.Series, name: str, explicit: bool, row_offset: int = 0) -> _Verdict:
    """Decide whether a column is numeric, text to skip, or an error, converting its values if numeric."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
    ):
        if isinstance(dtype, np.dtype):
            return _Verdict(values=series.to_numpy())  # a view; the cast happens when copied into place
        # Nullable extension types (Int64, boolean, Float64) hold pd.NA, which becomes NaN and is reported
        return _Verdict(values=series.to_numpy(dtype=np.float64, na_value=np.nan))
    if pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype | pd.CategoricalDtype):
        return _inspect_text(series, name, explicit, row_offset)
    if explicit:
        first = _first_present(series.to_numpy(dtype=object))
        where = (
            f" (first at row {row_offset + first + 1}: {_shown_value(series.iloc[first])})" if first is not None else ""
        )
        return _Verdict(problem=f"column {name!r} holds {dtype} values, not numbers{where}")
    return _Verdict()


def _inspect_text(series: pd.Series, name: str, explicit: bool, row_offset: int = 0) -> _Verdict:
    """Judge a text column by how many of its values parse as numbers.

    All parse: use them. Most parse (a CSV column with a stray word), or the column was selected: refuse it
    naming the first bad value. Otherwise it is a text column (an id or label) to skip.
    """
    text = series.to_numpy(dtype=object)
    present = pd.notna(text)
    try:
        numbers = np.asarray(pd.to_numeric(text, errors="coerce"), dtype=np.float64)
        bad = present & np.isnan(numbers)
    except (TypeError, ValueError):
        # Objects to_numeric cannot even look at (lists, dicts) are non-numeric throughout
        numbers, bad = None, present
    n_bad = int(bad.sum())
    if n_bad == 0 and numbers is not None:
        return _Verdict(values=numbers)
    n_present = int(present.sum())
    if explicit or (n_present - n_bad) > n_present / 2:
        first = int(np.argmax(bad))
        return _Verdict(
            problem=f"column {name!r} has {_count(n_bad, 'non-numeric value')} "
            f"(first at row {row_offset + first + 1}: {_shown_value(text[first])})"
        )
    return _Verdict()


def _check_finite(shown: str, names: Sequence[str], values: Iterable[np.ndarray], row_offset: int = 0) -> None:
    """Refuse NaN and infinite values with one message naming each column, its counts and first rows."""
    reports = []
    for name, column in zip(names, values, strict=True):
        finite = np.isfinite(column)
        if finite.all():
            continue
        nan = np.isnan(column)
        infinite = ~finite & ~nan
        parts = [
            f"{_count(int(mask.sum()), label)} (first at row {row_offset + int(np.argmax(mask)) + 1})"
            for mask, label in ((nan, "NaN value"), (infinite, "infinite value"))
            if mask.any()
        ]
        reports.append(f"column {name!r} has {' and '.join(parts)}")
    if reports:
        raise _error(f"{shown}: {_joined(reports)}; drop or impute these rows")


def _assemble(raw: pd.DataFrame, names: list[str], values: list[np.ndarray]) -> pd.DataFrame:
    """Return the float64 frame of ``names``, reusing ``raw`` (no copy) when it already is exactly that."""
    if names == list(raw.columns) and all(dtype == np.float64 for dtype in raw.dtypes):
        raw.index = pd.RangeIndex(len(raw))
        return raw
    # One C-ordered block: a later frame.to_numpy() is then a view, not another copy
    block = np.empty((len(raw), len(names)), dtype=np.float64)
    for j, column in enumerate(values):
        block[:, j] = column
    return pd.DataFrame(block, columns=names, copy=False)


def _check_unique(shown: str, names: Sequence[str]) -> None:
    """Refuse a file whose column names repeat."""
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise _error(f"{shown}: duplicate column name(s) {_quoted(repeated)}; give every column a unique name")


def _check_selection(shown: str, available: Sequence[str], columns: Sequence[str]) -> None:
    """Refuse an empty selection, a name selected twice, or names the file does not have."""
    if not columns:
        raise _error(f"{shown}: no columns selected; name at least one with --columns")
    repeated = [name for name, count in Counter(columns).items() if count > 1]
    if repeated:
        raise _error(f"{shown}: column(s) {_quoted(repeated)} selected more than once in --columns")
    present = set(available)
    missing = [name for name in columns if name not in present]
    if missing:
        raise _error(f"{shown}: no column(s) named {_quoted(missing)}; available columns: {_quoted(available)}")


# ---------------------------------------------------------------------------------------------- splitting


def split_validation(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows at random into (training, validation), the same way for the same seed.

    Validation gets ``round(fraction * n)`` rows, but at least one, and training keeps at least one; each
    part keeps the original row order and gets a fresh RangeIndex. Raises UserError when ``fraction`` is not
    strictly between 0 and 1 or the frame has fewer than 2 rows.
    """
    if not 0 < fraction < 1:  # also false for NaN
        raise _error(f"--val-fraction must be between 0 and 1 (exclusive), got {fraction}")
    n = len(frame)
    if n < 2:
        raise _error(
            f"the table has {_count(n, 'row')}; a validation split needs at least 2 rows, or pass --validation FILE"
        )
    n_val = min(max(1, round(fraction * n)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    # Sorted so each part keeps the file's row order, which makes splits easy to compare and diff
    validation = np.sort(order[:n_val])
    training = np.sort(order[n_val:])
    return (
        frame.iloc[training].reset_index(drop=True),
        frame.iloc[validation].reset_index(drop=True),
    )


# ------------------------------------------------------------------------------------------------ writing


def write_table(frame: pd.DataFrame, path: PathArg, *, overwrite: bool = True) -> None:
    """Write ``frame`` without its index as CSV, TSV, gzipped CSV or Parquet, chosen by the extension.

    The file appears whole or not at all: it is written to a hidden temporary file beside the target and
    renamed onto it. Missing parent directories are created. Raises UserError for an unsupported
    extension, a directory in the way, an existing file when ``overwrite`` is false, or an OS error.
    """
    shown = os.fspath(path)
    target = Path(path)
    fmt = check_output_path(path, overwrite=overwrite)
    try:
        with atomic_path(target) as temporary:
            if fmt == "Parquet":
                _write_parquet(frame, temporary)
            else:
                _write_delimited(frame, temporary, fmt, target.name.lower().endswith(".gz"))
    except OSError as exc:
        raise _error(f"{shown}: could not write the file: {_reason(exc)}") from None


def check_output_path(path: PathArg, *, overwrite: bool = True) -> str:
    """Refuse an output path before any work is done; return the output format its extension names."""
    shown = os.fspath(path)
    target = Path(path)
    fmt = _format_for(target, shown, _WRITE_FORMATS, "supported output extensions")
    if target.is_dir():
        raise _error(f"{shown} is a directory; give a file name ending in one of {', '.join(WRITE_EXTENSIONS)}")
    if not overwrite and target.exists():
        raise _error(f"{shown} already exists; pass --force to overwrite it")
    return fmt


def _write_delimited(frame: pd.DataFrame, path: Path, fmt: str, compressed: bool) -> None:
    """Write CSV or TSV without the index; floats are written so that they read back exactly."""
    frame.to_csv(
        path,
        sep="\t" if fmt == "TSV" else ",",
        index=False,
        # Explicit because the temporary name ends in .tmp, which pandas could not infer gzip from
        compression="gzip" if compressed else None,
    )


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write Parquet with pyarrow, without the index."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


@contextmanager
def atomic_path(path: PathArg) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on any error remove it.

    The temporary file is hidden (``.<name>.<random>.tmp``) and in the same directory, so the final rename
    is atomic and a reader never sees a partial file. Missing parent directories are created. The result
    keeps the mode of the file it replaces, or gets the usual mode for new files (0666 less the umask).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        # mkstemp creates the file private (0600); an output file should be as readable as any other
        os.chmod(temporary, _mode_for(target))
        os.replace(temporary, target)
    except BaseException:
        with suppress(FileNotFoundError):
            temporary.unlink()
        raise


def _mode_for(target: Path) -> int:
    """Return the permission bits for ``target``: those of the file it replaces, else 0666 less the umask."""
    with suppress(FileNotFoundError):
        return stat.S_IMODE(target.stat().st_mode)
    # The umask can only be read by setting it; it is put back at once
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


# ------------------------------------------------------------------------------------------------ messages


def _error(message: str) -> UserError:
    """Return a UserError whose message is guaranteed to be one line."""
    return UserError(" ".join(message.split("\n")).replace("\r", " "))


def _unreadable(shown: str, fmt: str, exc: BaseException) -> UserError:
    """Return the error for a file the library could not parse, with the library's short reason."""
    if isinstance(exc, UserError):  # our own finding inside the reader's try block: keep its message
        return exc
    hint = "; save it as UTF-8" if isinstance(exc, UnicodeDecodeError) else ""
    return _error(f"{shown}: could not be read as {fmt}: {_reason(exc)}{hint}")


def _reason(exc: BaseException) -> str:
    """Return the first non-blank line of an exception's message, shortened, or its type's name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[0] if lines else type(exc).__name__
    return reason if len(reason) <= _REASON_LIMIT else reason[: _REASON_LIMIT - 3] + "..."


def _quoted(names: Iterable[str]) -> str:
    """Return names quoted and comma-separated, cut short after a screenful."""
    return _cut([repr(str(name)) for name in names], _LIST_LIMIT)


def _plain_list(names: Iterable[str]) -> str:
    """Return names comma-separated without quotes (HDF5 keys), cut short after a screenful."""
    return _cut(list(names), _LIST_LIMIT)


def _joined(reports: Sequence[str]) -> str:
    """Return per-column reports comma-separated, cut short after a few columns."""
    shown = ", ".join(reports[:_REPORT_LIMIT])
    rest = len(reports) - _REPORT_LIMIT
    return shown if rest <= 0 else f"{shown} and {rest} more column(s)"


def _cut(items: list[str], limit: int) -> str:
    """Return items comma-separated, ending in "... (N more)" beyond ``limit``."""
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items) - limit} more)"


def _count(n: int, noun: str) -> str:
    """Return "1 noun" or "n nouns"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shown_value(value: object) -> str:
    """Return a short, one-line rendering of a cell value for an error message."""
    text = repr(value) if isinstance(value, str | bytes) else repr(str(value))
    return text if len(text) <= 40 else text[:36] + "...'"


def _first_present(values: np.ndarray) -> int | None:
    """Return the position of the first non-missing value, or None when all are missing."""
    present = pd.notna(values)
    return int(np.argmax(present)) if present.any() else None
