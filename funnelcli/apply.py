"""Applying a fitted model to a file, a chunk of rows at a time: ``score_file`` and ``encode_file``; and the
condition rows ``funnel sample --conditions`` draws for (``condition_rows``).

Peak memory stays that of one chunk whatever the file's length; the output is written as it goes and
appears, complete, only at the end. These are what ``funnel score`` and ``funnel encode`` run. A conditional
model's condition columns are read from the file as they are (any type) beside its numeric columns, and a bad
condition value is named by its row of the file.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from funnelcli.data.stream import BATCH_ROWS, TableWriter, iter_columns, iter_table
from funnelcli.data.tables import (
    READ_FORMATS,
    check_is_file,
    delimited_start,
    format_for,
    read_columns,
    read_hdf5,
    unreadable_error,
)
from funnelcli.errors import Misused, Refused, UserError, shown
from funnelcli.estimator import MAX_SAMPLES, FunnelDensity


@dataclass
class RunningMean:
    """Mean and standard error of a stream of values (Chan et al.'s pairwise update, in float64).

    Non-finite values (a density that underflows to zero far from the data gives log p = -inf) are counted in
    ``nonfinite`` and left out of the mean, which is then over the ``count`` finite values.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    nonfinite: int = 0

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(values)
        self.nonfinite += int((~finite).sum())
        values = values[finite]
        n = values.size
        if n == 0:
            return
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def stderr(self) -> float:
        if self.count < 2:
            return 0.0
        return math.sqrt(self.m2 / (self.count - 1) / self.count)


def score_file(
    estimator: FunnelDensity,
    data: str | Path,
    *,
    output: str | Path | None = None,
    key: str | None = None,
    overwrite: bool = False,
    iw_samples: int | None = None,
    column: str = "log_prob",
    keep: list[str] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> RunningMean:
    """Score every row of ``data``; with ``output``, write the ``keep`` columns passed through as they are (an
    identifier, a label), then a conditional model's condition columns (as they are), then the model columns,
    then the scores as ``column``.

    Returns the running mean of log p(x) (log p(x | c) for a conditional model) with its standard error. Scores
    equal ``score_samples`` on the whole table (dequantization noise follows the rows, not the chunks); a VAE's
    bound draws fresh noise per chunk. Raises UserError, before reading any row, when ``column`` is one of the
    output's other columns, a kept column is named twice, or ``data`` lacks a condition column.
    """
    extra = [name for name in keep or [] if name not in estimator.input_columns_]  # model columns are written anyway
    if keep and output is None:
        raise Misused(["keep"], "passes columns through to the {output} table; give {output=FILE} too")
    passed = _passed_columns(estimator, extra)
    if output is not None:
        check_new_columns([column], [*passed, *estimator.input_columns_], "the score column", "column")
    check_condition_columns(estimator, data, key=key)
    summary = RunningMean()
    writer = TableWriter(output, overwrite=overwrite) if output is not None else None
    with writer if writer is not None else contextlib.nullcontext():
        offset = 0
        for chunk, raw in _chunks(estimator, data, passed, key=key, batch_rows=batch_rows):
            rows = _with_conditions(estimator, chunk, raw)
            with _condition_rows_named(estimator, rows, data, offset):
                log_prob = estimator.score_samples(rows, iw_samples=iw_samples, row_offset=offset)
            summary.add(log_prob)
            if writer is not None:
                frame = chunk.assign(**{column: log_prob}).reset_index(drop=True)
                if raw is not None:
                    frame = pd.concat([raw, frame], axis=1)
                writer.write(frame)
            offset += len(chunk)
    return summary


def encode_file(
    estimator: FunnelDensity,
    data: str | Path,
    output: str | Path,
    *,
    keep: list[str] | None = None,
    key: str | None = None,
    overwrite: bool = False,
    prefix: str = "z",
    batch_rows: int = BATCH_ROWS,
) -> int:
    """Write the latent code ``z0 ... z{k-1}`` (named with ``prefix``) of every row of ``data`` to ``output``,
    after the ``keep`` columns passed through as they are and a conditional model's condition columns (the code is
    T(x; c), which decodes only with its c); returns the number of rows.

    Raises UserError, before reading any row, when a latent column would take the name of a kept or condition
    column, or ``data`` lacks a condition column."""
    names = [f"{prefix}{j}" for j in range(estimator.latent_dim_)]
    passed = _passed_columns(estimator, keep or [])
    check_new_columns(names, passed, "the latent columns", "prefix")
    check_condition_columns(estimator, data, key=key)
    with TableWriter(output, overwrite=overwrite) as writer:
        offset = 0
        for chunk, raw in _chunks(estimator, data, passed, key=key, batch_rows=batch_rows):
            rows = _with_conditions(estimator, chunk, raw)
            with _condition_rows_named(estimator, rows, data, offset):
                frame = pd.DataFrame(estimator.transform(rows), columns=names)
            if raw is not None:
                frame = pd.concat([raw, frame], axis=1)
            writer.write(frame)
            offset += len(chunk)
        return writer.rows


def condition_rows(
    estimator: FunnelDensity, path: str | Path, *, per_row: int = 1, key: str | None = None
) -> pd.DataFrame:
    """The condition columns of the table at ``path``, each row repeated ``per_row`` times in order (row 1's
    copies, then row 2's...): the ``conditions`` of :meth:`FunnelDensity.sample` for ``per_row`` draws each.

    Raises UserError when the model is unconditional, the table lacks a condition column, a value is missing or
    a category unseen in training (named by its row of the file), or when more than 10,000,000 rows would be
    drawn."""
    if estimator.conditions_ is None:
        raise Misused(["conditions"], "applies to conditional models only; this model has no conditions")
    if not (isinstance(per_row, int) and per_row >= 1):
        raise UserError(f"-n must be at least 1 (rows drawn per condition row), got {shown(per_row)}")
    check_condition_columns(estimator, path, key=key)
    conditions = read_columns(path, estimator.conditions_.names, key=key)
    if len(conditions) == 0:
        raise UserError(f"{path} has no rows; give a row of conditions for each draw")
    if len(conditions) * per_row > MAX_SAMPLES:
        raise UserError(
            f"{path} has {len(conditions):,} rows and -n {per_row:,} draws that many for each: "
            f"{len(conditions) * per_row:,} rows, more than {MAX_SAMPLES:,}; draw fewer per row or split the file"
        )
    with _condition_rows_named(estimator, conditions, path, 0):
        estimator.conditions_.encode(conditions)  # checked here, where the rows are still the file's
    return conditions.loc[conditions.index.repeat(per_row)].reset_index(drop=True)


def column_names(path: str | Path, *, key: str | None = None) -> list[str]:
    """The column names of the table at ``path``, from its header (CSV, TSV) or schema (Parquet) without reading
    its rows; an HDF5 table is read."""
    source, label = Path(path), os.fspath(path)
    check_is_file(source, label)
    fmt = format_for(source, label, READ_FORMATS, "supported extensions")
    if fmt in ("CSV", "TSV"):
        return delimited_start(source, label, fmt).names
    if fmt == "Parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with pq.ParquetFile(source) as parquet:
                return [str(name) for name in parquet.schema_arrow.names]
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise unreadable_error(label, fmt, exc) from None
    return [str(name) for name in read_hdf5(source, label, key).columns]


def check_condition_columns(estimator: FunnelDensity, data: str | Path, *, key: str | None = None) -> None:
    """Refuse, before any row is read, a table that lacks a condition column of a conditional model."""
    if estimator.conditions_ is None:
        return
    present = set(column_names(data, key=key))
    names = estimator.conditions_.names
    missing = [name for name in names if name not in present]
    if missing:
        raise UserError(
            f"{data} lacks the condition column(s) {', '.join(map(repr, missing))}; the model gives log p(x | "
            f"{', '.join(names)}), so the table must hold {', '.join(names)} for every row: add the column(s)"
        )


def _passed_columns(estimator: FunnelDensity, keep: list[str]) -> list[str]:
    """The columns read as they are and written first: ``keep``, then the condition columns it does not name."""
    conditions = [] if estimator.conditions_ is None else estimator.conditions_.names
    return [*keep, *(name for name in conditions if name not in keep)]


def _chunks(
    estimator: FunnelDensity, data: str | Path, passed: list[str], *, key: str | None, batch_rows: int
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame | None]]:
    """(the model's columns as float64, the ``passed`` columns as they are or None), chunk by chunk, aligned."""
    chunks = iter_table(data, columns=estimator.input_columns_, key=key, batch_rows=batch_rows)
    raws = iter_columns(data, passed, key=key, batch_rows=batch_rows) if passed else None
    for chunk in chunks:
        yield chunk, None if raws is None else next(raws).reset_index(drop=True)


def _with_conditions(estimator: FunnelDensity, chunk: pd.DataFrame, raw: pd.DataFrame | None) -> pd.DataFrame:
    """The rows the estimator reads: the model's columns, and a conditional model's condition columns."""
    if estimator.conditions_ is None:
        return chunk
    return pd.concat([chunk.reset_index(drop=True), raw[estimator.conditions_.names]], axis=1)


@contextlib.contextmanager
def _condition_rows_named(estimator: FunnelDensity, rows: pd.DataFrame, data: str | Path, offset: int):
    """Re-raise a bad condition value (missing, not finite, an unseen category) with its row of the file: the
    library counts rows within the chunk it was given."""
    try:
        yield
    except UserError as error:
        if estimator.conditions_ is None:
            raise
        for condition in estimator.conditions_.columns:
            row = _first_bad_row(condition, rows[condition.name])
            if row is not None:
                raise _bad_condition(condition, rows[condition.name].iloc[row], data, offset + row + 1) from None
        raise error


def _first_bad_row(condition, values: pd.Series) -> int | None:
    """The first row of ``values`` that ``condition`` cannot encode, found by bisection (None: every row is good)."""

    def fails(stop: int) -> bool:
        try:
            condition.encode(values.iloc[:stop])
        except UserError:
            return True
        return False

    if not fails(len(values)):
        return None
    low, high = 0, len(values)  # the rows before low encode; those before high do not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fails(middle) else (middle, high)
    return low


def _bad_condition(condition, value, data: str | Path, row: int) -> UserError:
    where = f"row {row:,} of {data}"
    if pd.isna(value):
        return UserError(
            f"condition column {condition.name!r} has a missing value at {where}; give every row its "
            "conditions, or leave such rows out"
        )
    if condition.categories is None:
        return UserError(
            f"condition column {condition.name!r} holds {shown(value)} at {where}; the model reads it as finite numbers"
        )
    known = ", ".join(condition.categories[:10]) + (", ..." if len(condition.categories) > 10 else "")
    return UserError(
        f"condition column {condition.name!r} holds {shown(value)} at {where}, a category the model did not see in "
        f"training (it knows {known}); leave such rows out, or retrain with them"
    )


def check_new_columns(new: list[str], present: list[str], what: str, parameter: str) -> None:
    """Refuse output columns named like columns already in the output (or named twice, or not at all);
    ``parameter`` is the one that names ``new``."""
    if any(not name.strip() for name in new):
        raise Refused(f"{what} need a name that is not blank", f"pass one with {{{parameter}}}")
    repeated = sorted({name for name in present if present.count(name) > 1})
    if repeated:
        raise UserError(f"column(s) {', '.join(map(repr, repeated))} are named more than once; name each once")
    taken = [name for name in new if name in present]
    if taken:
        raise Refused(
            f"the output would hold two columns named {taken[0]!r} ({what} and a column of the data)",
            f"name {what} otherwise with {{{parameter}}}",
        )
