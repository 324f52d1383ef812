"""The VAE baseline: its scores are lower bounds on the true log-likelihood, tighter with more samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from typer.testing import CliRunner

from funnelcli.cli import app
from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from tests.helpers import manifold_table, tiny_recipe

COVARIANCE = np.array([[1.0, 0.9], [0.9, 1.0]])


def gaussian_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).multivariate_normal([1.0, -2.0], COVARIANCE, size=n)


@pytest.fixture(scope="module")
def vae() -> FunnelDensity:
    return FunnelDensity(tiny_recipe("vae", hidden_features=32), steps=300, device="cpu").fit(gaussian_rows(2000, 0))


def test_the_vae_reports_bounds_not_exact_likelihoods(vae):
    assert vae.is_bound_ and vae.latent_dim_ == 1


def test_elbo_and_importance_weighted_bounds_stay_below_the_true_log_likelihood(vae):
    test = gaussian_rows(3000, 1)
    truth = multivariate_normal([1.0, -2.0], COVARIANCE).logpdf(test).mean()
    for k in (None, 10, 100):
        assert vae.score_samples(test, iw_samples=k).mean() < truth


def test_the_importance_weighted_bound_tightens_as_k_grows(vae):
    test = gaussian_rows(3000, 1)
    elbo = vae.score_samples(test).mean()
    iw10 = vae.score_samples(test, iw_samples=10).mean()
    iw100 = vae.score_samples(test, iw_samples=100).mean()
    assert elbo < iw10 < iw100


def test_bounds_are_reproducible(vae):
    test = gaussian_rows(100, 2)
    np.testing.assert_array_equal(vae.score_samples(test), vae.score_samples(test))


def test_reduce_sets_the_vae_latent_size_as_for_a_funnel():
    estimator = FunnelDensity(tiny_recipe("vae"), reduce=0.25, steps=2, device="cpu").fit(manifold_table(100))
    assert estimator.latent_dim_ == 3


def test_encode_is_the_posterior_mean_and_sample_decodes(vae):
    test = gaussian_rows(50, 3)
    np.testing.assert_array_equal(vae.transform(test), vae.transform(test))
    samples = vae.sample(500, random_state=0)
    assert samples.shape == (500, 2)
    assert abs(np.corrcoef(samples.T)[0, 1] - 0.9) < 0.2


def test_iw_samples_on_an_exact_model_is_refused():
    flow = FunnelDensity(tiny_recipe("nsf"), steps=2, device="cpu").fit(manifold_table(100))
    with pytest.raises(UserError, match="VAE"):
        flow.score_samples(manifold_table(10), iw_samples=5)


def test_score_says_a_vae_figure_is_a_lower_bound(tmp_path, vae):
    vae.save(tmp_path / "vae")
    rows = gaussian_rows(40, 4)
    import pandas as pd

    pd.DataFrame(rows, columns=["x0", "x1"]).to_csv(tmp_path / "test.csv", index=False)
    runner = CliRunner()
    report = json.loads(
        runner.invoke(app, ["score", str(tmp_path / "vae"), str(tmp_path / "test.csv"), "--json"]).stdout
    )
    assert report["bound"] is True and report["bound_kind"] == "ELBO"
    report = json.loads(
        runner.invoke(
            app, ["score", str(tmp_path / "vae"), str(tmp_path / "test.csv"), "--json", "--iw-samples", "20"]
        ).stdout
    )
    assert report["bound"] is True and "K=20" in report["bound_kind"]
    human = runner.invoke(app, ["score", str(tmp_path / "vae"), str(tmp_path / "test.csv")]).stdout
    assert "lower bound" in human
