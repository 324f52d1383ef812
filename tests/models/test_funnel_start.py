"""training.start = "principal": each funnel starts keeping the top principal components of the rows reaching it;
"surface": the directions over which those rows are most nearly a function graph, searched from those components."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from funnelcli.errors import Refused
from funnelcli.estimator import FunnelDensity
from funnelcli.models.families import build_model
from funnelcli.models.funnel_start import principal_start, surface_start
from funnelcli.transforms.funnel import Funnel
from funnelcli.transforms.linear import LULinear
from tests.helpers import manifold_table, tiny_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(n: int = 800, dim: int = 6, seed: int = 0) -> np.ndarray:
    """Rows whose principal components have clearly separated variances, in rotated and scaled columns."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    spread = np.geomspace(4.0, 0.1, dim)
    return (rng.normal(size=(n, dim)) * spread) @ rotation.T * rng.uniform(0.5, 5, size=dim) + 3.0


def _started(
    x: np.ndarray, funnel_level: int, latent: int = 2, family: str = "f-nsf", start=principal_start
) -> torch.nn.Module:
    torch.manual_seed(0)
    recipe = tiny_recipe(family, funnel_level=funnel_level, latent_dim=latent, ansatz="gaussian")
    model = build_model(recipe, x.mean(0), x.std(0)).double()
    assert start(model, torch.tensor(x)) == 1
    return model


def _into_funnel(model: torch.nn.Module, x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows reaching the permutation before the funnel, and the funnel's inputs."""
    u = torch.tensor(x)
    layers = list(model.transform._transforms)
    at = next(i for i, layer in enumerate(layers) if isinstance(layer, Funnel))
    with torch.no_grad():
        for layer in layers[: at - 2]:
            u, _ = layer(u)
        reaching = u
        for layer in layers[at - 2 : at]:
            u, _ = layer(u)
    assert isinstance(layers[at - 1], LULinear)
    return reaching, u


@pytest.mark.parametrize(("family", "funnel_level"), [("f-nsf", 0), ("f-nsf", 1), ("f-glow", 1)])
def test_the_kept_outputs_span_the_top_principal_components_of_the_rows_reaching_the_funnel(family, funnel_level):
    x = _rows()
    model = _started(x, funnel_level, family=family)
    reaching, inputs = _into_funnel(model, x)
    centred = reaching - reaching.mean(0)
    _, vectors = torch.linalg.eigh(centred.T @ centred / len(x))
    top = vectors[:, -2:]
    # The kept outputs are linear in the rows reaching the funnel: their least-squares coefficients span the
    # top two components exactly when nothing of them is left outside that span.
    kept = inputs[:, :2] - inputs[:, :2].mean(0)
    coefficients = torch.linalg.lstsq(centred, kept).solution
    outside = coefficients - top @ (top.T @ coefficients)
    assert outside.abs().max() < 1e-8 * coefficients.abs().max()


def test_the_dropped_outputs_start_centred_and_uncorrelated_with_the_kept_ones():
    x = _rows()
    _, inputs = _into_funnel(_started(x, funnel_level=0), x)
    centred = inputs - inputs.mean(0)
    covariance = centred.T @ centred / len(x)
    assert torch.allclose(covariance[:2, 2:], torch.zeros(2, 4, dtype=covariance.dtype), atol=1e-8)
    assert inputs.mean(0).abs().max() < 1e-8


def test_the_started_layers_before_the_funnel_invert_exactly():
    x = _rows()
    model = _started(x, funnel_level=0)
    layers = list(model.transform._transforms)
    at = next(i for i, layer in enumerate(layers) if isinstance(layer, Funnel))
    u = torch.tensor(x)
    with torch.no_grad():
        u, _ = layers[0](u)
        y, logabsdet = layers[at - 1](layers[at - 2](u)[0])
        back, inverse_logabsdet = layers[at - 1].inverse(y)
        back, _ = layers[at - 2].inverse(back)
    assert torch.allclose(back, u, atol=1e-9)
    assert torch.allclose(logabsdet, -inverse_logabsdet, atol=1e-9)


def test_a_recipe_with_start_principal_trains_and_scores_finite():
    table = manifold_table(400)
    estimator = FunnelDensity(tiny_recipe("f-nsf"), start="principal", steps=20, eval_every=10, device="cpu")
    scores = estimator.fit(table).score_samples(table)
    assert np.isfinite(scores).all()
    assert estimator.recipe_.training.start == "principal"


def test_a_principal_start_is_refused_in_one_line_for_a_model_without_a_funnel():
    estimator = FunnelDensity(tiny_recipe("nsf"), start="principal", steps=5, device="cpu")
    with pytest.raises(Refused, match="needs a funnel behind an LU map"):
        estimator.fit(manifold_table(200))


# -- the surface start -------------------------------------------------------------------------------------------------


def _folded(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows near a curve, and its coordinate u: column a is u, and columns b and c both u^2 - 1 within 0.05.
    Their top principal component is b + c, which folds the curve (u and -u land together); a keeps it whole."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n)
    bend = u**2 - 1
    return np.stack([u, bend + 0.05 * rng.normal(size=n), bend + 0.05 * rng.normal(size=n)], axis=1), u


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(abs(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1]))


def test_where_the_principal_component_folds_a_curve_the_surface_start_keeps_a_direction_along_it():
    x, u = _folded()
    kept = {}
    for name, start in (("principal", principal_start), ("surface", surface_start)):
        _, inputs = _into_funnel(_started(x, funnel_level=0, latent=1, start=start), x)
        kept[name] = _rank_correlation(inputs[:, 0].numpy(), u)
    # Kept = a monotone function of u: the dropped columns follow from it. Folded: they do not.
    assert kept["surface"] > 0.99 and kept["principal"] < 0.3, kept


def test_a_recipe_with_start_surface_trains_and_scores_finite():
    table = manifold_table(400)
    estimator = FunnelDensity(tiny_recipe("f-nsf"), start="surface", steps=20, eval_every=10, device="cpu")
    scores = estimator.fit(table).score_samples(table)
    assert np.isfinite(scores).all() and estimator.recipe_.training.start == "surface"
