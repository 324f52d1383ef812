"""Applying a fitted model to a file, a chunk of rows at a time: ``score_file`` and ``encode_file``.

Peak memory stays that of one chunk whatever the file's length; the output is written as it goes and
appears, complete, only at the end. These are what ``funnel score`` and ``funnel encode`` run.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from funnelcli.data.stream import BATCH_ROWS, TableWriter, iter_columns, iter_table
from funnelcli.errors import Misused, Refused, UserError
from funnelcli.estimator import FunnelDensity


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
    identifier, a label), then the model columns, then the scores as ``column``.

    Returns the running mean of log p(x) with its standard error. Scores equal ``score_samples`` on the whole
    table (dequantization noise follows the rows, not the chunks); a VAE's bound draws fresh noise per chunk.
    Raises UserError, before reading any row, when ``column`` is one of the output's other columns or a kept
    column is named twice.
    """
    extra = [name for name in keep or [] if name not in estimator.input_columns_]  # model columns are written anyway
    if keep and output is None:
        raise Misused(["keep"], "passes columns through to the {output} table; give {output=FILE} too")
    if output is not None:
        check_new_columns([column], [*extra, *estimator.input_columns_], "the score column", "column")
    summary = RunningMean()
    writer = TableWriter(output, overwrite=overwrite) if output is not None else None
    passed = iter_columns(data, extra, key=key, batch_rows=batch_rows) if extra else None
    with writer if writer is not None else contextlib.nullcontext():
        offset = 0
        for chunk in iter_table(data, columns=estimator.input_columns_, key=key, batch_rows=batch_rows):
            log_prob = estimator.score_samples(chunk, iw_samples=iw_samples, row_offset=offset)
            summary.add(log_prob)
            if writer is not None:
                frame = chunk.assign(**{column: log_prob}).reset_index(drop=True)
                if passed is not None:
                    frame = pd.concat([next(passed).reset_index(drop=True), frame], axis=1)
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
    after the ``keep`` columns passed through as they are; returns the number of rows.

    Raises UserError, before reading any row, when a latent column would take the name of a kept one."""
    names = [f"{prefix}{j}" for j in range(estimator.latent_dim_)]
    check_new_columns(names, keep or [], "the latent columns", "prefix")
    chunks = iter_table(data, columns=estimator.input_columns_, key=key, batch_rows=batch_rows)
    passed = iter_columns(data, keep, key=key, batch_rows=batch_rows) if keep else None
    with TableWriter(output, overwrite=overwrite) as writer:
        for chunk in chunks:
            frame = pd.DataFrame(estimator.transform(chunk), columns=names)
            if passed is not None:
                frame = pd.concat([next(passed).reset_index(drop=True), frame], axis=1)
            writer.write(frame)
        return writer.rows


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
