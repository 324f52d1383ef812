"""Tables in and out a batch of rows at a time, so that memory does not grow with the number of rows.

``iter_table`` yields validated float64 chunks of a CSV, TSV or Parquet file (HDF5 is read whole and sliced);
``TableWriter`` appends chunks to an output that appears, complete, only when the writer closes cleanly.
Errors name rows of the whole file, as :func:`read_table`'s do.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import pandas as pd

from funnelcli.atomic import atomic_path
from funnelcli.data.messages import reason
from funnelcli.data.tables import (
    READ_FORMATS,
    PathArg,
    check_is_file,
    check_output_path,
    check_selection,
    check_unique,
    check_width,
    format_for,
    iter_delimited,
    numeric_frame,
    one_line_error,
    read_columns,
    read_table,
    unreadable_error,
)

#: Rows per chunk: large enough that per-chunk overhead vanishes, small enough to bound memory.
BATCH_ROWS = 65_536


def iter_table(
    path: PathArg, *, columns: Sequence[str], key: str | None = None, batch_rows: int = BATCH_ROWS
) -> Iterator[pd.DataFrame]:
    """The named columns of a table as float64 chunks of at most ``batch_rows`` rows, validated as
    :func:`read_table` validates a whole table (NaN, infinities, stray text: one error naming file row)."""
    shown = os.fspath(path)
    source = Path(path)
    check_is_file(source, shown)
    fmt = format_for(source, shown, READ_FORMATS, "supported extensions")
    wanted = [str(c) for c in columns]
    if fmt == "HDF5":
        frame = read_table(path, key=key, columns=wanted)
        for start in range(0, len(frame), batch_rows):
            yield frame.iloc[start : start + batch_rows].reset_index(drop=True)
        return
    offset = 0
    for raw in _raw_chunks(source, shown, fmt, wanted, batch_rows):
        yield numeric_frame(raw, shown, wanted, row_offset=offset)
        offset += len(raw)
    if offset == 0:
        raise one_line_error(f"{shown} has no rows")


def iter_columns(
    path: PathArg, columns: Sequence[str], *, key: str | None = None, batch_rows: int = BATCH_ROWS
) -> Iterator[pd.DataFrame]:
    """The named columns as they are (any type), in the same chunks as :func:`iter_table`."""
    shown = os.fspath(path)
    source = Path(path)
    check_is_file(source, shown)
    fmt = format_for(source, shown, READ_FORMATS, "supported extensions")
    wanted = [str(c) for c in columns]
    if fmt == "HDF5":
        frame = read_columns(path, wanted, key=key)
        for start in range(0, len(frame), batch_rows):
            yield frame.iloc[start : start + batch_rows].reset_index(drop=True)
        return
    yield from _raw_chunks(source, shown, fmt, wanted, batch_rows)


def _raw_chunks(source: Path, shown: str, fmt: str, wanted: list[str], batch_rows: int) -> Iterator[pd.DataFrame]:
    if fmt == "Parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            # pre_buffer (pyarrow's default) keeps every row group's buffers until the file is closed, so
            # memory would grow with the file; read one row group's pages at a time instead.
            parquet = pq.ParquetFile(source, pre_buffer=False)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise unreadable_error(shown, fmt, exc) from None
        with parquet:
            names = parquet.schema_arrow.names
            check_width(shown, len(names))
            check_unique(shown, names)
            check_selection(shown, names, wanted)
            try:
                for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted, use_pandas_metadata=False):
                    yield batch.to_pandas()
            except (pa.ArrowException, OSError) as exc:
                raise unreadable_error(shown, fmt, exc) from None
        return
    yield from iter_delimited(source, shown, fmt, wanted, chunksize=batch_rows)


class TableWriter:
    """Write a table chunk by chunk; the file appears at ``path``, whole, only when the ``with`` block ends
    without an error (a temporary file beside it is renamed into place), and never otherwise."""

    def __init__(self, path: PathArg, *, overwrite: bool = False):
        self.path = Path(path)
        self.format = check_output_path(path, overwrite=overwrite)
        self.rows = 0

    def __enter__(self) -> TableWriter:
        self._stack = ExitStack()
        self._temporary = self._stack.enter_context(atomic_path(self.path))
        self._writer = None
        return self

    def write(self, frame: pd.DataFrame) -> None:
        try:
            self._write(frame)
        except OSError as exc:
            raise one_line_error(f"{os.fspath(self.path)}: could not write the file: {reason(exc)}") from None
        self.rows += len(frame)

    def _write(self, frame: pd.DataFrame) -> None:
        if self.format == "Parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._temporary, table.schema)
            self._writer.write_table(table)
        else:
            gzip = self.path.name.lower().endswith(".gz")
            frame.to_csv(
                self._temporary,
                sep="\t" if self.format == "TSV" else ",",
                index=False,
                header=self.rows == 0,
                mode="w" if self.rows == 0 else "a",
                compression="gzip" if gzip else None,
            )

    def __exit__(self, *exc_info) -> bool:
        if self._writer is not None:
            self._writer.close()
        return self._stack.__exit__(*exc_info)
