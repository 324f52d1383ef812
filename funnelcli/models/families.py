"""Model families: how a recipe becomes a :class:`FunnelFlow`.

- ``nsf``: a rational-quadratic neural spline flow (Durkan et al. 2019). Each of ``flow_steps`` steps is a
  random permutation, an LU linear map and an RQ coupling (or autoregressive) layer; a final permutation and
  LU map close the flow.
- ``f-nsf``: the same flow whose step ``funnel_level`` has a funnel in place of its spline layer: after the
  step's permutation and LU map the last ``D - latent_dim`` coordinates (a learned linear mix of the inputs)
  are dropped, the rest pass through a spline whose parameters read the dropped ones, and the ansatz models the
  dropped ones given the output. Later steps work in ``latent_dim`` dimensions.

Every model starts with the standardisation of the training data, so log-likelihoods are in the user's units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from nflows.transforms.base import Transform

from funnelcli.models.flow import FunnelFlow
from funnelcli.models.recipe import Recipe, latent_dim
from funnelcli.transforms import (
    ElementwiseRQSpline,
    FlowAnsatz,
    Funnel,
    GaussianAnsatz,
    LULinear,
    RandomPermutation,
    SplineSettings,
    Standardize,
    rq_layer,
)


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[Recipe, np.ndarray, np.ndarray], FunnelFlow]
    has_funnel: bool
    summary: str


def _spline_settings(recipe: Recipe) -> SplineSettings:
    m = recipe.model
    return SplineSettings(
        hidden_features=m.hidden_features,
        residual_blocks=m.residual_blocks,
        bins=m.bins,
        tail_bound=m.tail_bound,
        dropout=m.dropout,
    )


def _mixing(dim: int) -> list[Transform]:
    # In one dimension a permutation is the identity; the 1x1 LU map is still a learned scale and shift.
    return ([RandomPermutation(dim)] if dim > 1 else []) + [LULinear(dim)]


def _funnel(recipe: Recipe, dim: int, keep: int, step: int) -> Funnel:
    m = recipe.model
    settings = _spline_settings(recipe)
    drop = dim - keep
    # f(x_keep; x_drop): elementwise splines driven by x_drop (coupling) or a MADE with x_drop as context.
    if m.transform == "autoregressive":
        f = rq_layer("autoregressive", keep, step, settings, context_features=drop)
    else:
        f = ElementwiseRQSpline(keep, drop, settings)
    if m.ansatz == "gaussian":
        ansatz = GaussianAnsatz(drop, keep, m.ansatz_hidden_features, m.ansatz_layers)
    else:
        ansatz_settings = SplineSettings(
            hidden_features=m.ansatz_hidden_features,
            residual_blocks=m.residual_blocks,
            bins=m.bins,
            tail_bound=m.tail_bound,
            dropout=m.dropout,
        )
        ansatz = FlowAnsatz(drop, keep, m.transform, m.ansatz_flow_steps, ansatz_settings)
    return Funnel(keep, drop, f, ansatz)


def build_spline_flow(recipe: Recipe, mean: np.ndarray, std: np.ndarray) -> FunnelFlow:
    """NSF, or F-NSF when the recipe's family has a funnel. ``mean``/``std``: the training data's, shape (D,)."""
    m = recipe.model
    input_dim = int(np.asarray(mean).shape[0])
    target = latent_dim(input_dim, m.reduce) if recipe.has_funnel else input_dim
    settings = _spline_settings(recipe)
    transforms: list[Transform] = [Standardize(torch.tensor(mean), torch.tensor(std))]
    dim = input_dim
    for step in range(m.flow_steps):
        transforms += _mixing(dim)
        if recipe.has_funnel and step == m.funnel_level:
            transforms.append(_funnel(recipe, dim, target, step))
            dim = target
        else:
            transforms.append(rq_layer(m.transform, dim, step, settings))
    transforms += _mixing(dim)
    return FunnelFlow(transforms, input_dim=input_dim, latent_dim=dim)


FAMILIES: dict[str, Family] = {
    "nsf": Family("nsf", build_spline_flow, False, "rational-quadratic neural spline flow, full dimension"),
    "f-nsf": Family("f-nsf", build_spline_flow, True, "NSF with one step replaced by a funnel (F-NSF)"),
}


def build_model(recipe: Recipe, mean: np.ndarray, std: np.ndarray, *, seed: int | None = None) -> FunnelFlow:
    """The recipe's model for data with the given column means and standard deviations.

    Weights and permutations are drawn from ``seed`` (default: the recipe's) without touching the global RNG.
    """
    family = FAMILIES[recipe.family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.training.seed if seed is None else seed)
        return family.build(recipe, np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64))
