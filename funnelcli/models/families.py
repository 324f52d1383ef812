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
- ``nsf-image``: a multi-scale image flow on pixel columns (``model.image_shape``): per level ``flow_steps``
  steps of ActNorm, an invertible 1x1 convolution and an RQ-spline channel coupling, squeeze-and-split between
  levels (the factored channels join the latent); ``f-nsf-image``: the same with a 2-D convolutional funnel
  between levels (docs/maths.md, section 7). Both are unconditional and take the standard normal base.
- ``vae``: the VAE baseline; ``reduce`` sets its latent size as it sets a funnel's.

Every model starts with the standardisation of the training data, so log-likelihoods are in the user's units.
Every builder and counter takes ``context_features`` (C, default 0): the width of the encoded conditions c of a
conditional model p(x | c), which every layer with parameters reads (docs/maths.md, section 1.8); with C = 0 the
model is the unconditional one, module for module and draw for draw.
Each family is declared once, in :mod:`funnelcli.models.registry`, which names its ``build_*`` builder and its
``count_*`` parameter count below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from nflows.transforms.base import Transform
from torch import nn

from funnelcli.errors import UserError
from funnelcli.models.base import GaussianMixture, StandardNormal, mixture_parameters
from funnelcli.models.flow import FunnelFlow
from funnelcli.models.image_plan import Level, image_latent_dim, image_plan, missing_last
from funnelcli.models.recipe import Recipe
from funnelcli.models.registry import FAMILIES
from funnelcli.models.vae import VAE
from funnelcli.transforms import (
    ElementwiseRQSpline,
    FlowAnsatz,
    Funnel,
    GaussianAnsatz,
    LULinear,
    RandomPermutation,
    SplinedAnsatz,
    SplineSettings,
    Standardize,
    rq_layer,
)
from funnelcli.transforms.affine import ActNorm, ElementwiseAffine, affine_coupling
from funnelcli.transforms.conv import conv_funnel, conv_latent_dim, conv_stride1_funnel
from funnelcli.transforms.conv2d import count_channel_coupling, count_conv2d_funnel
from funnelcli.transforms.mlp import mlp_funnel, mlp_layer
from funnelcli.transforms.multiscale import multiscale


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
    """q(x_drop | z) as the recipe asks: a Gaussian MLP, or a conditional flow (spline or affine layers, with or
    without LU maps); with ``ansatz_spline``, behind an unconditional spline on x_drop. ``keep`` is the width of
    what q reads: z, or [z, c] in a conditional model."""
    m = recipe.model
    if m.ansatz == "gaussian":
        ansatz = GaussianAnsatz(drop, keep, m.ansatz_hidden_features, m.ansatz_layers)
    else:
        settings = _spline_settings(recipe, m.ansatz_hidden_features)
        ansatz = FlowAnsatz(drop, keep, kind, m.ansatz_flow_steps, settings, layer=m.ansatz_layer, lu=m.ansatz_lu)
    return SplinedAnsatz(ansatz, drop, _spline_settings(recipe)) if m.ansatz_spline else ansatz


def _spline_funnels(recipe: Recipe, input_dim: int) -> dict[int, int]:
    """{flow step: dimensions kept} of the recipe's spline (or affine) funnels; none for a convolutional one."""
    if not recipe.has_funnel or recipe.model.funnel_kind != "spline":
        return {}
    return dict(recipe.funnel_plan(input_dim))


def _target(recipe: Recipe, input_dim: int) -> int:
    return recipe.latent_size(input_dim)


def _base(recipe: Recipe, latent: int) -> nn.Module:
    """p_Z: the standard normal, or a Gaussian mixture of ``base_components`` (set from the data when training
    starts: :func:`funnelcli.models.start.fit_base`)."""
    m = recipe.model
    return GaussianMixture(latent, m.base_components) if m.base == "mixture" else StandardNormal(latent)


def _context(width: int) -> int | None:
    # nflows' networks take None, not 0, for "no context": 0 would still add (empty) context layers.
    return width or None


def build_nsf(recipe: Recipe, scaler: Standardize, context_features: int = 0) -> FunnelFlow:
    """NSF, or F-NSF when the recipe's family has a funnel."""
    m = recipe.model
    c = context_features
    input_dim = dim = int(scaler.mean.shape[0])
    settings = _spline_settings(recipe)
    funnels = _spline_funnels(recipe, input_dim)
    transforms: list[Transform] = [scaler]
    for step in range(m.flow_steps):
        if recipe.has_funnel and step == m.funnel_level and m.funnel_kind != "spline":
            keep = conv_latent_dim(dim, m.funnel_kind)
            make = conv_funnel if m.funnel_kind == "conv" else conv_stride1_funnel
            transforms.append(make(dim, _ansatz(recipe, dim - keep, keep + c, m.transform), c))
            dim = keep
            continue
        transforms += _mixing(dim)
        if step in funnels:
            keep = funnels[step]
            # f(x_keep; x_drop): elementwise splines driven by x_drop (coupling) or a MADE with x_drop as context.
            if m.transform == "autoregressive":
                f = rq_layer("autoregressive", keep, step, settings, context_features=dim - keep + c)
            else:
                f = ElementwiseRQSpline(keep, dim - keep + c, settings)
            ansatz = _ansatz(recipe, dim - keep, keep + c, m.transform)
            transforms.append(Funnel(keep, dim - keep, f, ansatz, context_features=c))
            dim = keep
        else:
            transforms.append(rq_layer(m.transform, dim, step, settings, _context(c)))
    transforms += _mixing(dim)
    return FunnelFlow(transforms, input_dim=input_dim, latent_dim=dim, base=_base(recipe, dim), context_features=c)


def build_glow(recipe: Recipe, scaler: Standardize, context_features: int = 0) -> FunnelFlow:
    """Glow for tables, or F-Glow when the recipe's family has a funnel."""
    m = recipe.model
    c = context_features
    input_dim = dim = int(scaler.mean.shape[0])
    funnels = _spline_funnels(recipe, input_dim)
    transforms: list[Transform] = [scaler]
    for step in range(m.flow_steps):
        transforms += [ActNorm(dim), *_mixing(dim)]
        if step in funnels:
            keep = funnels[step]
            f = ElementwiseAffine(keep, dim - keep + c, m.hidden_features, m.residual_blocks, m.dropout)
            transforms.append(Funnel(keep, dim - keep, f, _ansatz(recipe, dim - keep, keep + c), context_features=c))
            dim = keep
        else:
            coupling = affine_coupling(dim, step, m.hidden_features, m.residual_blocks, m.dropout, _context(c))
            transforms.append(coupling)
    transforms.append(ActNorm(dim))
    return FunnelFlow(transforms, input_dim=input_dim, latent_dim=dim, base=_base(recipe, dim), context_features=c)


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


def build_f_mlp(recipe: Recipe, scaler: Standardize, context_features: int = 0) -> FunnelFlow:
    """F-MLP: a fixed permutation then y = s(W x + b) per layer; reducing layers are MLP funnels. A context c
    shifts every layer linearly, y = s(W x + W_c c + b), and the ansatzes read it."""
    m = recipe.model
    c = context_features
    input_dim = dim = int(scaler.mean.shape[0])
    settings = _spline_settings(recipe, m.ansatz_hidden_features)
    transforms: list[Transform] = [scaler]
    for size in mlp_sizes(input_dim, _target(recipe, input_dim), m.mlp_layout):
        if size == dim:
            transforms.append(mlp_layer(dim, settings, c))
        else:
            transforms.append(mlp_funnel(dim, size, _ansatz(recipe, dim - size, size + c), settings, c))
            dim = size
    return FunnelFlow(transforms, input_dim=input_dim, latent_dim=dim, base=_base(recipe, dim), context_features=c)


def _image_plan(recipe: Recipe, input_dim: int, context_features: int) -> tuple[tuple[int, int, int], list[Level]]:
    """(H, W, C) and the level plan of an image family's model on ``input_dim`` columns."""
    if context_features:
        raise UserError(f"family {recipe.family} models images unconditionally; train it without conditions")
    m = recipe.model
    return image_plan(m.image_shape, input_dim, recipe.family, m.levels, recipe.has_funnel, m.reduce)


def build_image(recipe: Recipe, scaler: Standardize, context_features: int = 0) -> FunnelFlow:
    """nsf-image, or f-nsf-image (2-D funnels between levels) when the recipe's family has a funnel."""
    m = recipe.model
    input_dim = int(scaler.mean.shape[0])
    image, plan = _image_plan(recipe, input_dim, context_features)
    flow = multiscale(
        image,
        plan,
        m.flow_steps,
        m.hidden_features,
        m.bins,
        m.tail_bound,
        m.ansatz_hidden_features,
        missing=missing_last(image, input_dim),
    )
    latent = image_latent_dim(plan)
    return FunnelFlow([scaler, flow], input_dim=input_dim, latent_dim=latent, base=StandardNormal(latent))


def build_vae(recipe: Recipe, scaler: Standardize, context_features: int = 0) -> VAE:
    """The VAE; with a context, the conditional VAE: encoder q(z | x, c) and decoder p(x | z, c) read [., c]."""
    m = recipe.model
    input_dim = int(scaler.mean.shape[0])
    return VAE(scaler, _target(recipe, input_dim), m.hidden_features, m.vae_layers, context_features)


# -- the size of a model, counted from its recipe before anything is built -----------------------------------------

#: The most parameters a model may have unless the caller raises the limit (``FunnelDensity(max_parameters=N)``,
#: ``funnel train --max-parameters N``): 100 million, about 1.6 GB of weights, gradients and Adam moments.
DEFAULT_MAX_PARAMETERS = 100_000_000
#: The largest limit that may be asked for (10^12 parameters, 16 TB to train: no machine has that).
MAX_PARAMETERS_LIMIT = 10**12
#: Bytes per parameter while training in float32: the weight, its gradient and Adam's two moments.
TRAINING_BYTES_PER_PARAMETER = 16


@dataclass(frozen=True)
class SizeEstimate:
    """What a recipe builds for ``input_dim`` columns, counted without building it."""

    parameters: int
    latent_dim: int

    @property
    def training_bytes(self) -> int:
        """Memory for the weights, their gradients and Adam's moments in float32 (activations not included)."""
        return TRAINING_BYTES_PER_PARAMETER * self.parameters

    @property
    def training_memory(self) -> str:
        """:attr:`training_bytes` for people: ``"1.6 GB"``, ``"29.1 MB"``, ``"12 kB"``."""
        size = self.training_bytes
        if size >= 1e9:
            return f"{size / 1e9:,.1f} GB"
        return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _residual_net(n_in: int, n_out: int, hidden: int, blocks: int, context: int | None = None) -> int:
    """nflows' ResidualNet: an input layer (inputs and context together), blocks of two layers (plus a context
    layer each), an output layer."""
    per_block = 2 * _linear(hidden, hidden) + (_linear(context, hidden) if context is not None else 0)
    return _linear(n_in + (context or 0), hidden) + blocks * per_block + _linear(hidden, n_out)


def _made(features: int, hidden: int, context: int | None, blocks: int, multiplier: int) -> int:
    """nflows' MADE with residual blocks: masked layers hold full weight matrices (the masks are buffers)."""
    context_layer = _linear(context, hidden) if context is not None else 0
    per_block = 2 * _linear(hidden, hidden) + context_layer
    return _linear(features, hidden) + context_layer + blocks * per_block + _linear(hidden, features * multiplier)


def _lu(features: int) -> int:
    # The strictly lower and strictly upper entries, the diagonal and the bias.
    return features * features + features


def _spline_params(bins: int) -> int:
    return 3 * bins - 1


def _count_elementwise_spline(features: int, context: int | None, settings: SplineSettings, shared=False) -> int:
    n_params = (1 if shared else features) * _spline_params(settings.bins)
    if context:
        return _residual_net(context, n_params, settings.hidden_features, settings.residual_blocks)
    return n_params


def _halves(features: int, step: int) -> tuple[int, int]:
    """(identity, transformed) coordinates of a coupling with nflows' alternating mask at ``step``."""
    transformed = len(range(0 if step % 2 == 0 else 1, features, 2))
    return features - transformed, transformed


def _count_rq_layer(kind: str, features: int, step: int, settings: SplineSettings, context: int | None = None) -> int:
    per = _spline_params(settings.bins)
    if kind == "autoregressive":
        return _made(features, settings.hidden_features, context, settings.residual_blocks, per)
    if features == 1:
        return _count_elementwise_spline(1, context, settings)
    identity, transformed = _halves(features, step)
    return _residual_net(identity, transformed * per, settings.hidden_features, settings.residual_blocks, context)


def _count_affine_coupling(features: int, step: int, settings: SplineSettings, context: int | None = None) -> int:
    if features == 1:
        return _residual_net(context, 2, settings.hidden_features, settings.residual_blocks) if context else 2
    identity, transformed = _halves(features, step)
    return _residual_net(identity, 2 * transformed, settings.hidden_features, settings.residual_blocks, context)


def _count_ansatz(recipe: Recipe, drop: int, keep: int, kind: str = "coupling") -> int:
    m = recipe.model
    spline = drop * _spline_params(m.bins) if m.ansatz_spline else 0
    if m.ansatz == "gaussian":
        sizes = [keep] + [m.ansatz_hidden_features] * m.ansatz_layers
        layers = sum(_linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        return spline + layers + _linear(sizes[-1], 2 * drop)
    settings = _spline_settings(recipe, m.ansatz_hidden_features)
    count = _count_affine_coupling if m.ansatz_layer == "affine" else partial(_count_rq_layer, kind)
    lu = _lu(drop) if m.ansatz_lu else 0
    return spline + sum(lu + count(drop, step, settings, keep) for step in range(m.ansatz_flow_steps))


def _count_base(recipe: Recipe, latent: int) -> int:
    m = recipe.model
    return mixture_parameters(latent, m.base_components) if m.base == "mixture" else 0


def count_nsf(recipe: Recipe, input_dim: int, context_features: int = 0) -> SizeEstimate:
    m = recipe.model
    c = context_features
    settings = _spline_settings(recipe)
    funnels = _spline_funnels(recipe, input_dim)
    dim, total = input_dim, 0
    for step in range(m.flow_steps):
        if recipe.has_funnel and step == m.funnel_level and m.funnel_kind != "spline":
            keep = conv_latent_dim(dim, m.funnel_kind)
            total += 3 + _count_ansatz(recipe, dim - keep, keep + c, m.transform)  # the kernel: w1, w2 and b
            dim = keep
            continue
        total += _lu(dim)
        if step in funnels:
            keep = funnels[step]
            if m.transform == "autoregressive":
                total += _count_rq_layer("autoregressive", keep, step, settings, dim - keep + c)
            else:
                total += _count_elementwise_spline(keep, dim - keep + c, settings)
            total += _count_ansatz(recipe, dim - keep, keep + c, m.transform)
            dim = keep
        else:
            total += _count_rq_layer(m.transform, dim, step, settings, _context(c))
    return SizeEstimate(total + _lu(dim) + _count_base(recipe, dim), dim)


def count_glow(recipe: Recipe, input_dim: int, context_features: int = 0) -> SizeEstimate:
    m = recipe.model
    c = context_features
    settings = _spline_settings(recipe)
    funnels = _spline_funnels(recipe, input_dim)
    dim, total = input_dim, 0
    for step in range(m.flow_steps):
        total += 2 * dim + _lu(dim)  # ActNorm's log-scale and shift, and the LU map
        if step in funnels:
            keep = funnels[step]
            total += _residual_net(dim - keep + c, 2 * keep, m.hidden_features, m.residual_blocks)
            total += _count_ansatz(recipe, dim - keep, keep + c)
            dim = keep
        else:
            total += _count_affine_coupling(dim, step, settings, _context(c))
    return SizeEstimate(total + 2 * dim + _count_base(recipe, dim), dim)


def count_f_mlp(recipe: Recipe, input_dim: int, context_features: int = 0) -> SizeEstimate:
    m = recipe.model
    c = context_features
    per = _spline_params(m.bins)  # one spline shared by the layer's features
    dim, total = input_dim, 0
    for size in mlp_sizes(input_dim, _target(recipe, input_dim), m.mlp_layout):
        if size == dim:
            total += _lu(dim) + dim * c + per  # W, b and the context's W_c
        else:
            drop = dim - size
            total += _lu(size) + size * (drop + c) + per + _count_ansatz(recipe, drop, size + c)
            dim = size
    return SizeEstimate(total + _count_base(recipe, dim), dim)


def count_image(recipe: Recipe, input_dim: int, context_features: int = 0) -> SizeEstimate:
    m = recipe.model
    image, plan = _image_plan(recipe, input_dim, context_features)
    total = 0
    if plan[0].entry_dropped:
        total += count_conv2d_funnel(image[2], plan[0].channels, m.hidden_features, m.ansatz_hidden_features, m.bins)
    for level in plan:
        c = level.channels
        # ActNorm's log-scale and shift, the 1x1 convolution's C^2, the coupling's conv net, per step.
        total += m.flow_steps * (2 * c + c * c + count_channel_coupling(c, m.hidden_features, m.bins))
        if level.dropped:
            keep = 4 * c - level.dropped
            total += count_conv2d_funnel(c, keep, m.hidden_features, m.ansatz_hidden_features, m.bins)
    return SizeEstimate(total, image_latent_dim(plan))


def count_vae(recipe: Recipe, input_dim: int, context_features: int = 0) -> SizeEstimate:
    m = recipe.model
    c = context_features
    latent = _target(recipe, input_dim)

    def mlp(n_in: int, n_out: int) -> int:
        hidden = m.hidden_features
        return _linear(n_in, hidden) + (m.vae_layers - 1) * _linear(hidden, hidden) + _linear(hidden, n_out)

    return SizeEstimate(mlp(input_dim + c, 2 * latent) + mlp(latent + c, 2 * input_dim), latent)


def estimate_size(recipe: Recipe, input_dim: int, context_features: int = 0) -> SizeEstimate:
    """The parameter count and latent size of the recipe's model for ``input_dim`` columns (conditioned on
    ``context_features`` encoded condition columns), without building it.

    Exact (a test checks it against the built models of every family): arithmetic only, so a recipe sized for
    billions of parameters costs nothing to count. A funnel (or the VAE) on fewer than 2 columns is a
    :class:`UserError`.
    """
    if recipe.has_funnel or recipe.family == "vae":
        recipe.latent_size(input_dim)  # refuses a funnel on one column, or a latent_dim that does not fit
    return FAMILIES[recipe.family].count(recipe, input_dim, context_features)


def check_size(
    recipe: Recipe, input_dim: int, max_parameters: int | None = None, context_features: int = 0
) -> SizeEstimate:
    """The recipe's :class:`SizeEstimate` for ``input_dim`` columns (and ``context_features`` encoded
    conditions); a :class:`UserError` when its parameters exceed ``max_parameters`` (default
    :data:`DEFAULT_MAX_PARAMETERS`)."""
    limit = DEFAULT_MAX_PARAMETERS if max_parameters is None else max_parameters
    estimate = estimate_size(recipe, input_dim, context_features)
    if estimate.parameters > limit:
        raise UserError(
            f"recipe {recipe.name!r} gives a model of {estimate.parameters:,} parameters for {input_dim} columns "
            f"(about {estimate.training_memory} to train), above the limit of {limit:,}; choose a "
            f"smaller recipe (fewer flow_steps or hidden_features), or raise the limit with --max-parameters "
            f"{estimate.parameters} (FunnelDensity(max_parameters=...))"
        )
    return estimate


def build_model(
    recipe: Recipe, mean: np.ndarray, std: np.ndarray, *, seed: int | None = None, context_features: int = 0
) -> nn.Module:
    """The recipe's model for data with the given column means and standard deviations; with
    ``context_features`` = C > 0, the conditional model p(x | c) of C encoded condition columns
    (:mod:`funnelcli.conditions`). The width comes from the data, never from the recipe.

    Weights and permutations are drawn from ``seed`` (default: the recipe's) without touching the global RNG.
    """
    family = FAMILIES[recipe.family]  # its builder is one of this module's build_* functions
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.training.seed if seed is None else seed)
        scaler = Standardize(torch.tensor(np.asarray(mean, dtype=np.float64)), torch.tensor(np.asarray(std)))
        return family.build(recipe, scaler, context_features)
