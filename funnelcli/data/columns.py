"""What a density model needs to know about a table's columns: which are constant, which integer-valued."""

from __future__ import annotations

import numpy as np
import pandas as pd


def constant_columns(frame: pd.DataFrame) -> list[str]:
    """Columns holding a single value (a point mass: no density, and a zero standard deviation)."""
    return [str(name) for name in frame.columns if frame[name].nunique(dropna=True) <= 1]


def integer_columns(frame: pd.DataFrame) -> list[str]:
    """Non-constant numeric columns whose finite values are all whole numbers (counts, codes, flags).

    A continuous density on such a column can put unbounded mass on its values, so the likelihood runs off
    to infinity; dequantization (adding uniform noise in [0, 1)) makes it a proper density problem.
    """
    names = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype.kind in "biu":
            whole = True
        elif values.dtype.kind == "f":
            finite = values[np.isfinite(values)]
            whole = finite.size > 0 and bool(np.all(finite == np.round(finite)))
        else:
            whole = False
        if whole and frame[name].nunique(dropna=True) > 1:
            names.append(str(name))
    return names
