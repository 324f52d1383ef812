"""The conditional VAE: encoder q(z | x, c), decoder p(x | z, c), prior N(0, I); its scores stay lower bounds on
log p(x | c), ordered ELBO <= IWAE_K <= log p(x | c), and it uses c."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from funnelcli.estimator import FunnelDensity
from funnelcli.models import build_model
from funnelcli.models.decode import decode
from tests.helpers import perturb, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny models run on one torch thread


def conditional_vae(context: int = 2, dim: int = 2, latent_dim: int = 1):
    recipe = tiny_recipe("vae", latent_dim=latent_dim)
    model = build_model(recipe, np.zeros(dim), np.ones(dim), context_features=context)
    # Gently perturbed: steep decoders would need a finer grid in z than a fast test can afford.
    return perturb(model.double(), scale=0.1).eval()


def exact_log_prob(model, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """log p(x | c) = log of the integral of p(x | z, c) N(z; 0, 1) dz for a one-dimensional z, by the midpoint
    rule on [-8, 8] (2000 cells): the truth the bounds are bounds on."""
    edges = torch.linspace(-8, 8, 2001, dtype=torch.float64)
    z = ((edges[1:] + edges[:-1]) / 2)[:, None, None].expand(-1, x.shape[0], 1)  # (G, N, 1)
    u, log_det = model.scaler(x)
    mean, log_scale = model._likelihood(z, c)
    log_likelihood = (-0.5 * ((u - mean) * torch.exp(-log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(
        -1
    )
    log_prior = -0.5 * z[..., 0] ** 2 - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(log_likelihood + log_prior, dim=0) + math.log(float(edges[1] - edges[0])) + log_det


def test_the_elbo_and_the_iw_bound_lie_below_the_exact_conditional_log_density_in_order():
    model = conditional_vae()
    torch.manual_seed(0)
    x, c = torch.randn(200, 2, dtype=torch.float64), torch.randn(200, 2, dtype=torch.float64)
    with torch.no_grad():
        truth = exact_log_prob(model, x, c).mean()
        elbo = torch.stack([model.iw_log_prob(x, 1, c) for _ in range(8)]).mean()
        iwae = model.iw_log_prob(x, 256, c).mean()
    # Averaged over 200 rows the estimates' noise is far below the gaps the bounds leave. Measured: ELBO -5.03,
    # IWAE_256 -2.935, log p(x | c) -2.933: the IW bound closes in on the truth from below, as it must.
    assert elbo < iwae - 0.5, (float(elbo), float(iwae))
    assert truth - 0.05 < iwae < truth + 0.01, (float(iwae), float(truth))


def test_the_condition_changes_the_bound_and_the_draws():
    model = conditional_vae()
    x = torch.randn(32, 2, dtype=torch.float64)
    zeros, ones = torch.zeros(32, 2, dtype=torch.float64), torch.ones(32, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.manual_seed(1)
        here = model.log_prob(x, zeros)
        torch.manual_seed(1)
        there = model.log_prob(x, ones)
        z = torch.randn(32, 1, dtype=torch.float64)
        assert (here - there).abs().min() > 1e-4
        assert not torch.allclose(decode(model, z, mean=True, context=zeros), decode(model, z, mean=True, context=ones))


def test_an_unconditional_vae_takes_no_context_and_a_conditional_one_needs_its_own():
    plain, conditional = conditional_vae(context=0), conditional_vae(context=2)
    x = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="unconditional"):
        plain.log_prob(x, torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"context of shape \(3, 2\)"):
        conditional.log_prob(x)


# -- the estimator -----------------------------------------------------------------------------------------------


def species_table(n: int, seed: int) -> pd.DataFrame:
    """(x, y) shifted by the species, far apart: a table whose density depends on c."""
    rng = np.random.default_rng(seed)
    species = rng.choice(["adelie", "gentoo", "chinstrap"], size=n)
    offset = pd.Series(species).map({"adelie": -3.0, "gentoo": 0.0, "chinstrap": 3.0}).to_numpy()
    x = offset + 0.5 * rng.normal(size=n)
    return pd.DataFrame({"x": x, "y": 0.5 * x + 0.4 * rng.normal(size=n), "species": species})


@pytest.fixture(scope="module")
def fitted():
    table = species_table(1500, seed=0)
    recipe = tiny_recipe("vae", latent_dim=1)
    settings = {"device": "cpu", "steps": 200, "eval_every": 100}
    conditional = FunnelDensity(recipe, conditional_columns=["species"], **settings).fit(table)
    unconditional = FunnelDensity(recipe, **settings).fit(table[["x", "y"]])
    return conditional, unconditional


def test_a_conditional_vae_bounds_held_out_rows_higher_than_an_unconditional_one(fitted):
    conditional, unconditional = fitted
    test = species_table(600, seed=1)
    assert conditional.is_bound_ and conditional.conditions_.names == ["species"]
    gain = conditional.score(test) - unconditional.score(test[["x", "y"]])
    # log p(x | species) beats log p(x) by the information species carries about x (up to log 3 = 1.1 nats
    # for three equally likely, well-separated species), less what either bound loses.
    assert gain > 0.5, gain


def test_the_iw_bound_of_a_fitted_conditional_vae_is_above_its_elbo_on_average(fitted):
    conditional, _ = fitted
    test = species_table(400, seed=2)
    elbo = conditional.score_samples(test)
    iwae = conditional.score_samples(test, iw_samples=64)
    assert iwae.shape == (400,) and iwae.mean() > elbo.mean()


def test_sampling_a_conditional_vae_follows_the_conditions(fitted):
    conditional, _ = fitted
    conditions = pd.DataFrame({"species": ["adelie"] * 300 + ["chinstrap"] * 300})
    drawn = conditional.sample(conditions=conditions, random_state=0)
    assert list(drawn.columns) == ["species", "x", "y"]
    x = drawn["x"].to_numpy()
    assert x[300:].mean() - x[:300].mean() > 4.0  # the species' centres are 6 apart


def test_a_conditional_vae_saves_and_loads_with_the_same_bounds(fitted, tmp_path):
    conditional, _ = fitted
    table = species_table(50, seed=3)
    loaded = FunnelDensity.load(conditional.save(tmp_path / "model"), device="cpu")
    assert loaded.is_bound_ and loaded.model_.context_features == 3
    np.testing.assert_array_equal(loaded.score_samples(table), conditional.score_samples(table))
    codes = loaded.transform(table)
    back = loaded.inverse_transform(codes, mean=True, conditions=table[["species"]])
    assert back.shape == (50, 2) and np.isfinite(back.to_numpy()).all()
