"""Monotone rational-quadratic (RQ) splines: elementwise, coupling and autoregressive.

Durkan et al. 2019, "Neural Spline Flows". Each coordinate is mapped by a monotone RQ spline on
[-tail_bound, tail_bound] with ``bins`` bins and identity (linear) tails outside, so every layer is a bijection
of R^D. The coupling and autoregressive layers are nflows'; this module adds the elementwise spline whose
parameters come from a context (or are free), which is what a funnel's f(x_keep; x_drop) and a
one-dimensional flow need, and one builder that picks the right layer for a dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms.autoregressive import MaskedPiecewiseRationalQuadraticAutoregressiveTransform
from nflows.transforms.base import Transform
from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline
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
            params = self.free_params.repeat(self.features) if self.shared else self.free_params
            params = params.expand(inputs.shape[0], -1)
        bins = self.settings.bins
        params = params.reshape(inputs.shape[0], self.features, _params_per_feature(bins))
        outputs, logabsdet = unconstrained_rational_quadratic_spline(
            inputs,
            unnormalized_widths=params[..., :bins],
            unnormalized_heights=params[..., bins : 2 * bins],
            unnormalized_derivatives=params[..., 2 * bins :],
            inverse=inverse,
            tails="linear",
            tail_bound=self.settings.tail_bound,
        )
        return outputs, logabsdet.sum(dim=1)

    def forward(self, inputs, context=None):
        return self._spline(inputs, context, inverse=False)

    def inverse(self, inputs, context=None):
        return self._spline(inputs, context, inverse=True)


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

    return PiecewiseRationalQuadraticCouplingTransform(
        mask=mask,
        transform_net_create_fn=net,
        num_bins=settings.bins,
        tails="linear",
        tail_bound=settings.tail_bound,
    )


def rq_autoregressive(features: int, settings: SplineSettings, context_features: int | None = None) -> Transform:
    """A masked autoregressive RQ layer: y_j = s(x_j; theta_j(x_<j, c)). Its inverse takes D passes."""
    return MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
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
