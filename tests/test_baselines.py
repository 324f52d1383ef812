"""Classical baselines: right densities, in the data's units, with the parameter counts they claim."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from funnelcli.baselines import (
    FittedBaseline,
    fit_baselines,
    full_gaussian,
    gaussian_mixture,
    mixture_parameters,
    ppca,
)
from funnelcli.errors import UserError
from funnelcli.stats import mean_and_stderr

MIXING = np.array([[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 3.0, 10.0]])


def clusters(n: int, seed: int) -> np.ndarray:
    """Three well-separated round clusters in 2-D, in units of hundreds."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [800.0, 0.0], [400.0, 700.0]])
    return centres[rng.integers(0, 3, size=n)] + 60.0 * rng.normal(size=(n, 2))


def near_plane(n: int, seed: int, noise: float = 0.01) -> np.ndarray:
    """Rows of R^6 near a 2-D linear subspace: x = W z + noise, with fixed loadings W."""
    loadings = np.random.default_rng(99).normal(size=(6, 2))
    rng = np.random.default_rng(seed)
    return 5.0 + rng.normal(size=(n, 2)) @ loadings.T + noise * rng.normal(size=(n, 6))


def test_the_full_gaussian_scores_gaussian_data_like_the_true_density():
    truth = multivariate_normal(np.array([4.0, -1.0, 2.0]), MIXING @ MIXING.T)
    train, test = truth.rvs(3000, random_state=1), truth.rvs(3000, random_state=2)
    fitted_mean, _ = mean_and_stderr(full_gaussian(train).score_samples(test))
    true_mean, true_stderr = mean_and_stderr(truth.logpdf(test))
    assert abs(fitted_mean - true_mean) < 3 * true_stderr
    assert fitted_mean < true_mean + 0.01, "a fitted density should not beat the truth on fresh rows by much"


def test_the_full_gaussian_is_scipys_normal_with_the_training_mean_and_covariance():
    train = np.random.default_rng(3).normal(size=(200, 3)) @ MIXING + 4.0
    test = np.random.default_rng(4).normal(size=(30, 3)) * 3
    expected = multivariate_normal(train.mean(axis=0), np.cov(train, rowvar=False)).logpdf(test)
    np.testing.assert_allclose(full_gaussian(train).score_samples(test), expected, rtol=1e-10)


@pytest.mark.parametrize("with_validation", [True, False], ids=["validation", "held-out"])
def test_the_mixture_finds_several_components_in_three_clusters_and_beats_one_gaussian(with_validation):
    train, test = clusters(900, seed=1), clusters(900, seed=2)
    validation = clusters(300, seed=3) if with_validation else None
    mixture = gaussian_mixture(train, validation, seed=0)
    assert mixture.details["components"] > 1
    assert mixture.details["chosen_on"] == ("validation" if with_validation else "held-out training rows")
    assert f"k={mixture.details['components']}" in mixture.label
    gain = mixture.score(test) - full_gaussian(train).score(test)
    assert gain > 1.5, gain
    assert mixture.details["validation_scores"][mixture.details["components"]] == max(
        mixture.details["validation_scores"].values()
    )


def test_the_mixture_ladder_is_capped_by_the_rows_per_component():
    # 60 rows of 2 columns: k components need k * 5 * 3 = 15k rows, so k <= 4 is tried.
    mixture = gaussian_mixture(clusters(60, seed=4), clusters(60, seed=5))
    assert set(mixture.details["validation_scores"]) <= {1, 2, 4}


def test_a_large_table_fits_its_mixtures_on_a_capped_subsample(monkeypatch):
    import funnelcli.baselines as baselines

    sizes, fit = [], baselines.fit_mixture
    monkeypatch.setattr(baselines, "MAX_MIXTURE_ROWS", 300)
    monkeypatch.setattr(baselines, "fit_mixture", lambda k, seed, z: sizes.append(len(z)) or fit(k, seed, z))
    mixture = gaussian_mixture(clusters(900, seed=1), seed=0)
    assert sizes and max(sizes) == 300
    assert mixture.details["components"] > 1


def test_ppca_at_the_subspace_size_is_close_to_the_full_gaussian_and_far_above_one_latent_dimension():
    train, test = near_plane(1500, seed=1), near_plane(1500, seed=2)
    baselines = fit_baselines(train, latent_dims=[1, 2])
    gaussian, two, one = (baselines[name].score(test) for name in ("gaussian", "ppca-2", "ppca-1"))
    assert abs(two - gaussian) < 1.0, (two, gaussian)
    assert one < two - 10.0, (one, two)


def test_ppca_is_the_gaussian_with_top_k_directions_plus_isotropic_noise_in_standardised_units():
    train = near_plane(400, seed=5, noise=0.3)
    test = near_plane(25, seed=6, noise=0.3)
    k = 2
    mean, std = train.mean(axis=0), train.std(axis=0)
    eigenvalues, vectors = np.linalg.eigh(np.cov((train - mean) / std, rowvar=False))
    eigenvalues, vectors = eigenvalues[::-1], vectors[:, ::-1]
    noise = eigenvalues[k:].mean()
    top = vectors[:, :k]
    standardised = top @ np.diag(eigenvalues[:k] - noise) @ top.T + noise * np.eye(6)
    expected = multivariate_normal(mean, np.diag(std) @ standardised @ np.diag(std)).logpdf(test)
    np.testing.assert_allclose(ppca(train, k).score_samples(test), expected, rtol=1e-8)


def test_a_ppca_density_integrates_to_one():
    train = np.random.default_rng(7).normal(size=(500, 2)) @ np.array([[3.0, 0.0], [2.0, 0.5]]) + [10.0, -4.0]
    model = ppca(train, 1)
    mean, std = train.mean(axis=0), train.std(axis=0)
    axes = [np.linspace(m - 12 * s, m + 12 * s, 801) for m, s in zip(mean, std, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    assert np.exp(model.score_samples(grid)).sum() * cell == pytest.approx(1.0, abs=0.01)


def test_scaling_the_data_by_ten_lowers_every_log_likelihood_by_d_log_ten():
    train, validation, test = clusters(600, seed=1), clusters(200, seed=2), clusters(50, seed=3)
    train = np.c_[train, train[:, :1] * 0.3 + np.random.default_rng(4).normal(size=(len(train), 1))]
    validation = np.c_[validation, validation[:, :1] * 0.3]
    test = np.c_[test, test[:, :1] * 0.3 + 1.0]
    original = fit_baselines(train, validation, latent_dims=[1, 2], seed=0)
    scaled = fit_baselines(10 * train, 10 * validation, latent_dims=[1, 2], seed=0)
    assert list(original) == ["gaussian", "gmm", "ppca-1", "ppca-2"]
    for name, baseline in original.items():
        shift = baseline.score_samples(test) - scaled[name].score_samples(10 * test)
        np.testing.assert_allclose(shift, 3 * math.log(10), atol=1e-6, err_msg=name)


def test_parameter_counts_follow_the_stated_formulas():
    d = 5
    train = near_plane(800, seed=8, noise=0.5)[:, :d]
    baselines = fit_baselines(train, latent_dims=[1, 3, 4, 3])
    assert list(baselines) == ["gaussian", "gmm", "ppca-1", "ppca-3", "ppca-4"]
    assert baselines["gaussian"].parameters == d + d * (d + 1) // 2 == 20
    k = baselines["gmm"].details["components"]
    assert baselines["gmm"].parameters == k - 1 + k * (d + d * (d + 1) // 2) == mixture_parameters(k, d)
    for latent in (1, 3, 4):
        assert baselines[f"ppca-{latent}"].parameters == d + d * latent - latent * (latent - 1) // 2 + 1
        assert baselines[f"ppca-{latent}"].latent_dim == latent
    # At K = D - 1, PPCA has as many free parameters as the full Gaussian.
    assert baselines["ppca-4"].parameters == baselines["gaussian"].parameters
    assert baselines["gaussian"].latent_dim is None and baselines["gmm"].latent_dim is None
    assert all(isinstance(b, FittedBaseline) and b.label for b in baselines.values())


@pytest.mark.parametrize("latent", [0, 3, 2.5, True])
def test_ppca_refuses_a_latent_size_outside_one_to_d_minus_one(latent):
    with pytest.raises(UserError, match=r"1\.\.2"):
        ppca(np.random.default_rng(0).normal(size=(50, 3)), latent)


def test_bad_rows_are_refused_with_the_column_named():
    rows = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(UserError, match="constant in column.*index 1"):
        fit_baselines(np.c_[rows[:, :1], np.ones(50), rows[:, 1:]])
    broken = rows.copy()
    broken[4, 2] = np.nan
    with pytest.raises(UserError, match="NaN or infinite.*index 2"):
        full_gaussian(broken)
    with pytest.raises(UserError, match="'c'"):
        full_gaussian(broken, columns=["a", "b", "c"])
    with pytest.raises(UserError, match="validation rows have 2 columns"):
        gaussian_mixture(rows, rows[:, :2])
    with pytest.raises(UserError, match="fitted on 3"):
        full_gaussian(rows).score_samples(rows[:, :2])
    with pytest.raises(UserError, match="singular"):
        full_gaussian(rows[:2])
    assert full_gaussian(rows).score_samples(rows[:0]).shape == (0,)
