"""What a density model needs to know about a table's columns: which are constant, which integer-valued."""

from __future__ import annotations

import numpy as np
import pandas as pd


def constant_columns(frame: pd.DataFrame) -> list[str]:
    """Columns holding a single value (a point mass: no density, and a zero standard deviation)."""
    return [str(name) for name in frame.columns if frame[name].nunique(dropna=True) <= 1]


#: The largest magnitude an integer-valued column may reach: 2**24 = 16,777,216. The model computes, and adds the
#: dequantization noise, in float32, whose spacing reaches 1 there: beyond it float32 cannot even tell
#: neighbouring integers apart, so noise in [0, 1) would be rounded away.
INTEGER_LIMIT = 2**24


def integer_columns(frame: pd.DataFrame) -> list[str]:
    """Non-constant numeric columns whose finite values are all whole numbers of moderate size (counts, codes,
    flags): every finite value is a whole number and lies within [-2**24, 2**24] (:data:`INTEGER_LIMIT`).

    A continuous density on such a column can put unbounded mass on its values, so the likelihood runs off
    to infinity; dequantization (adding uniform noise in [0, 1)) makes it a proper density problem. Whole
    numbers beyond 2**24 are not counted: float32, in which the model computes, is too coarse there for the
    noise to mean anything, and such values are usually measurements that happen to be whole (every float64
    beyond 2**53 is whole: a column at 1e30 is not a count).
    """
    names = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype.kind in "biu":
            finite = values
        elif values.dtype.kind == "f":
            finite = values[np.isfinite(values)]
        else:
            continue
        # min/max, not abs: abs of int64's most negative value overflows
        whole = (
            finite.size > 0
            and finite.min() >= -INTEGER_LIMIT
            and finite.max() <= INTEGER_LIMIT
            and (values.dtype.kind != "f" or bool(np.all(finite == np.round(finite))))
        )
        if whole and frame[name].nunique(dropna=True) > 1:
            names.append(str(name))
    return names
