"""Model families: how a recipe becomes a model.

- ``nsf``: a rational-quadratic neural spline flow (Durkan et al. 2019). Each of ``flow_steps`` steps is a
  random permutation, an LU linear map and an RQ coupling (or autoregressive) layer; a final permutation and
  LU map close the flow.
- ``f-nsf``: the same flow whose step ``funnel_level`` is a funnel. With ``funnel_kind = "spline"`` the step's
  permutation and LU map come first, the last ``D - latent_dim`` coordinates (a learned linear mix of the
  inputs) are dropped, the rest pass through splines whose parameters read the dropped ones, and the ansatz
  models the dropped ones given the output. ``conv`` and ``conv-stride1`` put a convolutional funnel there
  instead, on the features in their order. Later steps work in the smaller space.
- ``glow``: steps of ActNorm, an LU linear map and an affine coupling (Kingma and Dhariwal 2018);
  ``f-glow``: the same with an affine funnel at ``funnel_level``.
- ``f-mlp``: the paper's MLP funnel model: layers y = s(W x + b) after fixed permutations, some preserving
  the dimension and some reducing it (``mlp_layout``).
- ``vae``: the VAE baseline; ``reduce`` sets its latent size as it sets a funnel's.

Every model starts with the standardisation of the training data, so log-likelihoods are in the user's units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from nflows.transforms.base import Transform
from torch import nn

from funnelcli.models.flow import FunnelFlow
from funnelcli.models.recipe import Recipe, latent_dim
from funnelcli.models.vae import VAE
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
from funnelcli.transforms.affine import ActNorm, ElementwiseAffine, affine_coupling
from funnelcli.transforms.conv import conv_funnel, conv_latent_dim, conv_stride1_funnel
from funnelcli.transforms.mlp import mlp_funnel, mlp_layer


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[Recipe, Standardize], nn.Module]
    summary: str


def _spline_settings(recipe: Recipe, hidden_features: int | None = None) -> SplineSettings:
    m = recipe.model
    return SplineSettings(
        hidden_features=hidden_features or m.hidden_features,
        residual_blocks=m.residual_blocks,
        bins=m.bins,
        tail_bound=m.tail_bound,
        dropout=m.dropout,
    )


def _mixing(dim: int) -> list[Transform]:
    # In one dimension a permutation is the identity; the 1x1 LU map is still a learned scale and shift.
    return ([RandomPermutation(dim)] if dim > 1 else []) + [LULinear(dim)]


def _ansatz(recipe: Recipe, drop: int, keep: int, kind: str = "coupling") -> nn.Module:
    """q(x_drop | z) as the recipe asks: a Gaussian MLP, or a conditional spline flow."""
    m = recipe.model
    if m.ansatz == "gaussian":
        return GaussianAnsatz(drop, keep, m.ansatz_hidden_features, m.ansatz_layers)
    return FlowAnsatz(drop, keep, kind, m.ansatz_flow_steps, _spline_settings(recipe, m.ansatz_hidden_features))


def _target(recipe: Recipe, input_dim: int) -> int:
    return latent_dim(input_dim, recipe.model.reduce)


def build_nsf(recipe: Recipe, scaler: Standardize) -> FunnelFlow:
    """NSF, or F-NSF when the recipe's family has a funnel."""
    m = recipe.model
    input_dim = dim = int(scaler.mean.shape[0])
    settings = _spline_settings(recipe)
    transforms: list[Transform] = [scaler]
    for step in range(m.flow_steps):
        if recipe.has_funnel and step == m.funnel_level and m.funnel_kind != "spline":
            keep = conv_latent_dim(dim, m.funnel_kind)
            make = conv_funnel if m.funnel_kind == "conv" else conv_stride1_funnel
            transforms.append(make(dim, _ansatz(recipe, dim - keep, keep, m.transform)))
            dim = keep
            continue
        transforms += _mixing(dim)
        if recipe.has_funnel and step == m.funnel_level:
            keep = _target(recipe, input_dim)
            # f(x_keep; x_drop): elementwise splines driven by x_drop (coupling) or a MADE with x_drop as context.
            if m.transform == "autoregressive":
                f = rq_layer("autoregressive", keep, step, settings, context_features=dim - keep)
            else:
                f = ElementwiseRQSpline(keep, dim - keep, settings)
            transforms.append(Funnel(keep, dim - keep, f, _ansatz(recipe, dim - keep, keep, m.transform)))
            dim = keep
        else:
            transforms.append(rq_layer(m.transform, dim, step, settings))
    transforms += _mixing(dim)
    return FunnelFlow(transforms, input_dim=input_dim, latent_dim=dim)


def build_glow(recipe: Recipe, scaler: Standardize) -> FunnelFlow:
    """Glow for tables, or F-Glow when the recipe's family has a funnel."""
    m = recipe.model
    input_dim = dim = int(scaler.mean.shape[0])
    transforms: list[Transform] = [scaler]
    for step in range(m.flow_steps):
        transforms += [ActNorm(dim), *_mixing(dim)]
        if recipe.has_funnel and step == m.funnel_level:
            keep = _target(recipe, input_dim)
            f = ElementwiseAffine(keep, dim - keep, m.hidden_features, m.residual_blocks, m.dropout)
            transforms.append(Funnel(keep, dim - keep, f, _ansatz(recipe, dim - keep, keep)))
            dim = keep
        else:
            transforms.append(affine_coupling(dim, step, m.hidden_features, m.residual_blocks, m.dropout))
    transforms.append(ActNorm(dim))
    return FunnelFlow(transforms, input_dim=input_dim, latent_dim=dim)


def mlp_sizes(input_dim: int, latent: int, layout: tuple[str, ...]) -> list[int]:
    """The output size of each F-MLP layer: ``halfway`` is round((D + k) / 2), ``latent`` is k."""
    sizes, dim = [], input_dim
    for kind in layout:
        if kind == "halfway":
            dim = min(dim, math.floor((input_dim + latent) / 2 + 0.5))
        elif kind == "latent":
            dim = latent
        sizes.append(dim)
    return sizes


def build_f_mlp(recipe: Recipe, scaler: Standardize) -> FunnelFlow:
    """F-MLP: a fixed permutation then y = s(W x + b) per layer; reducing layers are MLP funnels."""
    m = recipe.model
    input_dim = dim = int(scaler.mean.shape[0])
    settings = _spline_settings(recipe, m.ansatz_hidden_features)
    transforms: list[Transform] = [scaler]
    for size in mlp_sizes(input_dim, _target(recipe, input_dim), m.mlp_layout):
        if size == dim:
            transforms.append(mlp_layer(dim, settings))
        else:
            transforms.append(mlp_funnel(dim, size, _ansatz(recipe, dim - size, size), settings))
            dim = size
    return FunnelFlow(transforms, input_dim=input_dim, latent_dim=dim)


def build_vae(recipe: Recipe, scaler: Standardize) -> VAE:
    m = recipe.model
    input_dim = int(scaler.mean.shape[0])
    return VAE(scaler, _target(recipe, input_dim), m.hidden_features, m.vae_layers)


FAMILIES: dict[str, Family] = {
    "nsf": Family("nsf", build_nsf, "rational-quadratic neural spline flow, full dimension"),
    "f-nsf": Family("f-nsf", build_nsf, "NSF with one step replaced by a funnel (F-NSF)"),
    "glow": Family("glow", build_glow, "Glow for tables: ActNorm, LU linear maps, affine couplings"),
    "f-glow": Family("f-glow", build_glow, "Glow with one step replaced by an affine funnel (F-Glow)"),
    "f-mlp": Family("f-mlp", build_f_mlp, "the paper's MLP funnel model: y = s(Wx + b) layers (F-MLP)"),
    "vae": Family("vae", build_vae, "variational autoencoder baseline; scores are lower bounds"),
}


def build_model(recipe: Recipe, mean: np.ndarray, std: np.ndarray, *, seed: int | None = None) -> nn.Module:
    """The recipe's model for data with the given column means and standard deviations.

    Weights and permutations are drawn from ``seed`` (default: the recipe's) without touching the global RNG.
    """
    family = FAMILIES[recipe.family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.training.seed if seed is None else seed)
        scaler = Standardize(torch.tensor(np.asarray(mean, dtype=np.float64)), torch.tensor(np.asarray(std)))
        return family.build(recipe, scaler)
