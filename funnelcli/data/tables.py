"""Reading and writing numeric tables: CSV/TSV, Parquet and HDF5 in; CSV/TSV and Parquet out.

Every table read comes back as a DataFrame of float64 columns with a fresh RangeIndex. Every mistake in the
file (missing, unreadable, duplicate or non-numeric columns, NaN or infinite values, a CSV row with another
number of fields than the header, more than :data:`MAX_COLUMNS` columns) comes back as a
:class:`~funnelcli.errors.UserError` whose one line names the file, column or row and says what to do.

Reading never runs code from the file (HDF5 is read with h5py alone, see :mod:`funnelcli.data.hdf5`) and
only regular files are opened: a FIFO, a device or a file under /proc is refused before it is opened.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import logging
import os
import re
import stat
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from funnelcli.atomic import atomic_path
from funnelcli.data.hdf5 import OutsideTheFile, local, read_pandas_group
from funnelcli.data.messages import cut, plural, reason, shown_value
from funnelcli.errors import OutOfRange, Refused, UserError

__all__ = [
    "MAX_COLUMNS",
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
READ_FORMATS: dict[str, str] = {
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
READ_EXTENSIONS: tuple[str, ...] = tuple(READ_FORMATS)
WRITE_EXTENSIONS: tuple[str, ...] = tuple(_WRITE_FORMATS)

_LIST_LIMIT = 20  # names shown before a list is cut short with "... (N more)"
_REPORT_LIMIT = 10  # columns described in one NaN/inf or non-numeric message
_HDF5_INSTALL = "pip install 'funnelcli[hdf5]'"
#: The most columns a table may have. Wider files are refused from their header alone, before any row is read:
#: a density model of more columns is out of reach anyway, and describing 10^6 columns takes minutes and GBs.
MAX_COLUMNS = 100_000
_SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"))  # kernel interfaces: their "files" are not data


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
    check_is_file(source, shown)
    fmt = format_for(source, shown, READ_FORMATS, "supported extensions")
    wanted = _normalise_selection(columns)
    skipped: list[str] = []
    if fmt in ("CSV", "TSV"):
        raw = _read_delimited(source, shown, fmt, wanted)
    elif fmt == "Parquet":
        raw, skipped = _read_parquet(source, shown, wanted)
    else:
        raw = read_hdf5(source, shown, key)
    return numeric_frame(raw, shown, wanted, skipped=skipped)


def read_columns(path: PathArg, columns: Sequence[str], *, key: str | None = None) -> pd.DataFrame:
    """Read the named columns as they are (ids, labels: any type), for passing them through to an output."""
    shown = os.fspath(path)
    source = Path(path)
    check_is_file(source, shown)
    fmt = format_for(source, shown, READ_FORMATS, "supported extensions")
    wanted = _normalise_selection(columns) or []
    if fmt in ("CSV", "TSV"):
        raw = _read_delimited(source, shown, fmt, wanted)
    elif fmt == "Parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(source) as parquet:
            check_width(shown, len(parquet.schema_arrow.names))
            check_selection(shown, parquet.schema_arrow.names, wanted)
        raw = pq.read_table(source, columns=wanted).to_pandas()
    else:
        raw = read_hdf5(source, shown, key)
        check_selection(shown, [str(c) for c in raw.columns], wanted)
    return raw[wanted].reset_index(drop=True)


def check_is_file(source: Path, shown: str) -> None:
    """Refuse a path that does not exist, is a directory, or is not a regular file, before anything opens it.

    A FIFO, socket or device (and a link to one) would block a reader forever or stream without end, and a
    file under /proc or /sys is the kernel's, not a table: each is refused. Links are followed first.
    """
    if source.is_dir():
        raise one_line_error(f"{shown} is a directory; expected a table file ({', '.join(READ_EXTENSIONS)})")
    problem = not_a_regular_file(source)
    if problem is not None:
        raise one_line_error(f"{shown}{problem}")


def not_a_regular_file(path: PathArg) -> str | None:
    """Why ``path`` may not be read as a data file (": no such file", " is a FIFO, ..."), or None if it may.

    Checked with ``os.stat`` after following links, so nothing is opened: opening a FIFO would block.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return ": no such file"
    except OSError as exc:
        return f": cannot be read: {reason(exc)}"
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        return " is a directory; expected a file"
    if not stat.S_ISREG(mode):
        kind = next(
            (
                name
                for test, name in (
                    (stat.S_ISFIFO, "a FIFO (named pipe)"),
                    (stat.S_ISSOCK, "a socket"),
                    (stat.S_ISCHR, "a character device"),
                    (stat.S_ISBLK, "a block device"),
                )
                if test(mode)
            ),
            "not a regular file",
        )
        return f" is {kind}, not a regular file; funnelcli reads only regular files: save the data to a file first"
    resolved = Path(os.path.realpath(path))
    for system in _SYSTEM_FOLDERS:
        if resolved == system or system in resolved.parents:
            return f" is a file of the kernel's {system} file system, not a table; copy the data to a regular file"
    return None


def format_for(source: Path, shown: str, formats: dict[str, str], what: str) -> str:
    """Return the format whose extension ends the file name, or refuse the name listing the extensions."""
    name = source.name.lower()
    # Longest first, so a specific suffix such as ".csv.gz" wins over any shorter one that also matches
    for extension in sorted(formats, key=len, reverse=True):
        if name.endswith(extension):
            return formats[extension]
    found = f"'{source.suffix}'" if source.suffix else "no extension"
    raise one_line_error(f"{shown}: unsupported file type ({found}); {what}: {', '.join(formats)}")


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
    """The rows of a CSV or TSV file, whole or in chunks of ``chunksize`` rows, after checking the header.

    Every row must have the header's number of fields (see :func:`delimited_frames`); ``columns`` selects
    columns after parsing, so that a row with extra fields is noticed wherever they are.
    """
    start = delimited_start(source, shown, fmt)
    check_unique(shown, start.names)
    if columns is not None:
        check_selection(shown, start.names, columns)
    for raw in delimited_frames(source, shown, fmt, start, chunksize=chunksize):
        yield raw if columns is None else raw[columns]


@dataclass(frozen=True)
class DelimitedStart:
    """What the csv module reads at the top of a CSV or TSV file: the header's names, as written (repeats kept;
    empty ones named as pandas names them), and the field separator."""

    names: list[str]
    sep: str


def delimited_start(source: Path, shown: str, fmt: str, *, allow_empty: bool = False) -> DelimitedStart:
    """Read the header and the first data row with the csv module, before pandas reads anything.

    Refuses, quickly, a file with no header, one wider than MAX_COLUMNS, and one whose first data row has
    another number of fields than the header (which pandas would silently cut or pad). Read with the csv
    module because pandas renames duplicate names ('a', 'a.1') before we could see them. A file without even a
    header has no names (``allow_empty``) or is refused.
    """
    sep = "\t" if fmt == "TSV" else ","
    try:
        with _open_text(source) as handle:
            reader = csv.reader(handle, delimiter=sep)
            header = next((row for row in reader if not _blank(row)), None)
            if header is None:
                if allow_empty:
                    return DelimitedStart([], sep)
                raise one_line_error(f"{shown} has no rows")
            check_width(shown, len(header))
            first = next((row for row in reader if not _blank(row)), None)
            if first is not None and len(first) != len(header):
                raise _misshapen(shown, sep, header, 1, reader.line_num, first)
    except (OSError, EOFError, ValueError, csv.Error) as exc:
        raise unreadable_error(shown, fmt, exc) from None
    return DelimitedStart([name if name else f"Unnamed: {i}" for i, name in enumerate(header)], sep)


def delimited_frames(
    source: Path, shown: str, fmt: str, start: DelimitedStart, *, chunksize: int | None = None, low_memory: bool = True
) -> Iterator[pd.DataFrame]:
    """Every column of a CSV or TSV file, whole or in chunks, each row checked to have the header's fields.

    The checks cost next to nothing on a well-formed file. pandas' C parser itself stops at a row with too many
    fields (after the first; :func:`delimited_start` checks that one), and fills the missing fields of a row
    with too few with NaN, so a short row always leaves a NaN in the last column. Only when that column has
    one, or the parser stopped, is the file read again with the csv module to name the first row whose number
    of fields is wrong. Raises UserError naming the file, that row (counted as in other messages, and its line
    of the file) and both numbers of fields.
    """
    scanner = _ShapeScanner(source, shown, fmt, start)
    offset = 0
    try:
        with warnings.catch_warnings():
            # Chunks of one column parsed as different types are expected; the numeric check reports them
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            result = pd.read_csv(
                source,
                sep=start.sep,
                encoding="utf-8",
                compression="gzip" if _gzipped(source) else None,
                # Rows with a trailing separator must not silently turn the first column into an index
                index_col=False,
                chunksize=chunksize,
                low_memory=low_memory,
            )
            chunks = [result] if chunksize is None else result
            try:
                for raw in chunks:
                    if raw.shape[1] and len(raw):
                        missing = raw.iloc[:, -1].isna().to_numpy()
                        if missing.any():
                            scanner.check(until_row=offset + int(np.flatnonzero(missing)[-1]) + 1)
                    offset += len(raw)
                    yield raw
            finally:
                if chunksize is not None:
                    result.close()
    except pd.errors.EmptyDataError:
        raise one_line_error(f"{shown} has no rows") from None
    except pd.errors.ParserError as exc:
        # "Expected 2 fields in line 7, saw 3": find the row with the csv module, which counts lines exactly
        scanner.check(until_row=None)
        raise unreadable_error(shown, fmt, exc) from None
    except (OSError, EOFError, ValueError, csv.Error) as exc:
        raise unreadable_error(shown, fmt, exc) from None
    finally:
        scanner.close()


class _ShapeScanner:
    """Reads a delimited file again, row by row, to find the first row whose number of fields differs from the
    header's. Used only when pandas' reading hints at one; each call continues where the previous one stopped,
    so a file is read at most once more in all. Lines without a quote are split with ``str.count`` (about
    0.5 s per million rows); from the first quote on, the csv module splits them (a quoted field may hold
    separators and line breaks), as it splits the header."""

    def __init__(self, source: Path, shown: str, fmt: str, start: DelimitedStart):
        self.source, self.shown, self.fmt, self.start = source, shown, fmt, start
        self.handle: Any = None
        self.records: Iterator[tuple[int, int, Callable[[], list[str]]]] | None = None
        self.row = 0

    def check(self, until_row: int | None) -> None:
        """Raise UserError for the first misshapen row up to data row ``until_row`` (None: the end)."""
        width = len(self.start.names)
        try:
            if self.records is None:
                self.handle = _open_text(self.source)
                self.records = self._records()
                next(self.records, None)  # the header
            while until_row is None or self.row < until_row:
                record = next(self.records, None)
                if record is None:
                    return
                count, line, fields = record
                self.row += 1
                if count != width:
                    raise _misshapen(self.shown, self.start.sep, self.start.names, self.row, line, fields())
        except (OSError, EOFError, ValueError, csv.Error) as exc:
            raise unreadable_error(self.shown, self.fmt, exc) from None

    def _records(self) -> Iterator[tuple[int, int, Callable[[], list[str]]]]:
        """(number of fields, line of the file where the row ends, its fields) of each row pandas reads."""
        sep = self.start.sep
        lines = iter(self.handle)
        number = 0
        for text in lines:
            number += 1
            if '"' in text:
                reader = csv.reader(itertools.chain([text], lines), delimiter=sep)
                before = number - 1
                for fields in reader:
                    if not _blank(fields):
                        yield len(fields), before + reader.line_num, lambda fields=fields: fields
                return
            content = text.rstrip("\r\n")
            count = content.count(sep) + 1
            if count == 1 and not content.strip():
                continue  # a blank line, which pandas skips
            yield count, number, lambda content=content: content.split(sep)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def _open_text(source: Path) -> Any:
    """The file as text for the csv module: gunzipped when it ends in .gz, a byte-order mark dropped (as pandas
    drops it, so that the first name matches pandas' name)."""
    opener = gzip.open if _gzipped(source) else open
    return opener(source, "rt", encoding="utf-8-sig", newline="")


def _gzipped(source: Path) -> bool:
    return source.name.lower().endswith(".gz")


def _blank(row: list[str]) -> bool:
    """A line pandas skips: empty, or only blanks."""
    return not row or (len(row) == 1 and not row[0].strip())


_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d*,\d+\s*$")


def _misshapen(shown: str, sep: str, header: Sequence[str], row: int, line: int, fields: list[str]) -> UserError:
    """The error for a data row whose number of fields is not the header's, with the likeliest cause."""
    width = len(header)
    what = "more" if len(fields) > width else "fewer"
    text = sep.join(fields)
    if sep == "," and any(";" in name for name in header) and re.search(r"\d,\d", text):
        hint = (
            "; the file seems to separate fields with ';' and write decimals with ',' (as in '1,5'): "
            "save it with '.' decimals and ',' separators"
        )
    elif len(fields) > width and not any(field.strip() for field in fields[width:]):
        hint = "; its extra fields are empty: remove the trailing separator(s)"
    else:
        hint = "; every row needs one field per column of the header: fix or remove that row"
    return one_line_error(
        f"{shown}: row {row} (line {line} of the file) has {plural(len(fields), 'field')}, {what} than the "
        f"header's {width}{hint}"
    )


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
            check_width(shown, len(fields))
            check_unique(shown, [field.name for field in fields])
            if parquet.metadata.num_rows == 0:
                raise one_line_error(f"{shown} has no rows")
            nested = {field.name: field.type for field in fields if pa.types.is_nested(field.type)}
            if columns is None:
                to_read = [field.name for field in fields if field.name not in nested]
            else:
                check_selection(shown, [field.name for field in fields], columns)
                _refuse_nested(shown, columns, nested)
                to_read = columns
            table = parquet.read(columns=to_read, use_pandas_metadata=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable_error(shown, "Parquet", exc) from None
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
        raise refused(f"{shown}: {described}, not numbers", "leave the column(s) out of {columns}")


def read_hdf5(source: Path, shown: str, key: str | None) -> pd.DataFrame:
    """Read one pandas object or plain h5py dataset from an HDF5 file, choosing it by ``key``.

    Read with h5py only, never with PyTables or ``pd.read_hdf``, which unpickle (see :mod:`funnelcli.data.hdf5`).
    """
    h5py = _import_hdf5(shown)
    try:
        with h5py.File(source, "r") as handle:
            name, kind = _choose_hdf5_table(shown, _hdf5_tables(h5py, handle), key)
            if kind.startswith("outside:"):
                raise one_line_error(
                    f"{shown}: key {name!r} is not in the file ({kind.removeprefix('outside:')}); funnelcli reads "
                    "only what the file itself holds: copy the data into it"
                )
            node = local(handle, name)
            if kind == "dataset":
                return _dataset_frame(shown, node, name)
            return read_pandas_group(shown, node, name, lambda width: check_width(shown, width))
    except (OSError, RuntimeError, RecursionError, TypeError, KeyError, ValueError) as exc:
        raise unreadable_error(shown, "HDF5", exc) from None


def _import_hdf5(shown: str) -> ModuleType:
    """Import h5py, or tell the user how to install the HDF5 extra."""
    try:
        import h5py
    except ImportError:
        raise one_line_error(f"{shown}: reading HDF5 files needs h5py; {_HDF5_INSTALL}") from None
    return h5py


def _hdf5_tables(h5py: ModuleType, group: Any, seen: set[int] | None = None) -> dict[str, str]:
    """Map every table under ``group`` to its kind, "pandas" or "dataset", keyed by path without a '/'.

    A group carrying pandas' ``pandas_type`` attribute is one pandas object; its PyTables internals
    (``table``, ``axis0``, ``block0_values``...) are not tables of their own, so it is not descended into.
    A link or dataset that would make HDF5 open another file is listed as "outside:<why>" and never opened;
    a group reached twice (links can form loops) is not descended into again.
    """
    seen = set() if seen is None else seen
    seen.add(hash(group.id))
    found: dict[str, str] = {}
    for child_name in group:
        path = f"{group.name.rstrip('/')}/{child_name}".lstrip("/")
        try:
            child = local(group, child_name)  # None for a dangling soft link
        except OutsideTheFile as outside:
            found[path] = f"outside:{outside}"
            continue
        if isinstance(child, h5py.Dataset):
            found[path] = "dataset"
        elif isinstance(child, h5py.Group) and hash(child.id) not in seen:
            if "pandas_type" in child.attrs:
                found[path] = "pandas"
            else:
                found.update(_hdf5_tables(h5py, child, seen))
    return found


def _choose_hdf5_table(shown: str, tables: dict[str, str], key: str | None) -> tuple[str, str]:
    """Return (path, kind) of the table named by ``key``, or of the only table when no key is given."""
    if not tables:
        raise one_line_error(f"{shown} holds no datasets or pandas tables")
    if key is None:
        if len(tables) == 1:
            return next(iter(tables.items()))
        raise refused(f"{shown} holds several tables ({_plain_list(tables)})", "choose one with {key}")
    wanted = key.strip("/")
    if wanted not in tables:
        raise refused(f"{shown}: no table {key!r}; keys in the file: {_plain_list(tables)}", "choose one with {key}")
    return wanted, tables[wanted]


def _dataset_frame(shown: str, dataset: Any, name: str) -> pd.DataFrame:
    """Turn a plain h5py dataset into a frame: 2-D is a table, 1-D a column, compound a column per field."""
    if dataset.dtype.names:
        # Compound datasets (e.g. tables written with PyTables itself) have one named field per column
        check_width(shown, len(dataset.dtype.names))
        try:
            return pd.DataFrame(dataset[()])
        except ValueError as exc:
            raise unreadable_error(shown, "HDF5", exc) from None
    if dataset.dtype.kind not in "biuf":
        raise refused(
            f"{shown}: dataset {name!r} holds {dataset.dtype} values, not numbers", "choose another with {key}"
        )
    if dataset.ndim not in (1, 2):
        raise one_line_error(
            f"{shown}: dataset {name!r} has {dataset.ndim} dimensions; expected a 2-D table or a 1-D column"
        )
    if dataset.ndim == 2:
        check_width(shown, dataset.shape[1])
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
        raise one_line_error(
            f"{shown}: dataset {name!r} has {width} columns but its 'columns' attribute lists {len(names)} "
            "names; fix the attribute or remove it"
        )
    return names


# --------------------------------------------------------------------------------- checking and converting


@dataclass(frozen=True)
class _Verdict:
    """What to do with one column: use ``values``, refuse it for ``problem``, or (neither) skip it."""

    values: np.ndarray | None = None
    problem: str | None = None


def numeric_frame(
    raw: pd.DataFrame, shown: str, columns: list[str] | None, *, skipped: Sequence[str] = (), row_offset: int = 0
) -> pd.DataFrame:
    """Check ``raw`` and return its selected columns as float64 with a fresh RangeIndex.

    ``skipped`` names columns the reader already left out as non-numeric, for the warning. ``row_offset`` is
    the number of data rows before ``raw`` in the file (a chunk of a streamed file), so messages name rows of
    the file.
    """
    raw.columns = [str(name) for name in raw.columns]
    names = list(raw.columns)
    check_unique(shown, names)
    if len(raw) == 0:
        raise one_line_error(f"{shown} has no rows")
    if columns is not None:
        check_selection(shown, names, columns)
    explicit = columns is not None
    kept: list[str] = []
    values: list[np.ndarray] = []
    problems: list[str] = []
    skipped = list(skipped)
    for name in columns if explicit else names:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            # Converting text or extreme values may warn (overflow, invalid casts); the checks below report them
            warnings.simplefilter("ignore", RuntimeWarning)
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
        raise refused(f"{shown}: {_joined(problems)}", "fix these values or exclude the column(s) with {columns}")
    if not kept:
        hint = _delimiter_hint(names, raw)
        if hint is None:
            raise refused(
                f"{shown} has no numeric columns",
                "give the table at least one column of numbers, or name them with {columns}",
            )
        raise one_line_error(f"{shown} has no numeric columns{hint}")
    _check_finite(shown, kept, values, row_offset)
    return _assemble(raw, kept, values)


def _delimiter_hint(names: Sequence[str], raw: pd.DataFrame | None = None) -> str | None:
    """A way out for a table without numbers: most often the file uses another delimiter or decimal mark (None:
    neither, and the caller says to give columns of numbers)."""
    if raw is not None and len(raw):
        for position in range(min(raw.shape[1], _REPORT_LIMIT)):
            column = raw.iloc[:, position]
            if column.dtype == object or isinstance(column.dtype, pd.StringDtype):
                first = _first_present(column.to_numpy(dtype=object))
                if first is not None and _DECIMAL_COMMA.match(str(column.iloc[first])):
                    return (
                        f"; column {names[position]!r} holds numbers written with a decimal comma (first "
                        f"{shown_value(column.iloc[first])}): save the file with '.' as the decimal mark"
                    )
    if len(names) == 1:
        for delimiter, label in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
            if delimiter in names[0]:
                return (
                    f"; its header reads as one column {names[0]!r}, so the file seems to be delimited by {label}: "
                    "save it comma-separated (or as .tsv for tabs)"
                )
    return None


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
            f" (first at row {row_offset + first + 1}: {shown_value(series.iloc[first])})" if first is not None else ""
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
            problem=f"column {name!r} has {plural(n_bad, 'non-numeric value')} "
            f"(first at row {row_offset + first + 1}: {shown_value(text[first])})"
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
            f"{plural(int(mask.sum()), label)} (first at row {row_offset + int(np.argmax(mask)) + 1})"
            for mask, label in ((nan, "NaN value"), (infinite, "infinite value"))
            if mask.any()
        ]
        reports.append(f"column {name!r} has {' and '.join(parts)}")
    if reports:
        raise one_line_error(f"{shown}: {_joined(reports)}; drop or impute these rows")


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


def check_width(shown: str, n_columns: int) -> None:
    """Refuse a table of more than MAX_COLUMNS columns (before its rows are read)."""
    if n_columns > MAX_COLUMNS:
        raise one_line_error(
            f"{shown} has {n_columns:,} columns, more than the {MAX_COLUMNS:,} funnelcli reads; "
            "keep the columns you need in a narrower file"
        )


def check_unique(shown: str, names: Sequence[str]) -> None:
    """Refuse a file whose column names repeat."""
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise one_line_error(f"{shown}: duplicate column name(s) {_quoted(repeated)}; give every column a unique name")


def check_selection(shown: str, available: Sequence[str], columns: Sequence[str]) -> None:
    """Refuse an empty selection, a name selected twice, or names the file does not have."""
    if not columns:
        raise refused(f"{shown}: no columns selected", "name at least one with {columns}")
    repeated = [name for name, count in Counter(columns).items() if count > 1]
    if repeated:
        raise one_line_error(f"{shown}: column(s) {_quoted(repeated)} selected more than once in --columns")
    present = set(available)
    missing = [name for name in columns if name not in present]
    if missing:
        raise one_line_error(f"{shown}: no column(s) named {_quoted(missing)}; available columns: {_quoted(available)}")


# ---------------------------------------------------------------------------------------------- splitting


def validation_size(n: int, fraction: float) -> int:
    """How many of ``n`` rows :func:`split_validation` holds out: ``round(fraction * n)``, at least 1, at most
    n - 1."""
    return min(max(1, round(fraction * n)), n - 1)


def split_validation(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows at random into (training, validation), the same way for the same seed.

    Validation gets ``round(fraction * n)`` rows, but at least one, and training keeps at least one; each
    part keeps the original row order and gets a fresh RangeIndex. Raises UserError when ``fraction`` is not
    strictly between 0 and 1 or the frame has fewer than 2 rows.
    """
    if not 0 < fraction < 1:  # also false for NaN
        raise OutOfRange("val_fraction", fraction, "between 0 and 1 (exclusive)")
    n = len(frame)
    if n < 2:
        raise Refused(
            f"the table has {plural(n, 'row')}", "a validation split needs at least 2 rows, or pass {validation=FILE}"
        )
    n_val = validation_size(n, fraction)
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
        raise one_line_error(f"{shown}: could not write the file: {reason(exc)}") from None


def check_output_path(path: PathArg, *, overwrite: bool = True) -> str:
    """Refuse an output path before any work is done; return the output format its extension names."""
    shown = os.fspath(path)
    target = Path(path)
    fmt = format_for(target, shown, _WRITE_FORMATS, "supported output extensions")
    if target.is_dir():
        raise one_line_error(f"{shown} is a directory; give a file name ending in one of {', '.join(WRITE_EXTENSIONS)}")
    if not overwrite and target.exists():
        raise refused(f"{shown} already exists", "pass {overwrite=True} to overwrite it")
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


# ------------------------------------------------------------------------------------------------ messages


def one_line_error(message: str) -> UserError:
    """Return a UserError whose message is guaranteed to be one line."""
    return UserError(" ".join(message.split("\n")).replace("\r", " "))


def refused(problem: str, remedy: str) -> Refused:
    """Return a :class:`Refused` whose problem (which may name a file) is guaranteed to be one line."""
    return Refused(" ".join(problem.split("\n")).replace("\r", " "), remedy)


def unreadable_error(shown: str, fmt: str, exc: BaseException) -> UserError:
    """Return the error for a file the library could not parse, with the library's short reason."""
    if isinstance(exc, UserError):  # our own finding inside the reader's try block: keep its message
        return exc
    hint = "; save it as UTF-8" if isinstance(exc, UnicodeDecodeError) else ""
    return one_line_error(f"{shown}: could not be read as {fmt}: {reason(exc)}{hint}")


def _quoted(names: Iterable[str]) -> str:
    """Return names quoted and comma-separated, cut short after a screenful."""
    return cut([repr(str(name)) for name in names], _LIST_LIMIT)


def _plain_list(names: Iterable[str]) -> str:
    """Return names comma-separated without quotes (HDF5 keys), cut short after a screenful."""
    return cut(list(names), _LIST_LIMIT)


def _joined(reports: Sequence[str]) -> str:
    """Return per-column reports comma-separated, cut short after a few columns."""
    return cut(reports, _REPORT_LIMIT, more=" and {} more column(s)")


def _first_present(values: np.ndarray) -> int | None:
    """Return the position of the first non-missing value, or None when all are missing."""
    present = pd.notna(values)
    return int(np.argmax(present)) if present.any() else None
