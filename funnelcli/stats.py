"""Summary statistics reported with every likelihood."""

from __future__ import annotations

import math

import numpy as np


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """The mean of ``values`` and its standard error, std (ddof 1) / sqrt(n); 0 for a single value."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values to summarise")
    if values.size == 1:
        return float(values[0]), 0.0
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def gaussian_log_prob(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """log N(x; mean, cov) per row of ``test``, with the mean and full covariance (ddof 1) of ``train``.

    The baseline every density model should beat. Computed on standardised columns for conditioning and
    converted back to the data's units, like the models' own scores (:func:`funnelcli.baselines.full_gaussian`).
    """
    from funnelcli.baselines import full_gaussian

    return full_gaussian(train).score_samples(test)
