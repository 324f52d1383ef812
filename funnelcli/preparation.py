"""Rows made ready for training: the validation split, dequantization, the scaling statistics and the checks
that the model's float32 arithmetic can hold and resolve them.

:func:`prepare_rows` takes rows already checked as scikit-learn checks them (numeric, finite, float64, the
modelled columns only) and returns a :class:`PreparedRows`, from which :class:`funnelcli.estimator.FunnelDensity`
builds the model (``mean``, ``std``) and trains it (``train``, ``held_out``, ``mask``). Imports no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from funnelcli.data import split_validation
from funnelcli.data.columns import integer_columns
from funnelcli.errors import ConstantColumns, Misused, OutOfRange, Refused, UserError

log = logging.getLogger("funnelcli")

#: What ``dequantize`` may be: ``uniform`` noise on integer-valued columns, or ``none``.
DEQUANTIZE = ("uniform", "none")
#: The bit depths a pixel table may state (``bits``, ``source_bits``): 1 to 16 bits per value.
MAX_BITS = 16


@dataclass(frozen=True, eq=False)
class PreparedRows:
    """The rows a model is fitted to, and what is derived from them. D modelled columns.

    - ``train`` (n_train, D) and ``held_out`` (n_validation, D): float64 frames named by ``columns``, each with a
      fresh RangeIndex. ``train`` is as given (training adds fresh dequantization noise to every batch);
      ``held_out`` has its noise added once, seeded, so that every validation pass scores the same points.
    - ``columns``: the modelled columns, in order; ``dtypes``: each one's dtype in the input (float64 for an
      array's).
    - ``dequantized_columns``: the integer-valued training columns that get uniform noise in [0, 1); ``mask``
      (D,) bool marks them.
    - ``mean``, ``std`` (D,) float64: the model's standardisation, the training rows' mean (plus 0.5 on a
      dequantized column: the mean of its noise) and standard deviation (ddof 0, of the rows without noise).
    - ``train_conditions``, ``held_out_conditions``: for a conditional model, the condition columns of the same
      rows, as given (any dtype, a fresh RangeIndex; not encoded, not dequantized); None otherwise.
    """

    train: pd.DataFrame
    held_out: pd.DataFrame
    columns: tuple[str, ...]
    dtypes: dict[str, str]
    dequantized_columns: tuple[str, ...]
    mask: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    train_conditions: pd.DataFrame | None = None
    held_out_conditions: pd.DataFrame | None = None


def prepare_rows(
    frame: pd.DataFrame,
    validation: pd.DataFrame | None,
    *,
    seed: int,
    val_fraction: float,
    dequantize: str,
    dtypes: Mapping[str, str],
    conditions: pd.DataFrame | None = None,
    held_out_conditions: pd.DataFrame | None = None,
    bits: int | None = None,
) -> PreparedRows:
    """Split, dequantize and measure ``frame`` for training.

    ``frame`` holds the checked rows in the modelled columns (constant ones left out). ``validation`` holds rows
    in the same columns, or is None for a seeded (``seed``) ``val_fraction`` of ``frame``. ``dequantize`` is
    ``uniform`` (integer-valued columns get noise in [0, 1), seeded ``seed`` on the held-out rows, and a warning
    names them) or ``none``. ``dtypes`` maps the input's column names to their dtypes (empty for an array).
    ``conditions`` (a conditional model's condition columns, row for row with ``frame``) are split as ``frame``
    is; ``held_out_conditions`` go with ``validation``.

    ``bits``: the rows are pixels, whole numbers in [0, 2^bits) (:func:`pixel_values`): every column is
    dequantized (a pixel that is constant in the training rows too: its density is then U[c, c + 1)), and ``std``
    is that of x + u, sqrt(var(x) + 1/12), so that no pixel column is refused as constant.

    Raises :class:`UserError` when fewer than 2 rows are left to train on, when a column is constant in the
    training rows, or when a column holds values float32 cannot hold or varies too little for it to resolve.
    """
    columns = tuple(str(c) for c in frame.columns)
    train, held_out = split_rows(frame, validation, val_fraction, seed)
    train_conditions = None
    if conditions is not None:
        # The same split: split_validation draws its permutation from the row count and the seed alone.
        given = None if validation is None else held_out_conditions.reset_index(drop=True)
        train_conditions, held_out_conditions = split_rows(conditions.reset_index(drop=True), given, val_fraction, seed)
    if len(train) < 2:
        raise Refused(
            f"the table has {len(frame)} rows and {len(held_out)} of them are held out for validation, which "
            f"leaves {len(train)} to train on",
            "give at least 3 rows, or pass {validation=FILE}",
        )
    integers = tuple(integer_columns(train)) if dequantize == "uniform" else ()
    dequantized = columns if bits is not None else integers  # every pixel is dequantized
    if dequantized and bits is None:
        log.warning(
            "integer-valued column(s) %s: adding uniform noise in [0, 1) (dequantization); scores are densities "
            "of the dequantized data, a lower bound on the integers' log-probability (--dequantize none: off)",
            ", ".join(repr(c) for c in dequantized),
        )
    mask = np.isin(columns, dequantized)
    held_out = held_out + mask * np.random.default_rng(seed).random(held_out.shape)
    mean = train.mean().to_numpy() + 0.5 * mask  # the dequantized column's mean
    std = train.std(ddof=0).to_numpy()
    if bits is not None:
        std = np.sqrt(std**2 + 1.0 / 12.0)  # the spread of x + u, u ~ U[0, 1): a constant pixel has density too
    _check_spread(columns, std)
    _check_float32(columns, train, held_out, mean, std)
    return PreparedRows(
        train=train,
        held_out=held_out,
        columns=columns,
        dtypes=modelled_dtypes(dtypes, columns),
        dequantized_columns=dequantized,
        mask=mask,
        mean=mean,
        std=std,
        train_conditions=train_conditions,
        held_out_conditions=held_out_conditions if conditions is not None else None,
    )


def check_bits(bits, source_bits) -> None:
    """Refuse a bit depth outside 1..16, a ``source_bits`` without ``bits``, and a reduction to more bits."""
    for name, value in (("bits", bits), ("source_bits", source_bits)):
        if value is not None and not (
            isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 1 <= value <= MAX_BITS
        ):
            raise OutOfRange(name, value, f"a whole number of bits in 1..{MAX_BITS}")
    if source_bits is not None and bits is None:
        raise Misused(["source_bits"], "needs {bits}, the depth to reduce the pixels to")
    if source_bits is not None and source_bits < bits:
        raise Misused(
            ["source_bits"],
            f"is {source_bits} and {{bits}} {bits}: the n-bit reduction keeps the top bits, so {{bits}} must not "
            "exceed {source_bits}",
        )


def pixel_values(frame: pd.DataFrame, bits: int, source_bits: int | None = None, what: str = "X") -> pd.DataFrame:
    """``frame``'s pixels at ``bits`` bits: whole numbers in [0, 2^bits), float64.

    With ``source_bits`` = m the given pixels are m-bit (whole numbers in [0, 2^m)) and are reduced to n = ``bits``
    bits as the Glow and funnel papers reduce 8-bit images to 5: x_n = floor(x_m / 2^(m - n)), which keeps the top
    n bits. Without it the pixels must already be n-bit. Shapes: (N, D) in, (N, D) out.

    Raises :class:`UserError` naming the first value that is not such a pixel (its column and row).
    """
    depth = bits if source_bits is None else source_bits
    values = frame.to_numpy(dtype=np.float64)
    bad = (values != np.floor(values)) | (values < 0) | (values >= 2**depth)
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        flag = "source_bits" if source_bits is not None else "bits"
        raise Refused(
            f"{what} column {frame.columns[column]!r} holds {values[row, column]:g} at row {row + 1}, which is not a "
            f"pixel of {depth} bits (a whole number in 0..{2**depth - 1}); {int(bad.sum()):,} value(s) are not",
            f"state the data's depth with {{{flag}}}",
        )
    if source_bits is not None:
        values = np.floor(values / 2 ** (source_bits - bits))
    return pd.DataFrame(values, columns=frame.columns, index=frame.index)


def split_rows(
    frame: pd.DataFrame, validation: pd.DataFrame | None, val_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows): all of ``frame`` and ``validation`` when it is given, else a seeded
    split of ``frame`` with ``val_fraction`` of its rows held out (:func:`funnelcli.data.split_validation`)."""
    if validation is None:
        return split_validation(frame, val_fraction, seed)
    return frame, validation


def input_dtypes(X) -> dict[str, str]:
    """The input's dtypes by column name: a DataFrame's own, none for an array."""
    if isinstance(X, pd.DataFrame):
        return {str(c): str(t) for c, t in X.dtypes.items()}
    return {}


def modelled_dtypes(dtypes: Mapping[str, str], columns: Sequence[str]) -> dict[str, str]:
    """Each of ``columns``' dtype in the input (``dtypes`` from :func:`input_dtypes`), float64 where it has none:
    what the model folder records."""
    return {name: dtypes.get(name, "float64") for name in columns}


def _check_spread(columns: Sequence[str], std: np.ndarray) -> None:
    if not np.all(std > 0):
        constant = [name for name, s in zip(columns, std, strict=True) if not s > 0]
        raise ConstantColumns(constant, "in the training rows")


def _check_float32(
    columns: Sequence[str], train: pd.DataFrame, held_out: pd.DataFrame, mean: np.ndarray, std: np.ndarray
) -> None:
    # The model computes in float32: refuse what float32 cannot hold or resolve rather than train on NaN.
    f32 = np.finfo(np.float32)
    largest = np.maximum(np.abs(train.to_numpy()).max(axis=0), np.abs(held_out.to_numpy()).max(axis=0))
    for bad, problem, way_out in (
        (
            largest >= f32.max,
            "hold values beyond float32's range (3.4e38), in which the model computes",
            "rescale them",
        ),
        (
            (largest < f32.max) & (std < np.maximum(f32.tiny, 10 * f32.eps * np.abs(mean))),
            "vary too little around their mean for the model's float32 arithmetic to resolve",
            "subtract an offset from them or rescale them",
        ),
    ):
        if bad.any():
            names = ", ".join(repr(c) for c, b in zip(columns, bad, strict=True) if b)
            raise UserError(f"column(s) {names} {problem}; {way_out}")
