"""Monotone rational-quadratic (RQ) splines: elementwise, coupling and autoregressive.

Durkan et al. 2019, "Neural Spline Flows". Each coordinate is mapped by a monotone RQ spline on
[-tail_bound, tail_bound] with ``bins`` bins and identity (linear) tails outside, so every layer is a bijection
of R^D. The coupling and autoregressive layers are nflows'; this module adds the elementwise spline whose
parameters come from a context (or are free), which is what a funnel's f(x_keep; x_drop) and a
one-dimensional flow need, and one builder that picks the right layer for a dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from nflows.nn.nets import ResidualNet
from nflows.transforms.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressiveTransform
from nflows.transforms.base import Transform
from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
from nflows.utils import create_alternating_binary_mask
from torch import nn

TRANSFORM_KINDS = ("coupling", "autoregressive")


@dataclass(frozen=True)
class SplineSettings:
    """Sizes shared by every spline layer of one flow."""

    hidden_features: int = 128
    residual_blocks: int = 2
    bins: int = 8
    tail_bound: float = 3.0
    dropout: float = 0.0


def _params_per_feature(bins: int) -> int:
    # widths (bins) + heights (bins) + interior derivatives (bins - 1); the end derivatives are 1 (linear tails).
    return 3 * bins - 1


#: nflows' floors on bin widths, heights and knot derivatives, so that the maps agree with its splines.
MIN_BIN_WIDTH = MIN_BIN_HEIGHT = MIN_DERIVATIVE = 1e-3


def _knots(unnormalized: torch.Tensor, bound: float, minimum: float) -> torch.Tensor:
    """The K + 1 knot positions on [-bound, bound] from K unnormalised bin sizes (softmax, floored)."""
    bins = unnormalized.shape[-1]
    sizes = minimum + (1 - minimum * bins) * torch.softmax(unnormalized, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
    knots = 2 * bound * knots - bound
    # The ends exactly at +-bound, whatever the rounding of the cumulative sum.
    return torch.cat(
        [torch.full_like(knots[..., :1], -bound), knots[..., 1:-1], torch.full_like(knots[..., :1], bound)], -1
    )


def rq_spline(
    inputs: torch.Tensor,
    params: torch.Tensor,
    *,
    bins: int,
    tail_bound: float,
    inverse: bool = False,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A monotone rational-quadratic spline per coordinate with linear (identity) tails, and log|s'| per entry.

    ``inputs`` is (N, F); ``params`` holds, per coordinate, K unnormalised widths, K heights and K - 1 interior
    derivatives (3K - 1 numbers), shaped (N, F, 3K - 1) or broadcastable to it ((F, 3K - 1) or (1, 3K - 1) for
    parameters shared by all rows, or by all rows and coordinates: they are normalised once, not per row).
    Returns outputs (N, F) and log|ds/dx| (N, F); with ``inverse``, the inverse map and log|ds^-1/dy|.
    The unnormalised widths and heights are divided by ``temperature`` (nflows' networks use sqrt(hidden)).

    The maths is nflows' ``unconstrained_rational_quadratic_spline`` (Durkan et al. 2019, eq. 4 to 6, the
    derivatives at the ends being 1), written without boolean-mask indexing: every entry is evaluated at its
    input clamped to [-B, B] and ``torch.where`` picks the identity outside. That costs no more arithmetic on
    small tables, avoids nflows' per-call ``nonzero`` and scatter, and keeps the graph static for
    ``torch.compile``.
    """
    bound = tail_bound
    widths_raw, heights_raw, derivatives_raw = params[..., :bins], params[..., bins : 2 * bins], params[..., 2 * bins :]
    if temperature != 1.0:
        widths_raw, heights_raw = widths_raw / temperature, heights_raw / temperature
    x_knots = _knots(widths_raw, bound, MIN_BIN_WIDTH)
    y_knots = _knots(heights_raw, bound, MIN_BIN_HEIGHT)
    ones = torch.ones_like(derivatives_raw[..., :1])
    derivatives = torch.cat([ones, MIN_DERIVATIVE + F.softplus(derivatives_raw), ones], dim=-1)

    inside = (inputs >= -bound) & (inputs <= bound)
    clamped = inputs.clamp(-bound, bound)
    knots = y_knots if inverse else x_knots
    # The bin of each entry: how many interior knots lie at or below it.
    index = (clamped[..., None] >= knots[..., 1:-1]).sum(dim=-1, keepdim=True)
    shape = (*index.shape[:-1], -1)

    def at(table: torch.Tensor, offset: int = 0) -> torch.Tensor:
        return table.expand(*shape[:-1], table.shape[-1]).gather(-1, index + offset).squeeze(-1)

    x0, y0 = at(x_knots), at(y_knots)
    width, height = at(x_knots, 1) - x0, at(y_knots, 1) - y0
    d0, d1 = at(derivatives), at(derivatives, 1)
    slope = height / width
    curvature = d0 + d1 - 2 * slope
    if inverse:
        shifted = clamped - y0
        a = shifted * curvature + height * (slope - d0)
        b = height * d0 - shifted * curvature
        c = -slope * shifted
        theta = (2 * c) / (-b - torch.sqrt((b.pow(2) - 4 * a * c).clamp_min(0)))
        outputs = theta * width + x0
    else:
        theta = (clamped - x0) / width
    mixed = theta * (1 - theta)
    denominator = slope + curvature * mixed
    if not inverse:
        outputs = y0 + height * (slope * theta.pow(2) + d0 * mixed) / denominator
    numerator = slope.pow(2) * (d1 * theta.pow(2) + 2 * slope * mixed + d0 * (1 - theta).pow(2))
    logabsdet = torch.log(numerator) - 2 * torch.log(denominator)
    if inverse:
        logabsdet = -logabsdet
    return torch.where(inside, outputs, inputs), torch.where(inside, logabsdet, torch.zeros_like(logabsdet))


class ElementwiseRQSpline(Transform):
    """y_j = s(x_j; theta_j(c)), a monotone RQ spline per coordinate.

    With ``context_features`` the parameters theta come from a residual network of the context c (shape
    (N, C)); without, they are free parameters shared by all rows, and with ``shared`` one spline serves every
    coordinate (as in the F-MLP layers). The Jacobian is diagonal: log|det dy/dx| = sum_j log s'(x_j).
    Shapes: (N, D) -> (N, D), logabsdet (N,). Initialised to the identity.
    """

    def __init__(self, features: int, context_features: int | None, settings: SplineSettings, *, shared: bool = False):
        super().__init__()
        if shared and context_features:
            raise ValueError("a shared spline has free parameters; it takes no context")
        self.features = features
        self.settings = settings
        self.shared = shared
        n_params = (1 if shared else features) * _params_per_feature(settings.bins)
        if context_features:
            self.net = ResidualNet(
                in_features=context_features,
                out_features=n_params,
                hidden_features=settings.hidden_features,
                num_blocks=settings.residual_blocks,
                dropout_probability=settings.dropout,
            )
            # Start at the identity map: zero output gives equal bins and unit derivatives.
            nn.init.zeros_(self.net.final_layer.weight)
            nn.init.zeros_(self.net.final_layer.bias)
            self.free_params = None
        else:
            self.net = None
            self.free_params = nn.Parameter(torch.zeros(n_params))

    def _spline(self, inputs, context, inverse):
        if self.net is not None:
            if context is None:
                raise ValueError("this spline's parameters come from a context, and none was given")
            params = self.net(context)
        else:
            # Free parameters are the same for every row (and, shared, for every coordinate): pass them once.
            params = self.free_params
        bins = self.settings.bins
        rows = inputs.shape[0] if self.net is not None else 1
        params = params.reshape(rows, -1, _params_per_feature(bins))
        outputs, logabsdet = rq_spline(inputs, params, bins=bins, tail_bound=self.settings.tail_bound, inverse=inverse)
        return outputs, logabsdet.sum(dim=1)

    def forward(self, inputs, context=None):
        return self._spline(inputs, context, inverse=False)

    def inverse(self, inputs, context=None):
        return self._spline(inputs, context, inverse=True)


class RQCoupling(PiecewiseRationalQuadraticCouplingTransform):
    """nflows' RQ coupling layer (same networks, parameters and maths) with :func:`rq_spline` as its spline."""

    def _piecewise_cdf(self, inputs, transform_params, inverse=False):
        temperature = math.sqrt(getattr(self.transform_net, "hidden_features", 1))
        return rq_spline(
            inputs,
            transform_params,
            bins=self.num_bins,
            tail_bound=self.tail_bound,
            inverse=inverse,
            temperature=temperature,
        )


class RQAutoregressive(MaskedPiecewiseRationalQuadraticAutoregressiveTransform):
    """nflows' masked autoregressive RQ layer (same network and maths) with :func:`rq_spline` as its spline."""

    def _elementwise(self, inputs, autoregressive_params, inverse=False):
        params = autoregressive_params.view(inputs.shape[0], inputs.shape[1], self._output_dim_multiplier())
        # nflows scales by sqrt(hidden_features) only for networks that have the attribute, which MADE lacks.
        temperature = math.sqrt(getattr(self.autoregressive_net, "hidden_features", 1))
        outputs, logabsdet = rq_spline(
            inputs, params, bins=self.num_bins, tail_bound=self.tail_bound, inverse=inverse, temperature=temperature
        )
        return outputs, logabsdet.sum(dim=1)


def rq_coupling(features: int, step: int, settings: SplineSettings, context_features: int | None = None) -> Transform:
    """An RQ coupling layer: half the coordinates (alternating with ``step``) condition a spline of the rest."""
    mask = create_alternating_binary_mask(features, even=step % 2 == 0)

    def net(in_features: int, out_features: int) -> nn.Module:
        return ResidualNet(
            in_features=in_features,
            out_features=out_features,
            hidden_features=settings.hidden_features,
            context_features=context_features,
            num_blocks=settings.residual_blocks,
            dropout_probability=settings.dropout,
        )

    return RQCoupling(
        mask=mask,
        transform_net_create_fn=net,
        num_bins=settings.bins,
        tails="linear",
        tail_bound=settings.tail_bound,
    )


def rq_autoregressive(features: int, settings: SplineSettings, context_features: int | None = None) -> Transform:
    """A masked autoregressive RQ layer: y_j = s(x_j; theta_j(x_<j, c)). Its inverse takes D passes."""
    return RQAutoregressive(
        features=features,
        hidden_features=settings.hidden_features,
        context_features=context_features,
        num_bins=settings.bins,
        tails="linear",
        tail_bound=settings.tail_bound,
        num_blocks=settings.residual_blocks,
        use_residual_blocks=True,
        dropout_probability=settings.dropout,
    )


def rq_layer(
    kind: str, features: int, step: int, settings: SplineSettings, context_features: int | None = None
) -> Transform:
    """The spline layer of flow step ``step`` in ``features`` dimensions.

    A coupling needs two coordinates to split; in one dimension it becomes an elementwise spline (free, or
    driven by the context), which is what a coupling reduces to there.
    """
    if kind not in TRANSFORM_KINDS:
        raise ValueError(f"unknown transform kind {kind!r}; expected one of {TRANSFORM_KINDS}")
    if kind == "autoregressive":
        return rq_autoregressive(features, settings, context_features)
    if features == 1:
        return ElementwiseRQSpline(1, context_features, settings)
    return rq_coupling(features, step, settings, context_features)
