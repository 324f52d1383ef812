"""training.start = "gaussian": a spline flow starts as the full-covariance Gaussian of its training rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.models import Recipe
from funnelcli.models.families import build_model
from funnelcli.models.start import RIDGE, gaussian_start
from tests.helpers import assert_funnel, manifold_table, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(n: int = 500, dim: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim))
    return rng.normal(size=(n, dim)) @ mixing.T * rng.uniform(0.1, 10, size=dim) + rng.normal(size=dim) * 5


def _gaussian_log_density(x: np.ndarray) -> np.ndarray:
    mean, std = x.mean(0), x.std(0)
    covariance = (np.cov(((x - mean) / std).T, bias=True) + RIDGE * np.eye(x.shape[1])) * np.outer(std, std)
    return multivariate_normal(mean, covariance).logpdf(x)


def _started(recipe: Recipe, x: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(recipe, x.mean(0), x.std(0)).double()
    assert gaussian_start(model, torch.tensor(x))
    return model


@pytest.mark.parametrize(
    "recipe",
    [
        tiny_recipe("nsf"),
        tiny_recipe("nsf", transform="autoregressive"),
        tiny_recipe("f-nsf"),
        tiny_recipe("f-nsf", ansatz="gaussian"),
        tiny_recipe("f-nsf", transform="autoregressive", reduce=0.75),
        tiny_recipe("f-nsf", ansatz_spline=True, ansatz_lu=True),
    ],
    ids=["nsf", "nsf-ar", "f-nsf", "f-nsf-gaussian-ansatz", "f-nsf-ar", "f-nsf-splined-ansatz"],
)
def test_a_started_spline_flow_is_the_gaussian_fit_of_its_rows(recipe):
    x = _rows()
    model = _started(recipe, x)
    with torch.no_grad():
        log_p = model.log_prob(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(log_p, _gaussian_log_density(x), atol=1e-6)


def test_a_started_funnel_is_still_an_exact_funnel():
    x = _rows(dim=4)
    model = _started(tiny_recipe("f-nsf"), x)
    funnel = next(layer for layer in model.transform._transforms if type(layer).__name__ == "Funnel")
    assert_funnel(funnel, torch.randn(64, 4, dtype=torch.float64))


def test_rows_on_a_plane_still_give_a_finite_start():
    x = _rows(dim=3)
    x = np.column_stack([x, x[:, 0] + x[:, 1]])  # the fourth column is exactly the sum of two others
    model = _started(tiny_recipe("nsf"), x)
    with torch.no_grad():
        assert torch.isfinite(model.log_prob(torch.as_tensor(x))).all()


def test_training_scores_the_gaussian_start_at_step_zero():
    estimator = FunnelDensity(tiny_recipe("f-nsf"), start="gaussian", steps=20, eval_every=10, device="cpu")
    estimator.fit(manifold_table(300))
    first = estimator.history_[0]
    assert first["step"] == 0
    assert np.isnan(first["train_log_prob"])


def test_a_gaussian_start_never_ends_below_the_gaussian_on_the_validation_rows():
    table = manifold_table(200)
    train, validation = table.iloc[:30], table.iloc[30:]
    # A large learning rate on 30 rows overfits at once: only the start can hold the validation score.
    estimator = FunnelDensity(
        tiny_recipe("nsf"), start="gaussian", lr=0.05, steps=40, eval_every=20, device="cpu", dequantize="none"
    )
    estimator.fit(train, validation=validation)
    started = _started(tiny_recipe("nsf"), train.to_numpy())
    with torch.no_grad():
        gaussian = started.log_prob(torch.tensor(validation.to_numpy())).mean().item()
    assert estimator.score_samples(validation).mean() >= gaussian - 1e-3


def test_the_start_is_kept_in_the_recipe_and_the_default_is_not_written():
    assert tiny_recipe("nsf").training.start == "random"
    assert "start" not in tiny_recipe("nsf").to_dict()["training"]
    started = tiny_recipe("nsf").with_overrides(start="gaussian")
    assert Recipe.from_dict(started.to_dict()).training.start == "gaussian"


@pytest.mark.parametrize("family", ["glow", "f-glow", "f-mlp", "vae"])
def test_families_that_cannot_start_as_the_gaussian_say_so(family):
    x = _rows()
    model = build_model(tiny_recipe(family), x.mean(0), x.std(0))
    assert not gaussian_start(model, torch.tensor(x, dtype=torch.float32))


def _overfitting_run(**settings) -> tuple[FunnelDensity, float]:
    """A tiny NSF that overfits 30 rows at once, and the validation score of their Gaussian fit."""
    table = manifold_table(200)
    train, validation = table.iloc[:30], table.iloc[30:]
    settings = {"lr": 0.05, "steps": 40, "eval_every": 20, "device": "cpu", "dequantize": "none", **settings}
    estimator = FunnelDensity(tiny_recipe("nsf"), **settings)
    estimator.fit(train, validation=validation)
    started = _started(tiny_recipe("nsf"), train.to_numpy())
    with torch.no_grad():
        gaussian = started.log_prob(torch.tensor(validation.to_numpy())).mean().item()
    return estimator, gaussian


def test_the_gaussian_fallback_is_kept_when_training_never_beats_it():
    estimator, gaussian = _overfitting_run()
    assert estimator.summary_["best_step"] == 0
    assert estimator.summary_["best_val_log_prob"] == pytest.approx(gaussian, abs=1e-4)
    assert [h["step"] for h in estimator.history_] == [20, 40]  # the fallback is not a point of the curve


def test_without_the_fallback_the_overfitted_weights_are_kept():
    estimator, gaussian = _overfitting_run(fallback="none")
    assert estimator.summary_["best_step"] > 0
    assert estimator.summary_["best_val_log_prob"] < gaussian


def test_the_fallback_does_not_use_up_patience():
    # Every pass is below the fallback; with patience 2 training still runs its passes until two show no gain.
    estimator, _ = _overfitting_run(patience=2, steps=100)
    assert estimator.summary_["steps"] > 40


def test_keeping_the_fallback_is_said_in_a_warning(caplog):
    with caplog.at_level("WARNING", logger="funnelcli"):
        _overfitting_run()
    assert any("the model is that Gaussian" in record.getMessage() for record in caplog.records)


def test_a_gaussian_start_is_refused_for_a_family_that_cannot_take_it():
    estimator = FunnelDensity(tiny_recipe("glow"), start="gaussian", steps=5, device="cpu")
    with pytest.raises(UserError, match="needs a spline flow"):
        estimator.fit(manifold_table(100))
