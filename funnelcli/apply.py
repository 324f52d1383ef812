"""Applying a fitted model to a file, a chunk of rows at a time: ``score_file`` and ``encode_file``; and the
condition rows ``funnel sample --conditions`` draws for (``condition_rows``).

Peak memory stays that of one chunk whatever the file's length; the output is written as it goes and
appears, complete, only at the end. These are what ``funnel score`` and ``funnel encode`` run. The estimator's
``context_columns_`` (a conditional model's conditions, a mixed model's modelled categorical columns) are read
from the file as they are (any type) beside its numeric columns, and a bad value in one is named by its row of
the file.
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
from funnelcli.models.categorical import ROLE


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
    identifier, a label), then the estimator's ``context_columns_`` it does not name (conditions, modelled
    categorical columns; as they are), then the model columns, then the scores as ``column``.

    Returns the running mean of log p(x) (log p(x | c) for a conditional model, log P(k | c) + log p(x | k, c) for
    a mixed one) with its standard error. Scores equal ``score_samples`` on the whole table (dequantization noise
    follows the rows, not the chunks); a VAE's bound draws fresh noise per chunk. Raises UserError, before reading
    any row, when ``column`` is one of the output's other columns, a kept column is named twice, or ``data`` lacks
    a context column.
    """
    extra = [name for name in keep or [] if name not in estimator.input_columns_]  # model columns are written anyway
    if keep and output is None:
        raise Misused(["keep"], "passes columns through to the {output} table; give {output=FILE} too")
    passed = _passed_columns(estimator, extra)
    if output is not None:
        check_new_columns([column], [*passed, *estimator.input_columns_], "the score column", "column")
    check_context_columns(estimator, data, key=key)
    summary = RunningMean()
    writer = TableWriter(output, overwrite=overwrite) if output is not None else None
    with writer if writer is not None else contextlib.nullcontext():
        offset = 0
        for chunk, raw in _chunks(estimator, data, passed, key=key, batch_rows=batch_rows):
            rows = _with_context(estimator, chunk, raw)
            with _context_rows_named(estimator, rows, data, offset):
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
    after the ``keep`` columns passed through as they are and the estimator's ``context_columns_`` (the code is
    T(x; c), or T(x; k, c) for a mixed model, which decodes only with its c and k); returns the number of rows.

    Raises UserError, before reading any row, when a latent column would take the name of a kept or context
    column, or ``data`` lacks a context column."""
    names = [f"{prefix}{j}" for j in range(estimator.latent_dim_)]
    passed = _passed_columns(estimator, keep or [])
    check_new_columns(names, passed, "the latent columns", "prefix")
    check_context_columns(estimator, data, key=key)
    with TableWriter(output, overwrite=overwrite) as writer:
        offset = 0
        for chunk, raw in _chunks(estimator, data, passed, key=key, batch_rows=batch_rows):
            rows = _with_context(estimator, chunk, raw)
            with _context_rows_named(estimator, rows, data, offset):
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
    check_context_columns(estimator, path, key=key, conditions_only=True)
    conditions = read_columns(path, estimator.conditions_.names, key=key)
    if len(conditions) == 0:
        raise UserError(f"{path} has no rows; give a row of conditions for each draw")
    if len(conditions) * per_row > MAX_SAMPLES:
        raise UserError(
            f"{path} has {len(conditions):,} rows and -n {per_row:,} draws that many for each: "
            f"{len(conditions) * per_row:,} rows, more than {MAX_SAMPLES:,}; draw fewer per row or split the file"
        )
    with _context_rows_named(estimator, conditions, path, 0):
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


def check_context_columns(
    estimator: FunnelDensity, data: str | Path, *, key: str | None = None, conditions_only: bool = False
) -> None:
    """Refuse, before any row is read, a table that lacks one of the estimator's ``context_columns_``: a condition
    column of a conditional model, or a modelled categorical column of a mixed one (only the former with
    ``conditions_only``, for the conditions that sampling is given)."""
    parts = [(column, role) for column, role in _context_parts(estimator) if role == "condition" or not conditions_only]
    if not parts:
        return
    present = set(column_names(data, key=key))
    lacking = {}  # role -> the missing columns of that role
    for column, role in parts:
        if column.name not in present:
            lacking.setdefault(role, []).append(repr(column.name))
    if lacking:
        what = " and the ".join(f"{role} column(s) {', '.join(names)}" for role, names in lacking.items())
        raise UserError(
            f"{data} lacks the {what}; the model gives {likelihood_formula(estimator)}, so the table must hold "
            f"{', '.join(column.name for column, _ in parts)} for every row: add the column(s)"
        )


def likelihood_formula(estimator: FunnelDensity) -> str:
    """What a score of ``estimator`` is, in symbols named by its columns: ``log p(x)``, ``log p(x | sex)``, or for a
    mixed model ``log P(species | sex) + log p(x | species, sex)``."""
    conditions = [] if estimator.conditions_ is None else estimator.conditions_.names
    given = f" | {', '.join(conditions)}" if conditions else ""
    if estimator.categorical_ is None:
        return f"log p(x{given})"
    modelled, context = ", ".join(estimator.categorical_.names), ", ".join(estimator.context_columns_)
    return f"log P({modelled}{given}) + log p(x | {context})"


def _passed_columns(estimator: FunnelDensity, keep: list[str]) -> list[str]:
    """The columns read as they are and written first: ``keep``, then the ``context_columns_`` it does not name."""
    return [*keep, *(name for name in estimator.context_columns_ if name not in keep)]


def _chunks(
    estimator: FunnelDensity, data: str | Path, passed: list[str], *, key: str | None, batch_rows: int
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame | None]]:
    """(the model's columns as float64, the ``passed`` columns as they are or None), chunk by chunk, aligned."""
    chunks = iter_table(data, columns=estimator.input_columns_, key=key, batch_rows=batch_rows)
    raws = iter_columns(data, passed, key=key, batch_rows=batch_rows) if passed else None
    for chunk in chunks:
        yield chunk, None if raws is None else next(raws).reset_index(drop=True)


def _with_context(estimator: FunnelDensity, chunk: pd.DataFrame, raw: pd.DataFrame | None) -> pd.DataFrame:
    """The rows the estimator reads: the model's columns, then its ``context_columns_`` (conditions, modelled
    categorical columns)."""
    names = estimator.context_columns_
    if not names:
        return chunk
    return pd.concat([chunk.reset_index(drop=True), raw[names]], axis=1)


@contextlib.contextmanager
def _context_rows_named(estimator: FunnelDensity, rows: pd.DataFrame, data: str | Path, offset: int):
    """Re-raise a bad value of a context column (missing, not finite, an unseen category) with its row of the file:
    the library counts rows within the chunk it was given."""
    try:
        yield
    except UserError as error:
        for condition, role in _context_parts(estimator):
            if condition.name not in rows.columns:
                continue
            row = _first_bad_row(condition, rows[condition.name], role)
            if row is not None:
                value = rows[condition.name].iloc[row]
                raise _bad_context_value(condition, value, data, offset + row + 1, role) from None
        raise error


def _context_parts(estimator: FunnelDensity) -> list[tuple]:
    """(column, role) for each of ``context_columns_``: the conditions ("condition"), then a mixed model's modelled
    categorical columns ("categorical")."""
    conditions = [] if estimator.conditions_ is None else [(c, "condition") for c in estimator.conditions_.columns]
    categorical = [] if estimator.categorical_ is None else [(c, ROLE) for c in estimator.categorical_.columns]
    return conditions + categorical


def _first_bad_row(condition, values: pd.Series, role: str = "condition") -> int | None:
    """The first row of ``values`` that ``condition`` cannot encode, found by bisection (None: every row is good)."""

    def fails(stop: int) -> bool:
        try:
            condition.encode(values.iloc[:stop], role)
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


def _bad_context_value(condition, value, data: str | Path, row: int, role: str = "condition") -> UserError:
    where = f"row {row:,} of {data}"
    if pd.isna(value):
        given = "conditions" if role == "condition" else condition.name
        return UserError(
            f"{role} column {condition.name!r} has a missing value at {where}; give every row its {given}, or leave "
            "such rows out"
        )
    if condition.categories is None:
        return UserError(
            f"{role} column {condition.name!r} holds {shown(value)} at {where}; the model reads it as finite numbers"
        )
    known = ", ".join(condition.categories[:10]) + (", ..." if len(condition.categories) > 10 else "")
    return UserError(
        f"{role} column {condition.name!r} holds {shown(value)} at {where}, a category the model did not see in "
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
