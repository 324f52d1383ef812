"""Summary statistics against independent computations."""

from __future__ import annotations

import numpy as np
from scipy.stats import multivariate_normal, sem

from funnelcli.stats import gaussian_log_prob, mean_and_stderr


def test_standard_error_is_scipys():
    values = np.random.default_rng(0).normal(size=101)
    mean, stderr = mean_and_stderr(values)
    assert mean == values.mean()
    np.testing.assert_allclose(stderr, sem(values))


def test_standard_error_of_one_value_is_zero():
    assert mean_and_stderr(np.array([3.0])) == (3.0, 0.0)


def test_gaussian_baseline_is_the_fitted_multivariate_normal_in_the_data_units():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(300, 3)) @ np.array([[2.0, 0, 0], [1.0, 0.5, 0], [0, 3.0, 10.0]]) + 4.0
    test = rng.normal(size=(20, 3)) * 2
    expected = multivariate_normal(train.mean(axis=0), np.cov(train, rowvar=False)).logpdf(test)
    np.testing.assert_allclose(gaussian_log_prob(train, test), expected, rtol=1e-10)
