"""model.base = "mixture": a flow whose latent distribution is a Gaussian mixture, started and fallen back on from
the data."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from funnelcli.errors import UserError
from funnelcli.estimator import FunnelDensity
from funnelcli.models import Recipe
from funnelcli.models.base import GaussianMixture
from funnelcli.models.families import build_model, estimate_size
from funnelcli.models.start import fit_base, gaussian_start, mixture_fallback
from tests.helpers import perturb, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


CENTRES, SPREAD = np.array([[0.0, 0.0, 0.0], [6.0, 1.0, -2.0], [-3.0, 5.0, 4.0]]), np.array([0.3, 0.6, 0.2])


def _blobs(n: int = 1200, seed: int = 0) -> np.ndarray:
    """Three tight, well separated clusters in 3 columns: what one Gaussian models badly and a mixture well."""
    rng = np.random.default_rng(seed)
    return CENTRES[rng.integers(0, 3, n)] + rng.normal(size=(n, 3)) * SPREAD


def _blobs_log_density(x: np.ndarray) -> np.ndarray:
    return logsumexp([multivariate_normal(c, np.diag(SPREAD**2)).logpdf(x) for c in CENTRES], axis=0) - np.log(3)


def _mixture(features: int = 3, components: int = 4, seed: int = 0) -> GaussianMixture:
    mixture = perturb(GaussianMixture(features, components).double(), scale=0.8, seed=seed)
    with torch.no_grad():
        mixture.means.mul_(3)
    return mixture


def test_the_mixture_density_is_the_weighted_sum_of_its_gaussians():
    mixture = _mixture()
    z = torch.randn(50, 3, dtype=torch.float64)
    weights = torch.softmax(mixture.logits, 0).detach().numpy()
    scale = mixture.scale_tril().detach().numpy()
    expected = logsumexp(
        [
            np.log(w) + multivariate_normal(m, s @ s.T).logpdf(z.numpy())
            for w, m, s in zip(weights, mixture.means.detach().numpy(), scale, strict=True)
        ],
        axis=0,
    )
    np.testing.assert_allclose(mixture.log_prob(z).detach().numpy(), expected, atol=1e-9)


def test_mixture_draws_follow_the_mixture():
    torch.manual_seed(0)
    mixture = _mixture(features=2, components=2)
    draws = mixture.sample(200_000, 1.0, like=mixture.means).detach()
    weights = torch.softmax(mixture.logits, 0).detach()
    scale = mixture.scale_tril().detach()
    mean = (weights[:, None] * mixture.means.detach()).sum(0)
    second = (
        weights[:, None, None] * (scale @ scale.transpose(1, 2) + mixture.means[:, :, None] * mixture.means[:, None, :])
    ).sum(0)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), second.detach() - mean[:, None] * mean[None], atol=0.1, rtol=0.02)


def test_setting_fewer_components_than_the_base_has_keeps_their_density():
    mixture = GaussianMixture(2, 5).double()
    weights, means = np.array([0.3, 0.7]), np.array([[0.0, 1.0], [2.0, -1.0]])
    covariances = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.2, 0.0], [0.0, 2.0]]])
    mixture.set_(weights, means, covariances)
    z = np.random.default_rng(0).normal(size=(20, 2))
    expected = np.log(
        sum(w * multivariate_normal(m, c).pdf(z) for w, m, c in zip(weights, means, covariances, strict=True))
    )
    np.testing.assert_allclose(mixture.log_prob(torch.as_tensor(z)).detach().numpy(), expected, atol=1e-9)


def test_a_standard_normal_mixture_is_the_standard_normal():
    mixture = _mixture()
    mixture.set_standard_normal_()
    z = torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(mixture.log_prob(z), torch.as_tensor(multivariate_normal(np.zeros(3)).logpdf(z.numpy())))


def test_the_mixture_base_is_counted_before_it_is_built():
    for family in ("nsf", "f-nsf", "glow", "f-glow", "f-mlp"):
        recipe = tiny_recipe(family, base="mixture", base_components=5)
        model = build_model(recipe, np.zeros(6), np.ones(6))
        assert estimate_size(recipe, 6).parameters == sum(p.numel() for p in model.parameters()), family


def test_the_vae_has_no_base_to_change():
    with pytest.raises(UserError, match="base"):
        tiny_recipe("vae", base="mixture")


def test_a_recipe_with_the_standard_normal_base_writes_no_base_fields():
    assert "base" not in tiny_recipe("nsf").to_dict()["model"]
    recipe = tiny_recipe("nsf", base="mixture", base_components=4)
    assert Recipe.from_dict(recipe.to_dict()).model.base_components == 4


def _started(recipe: Recipe, x: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(recipe, x.mean(0), x.std(0)).double()
    assert gaussian_start(model, torch.tensor(x))
    return model


@pytest.mark.parametrize("family", ["nsf", "f-nsf"])
def test_the_mixture_fallback_beats_the_gaussian_start_on_clustered_rows(family):
    x, held_out = _blobs(), _blobs(400, seed=1)
    size = {"reduce": 0.34} if family == "f-nsf" else {}
    model = _started(tiny_recipe(family, base="mixture", base_components=4, **size), x)
    with torch.no_grad():
        gaussian = model.log_prob(torch.as_tensor(held_out)).mean()
        mixture_fallback(model, torch.as_tensor(x), torch.as_tensor(held_out), seed=0)
        mixture = model.log_prob(torch.as_tensor(held_out)).mean()
    assert mixture > gaussian + 2.0, (float(mixture), float(gaussian))


def test_the_nsf_mixture_fallback_is_the_data_s_gaussian_mixture():
    # At the Gaussian start the flow is a linear map, so its density is a Gaussian mixture of x with the base's
    # weights and the mapped means and covariances: check against scipy's, built from the base.
    x = _blobs()
    model = _started(tiny_recipe("nsf", base="mixture", base_components=4), x)
    mixture_fallback(model, torch.as_tensor(x), torch.as_tensor(_blobs(300, seed=2)), seed=0)
    with torch.no_grad():
        codes = model.encode(torch.as_tensor(x))
        log_det = model.log_prob(torch.as_tensor(x)) - model.base.log_prob(codes)
    assert torch.allclose(log_det, log_det[0].expand_as(log_det), atol=1e-9)  # a linear map: one log-determinant
    assert torch.softmax(model.base.logits, 0).max() < 0.6  # the three clusters got components of their own


def test_a_mixture_base_starts_on_the_codes_of_the_rows():
    x = _blobs()
    model = build_model(tiny_recipe("nsf", base="mixture", base_components=3), x.mean(0), x.std(0)).double()
    rows = torch.as_tensor(x)
    with torch.no_grad():
        before = model.log_prob(rows).mean()
        fit_base(model, rows, seed=0)
        after = model.log_prob(rows).mean()
    assert after > before + 2.0


def test_a_flow_with_a_mixture_base_saves_and_loads_its_scores(tmp_path):
    x = _blobs(600)
    recipe = tiny_recipe("f-nsf", base="mixture", base_components=3)
    estimator = FunnelDensity(recipe, steps=40, device="cpu").fit(x)
    loaded = FunnelDensity.load(estimator.save(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.score_samples(x[:50]), estimator.score_samples(x[:50]))


def test_on_clusters_a_flow_with_a_mixture_base_comes_near_the_truth_and_one_without_does_not():
    x, test = _blobs(), _blobs(400, seed=3)
    truth = _blobs_log_density(test).mean()
    scores = {
        base: FunnelDensity(tiny_recipe("nsf", base=base, base_components=4), steps=150, device="cpu", fallback="none")
        .fit(x)
        .score(test)
        for base in ("normal", "mixture")
    }
    assert scores["mixture"] > truth - 0.1 > scores["normal"], (scores, truth)


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_an_untrained_mixture_base_flow_falls_back_to_the_data_s_mixture():
    x, test = _blobs(), _blobs(400, seed=4)
    recipe = tiny_recipe("nsf", base="mixture", base_components=4)
    # A handler on funnelcli's own logger: the commands' logging set-up may stop it propagating to caplog's
    # (and may have set its level higher, e.g. for --quiet), so the test sets both for the fit.
    messages, logger = _Messages(), logging.getLogger("funnelcli")
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(messages)
    try:
        estimator = FunnelDensity(recipe, steps=1, eval_every=1, lr=1e-9, device="cpu").fit(x)
    finally:
        logger.removeHandler(messages)
        logger.setLevel(level)
    assert estimator.summary_["best_step"] == 0
    assert any("Gaussian mixture fit" in line for line in messages.lines)
    assert estimator.score(test) > _blobs_log_density(test).mean() - 0.1
