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
    converted back to the data's units, like the models' own scores.
    """
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    z_train, z_test = (train - mean) / std, (test - mean) / std
    cov = np.atleast_2d(np.cov(z_train, rowvar=False))
    cholesky = np.linalg.cholesky(cov)
    solved = np.linalg.solve(cholesky, (z_test - z_train.mean(axis=0)).T)
    log_det = 2 * np.log(np.diag(cholesky)).sum()
    dim = train.shape[1]
    return -0.5 * (solved**2).sum(axis=0) - 0.5 * (log_det + dim * math.log(2 * math.pi)) - np.log(std).sum()
