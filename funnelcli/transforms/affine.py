"""Affine layers for Glow on tables (Kingma and Dhariwal 2018): ActNorm, affine couplings, conditional scaling."""

from __future__ import annotations

import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms.base import Transform
from nflows.transforms.coupling import AffineCouplingTransform
from nflows.transforms.normalization import ActNorm
from nflows.utils import create_alternating_binary_mask
from torch import nn

__all__ = ["ActNorm", "ElementwiseAffine", "affine_coupling"]


def _scale(unconstrained: torch.Tensor) -> torch.Tensor:
    # Glow's bounded scale: (0.001, 1.001), equal to about 1 at zero input, never zero.
    return torch.sigmoid(unconstrained + 2.0) + 1e-3


class ElementwiseAffine(Transform):
    """y = x * scale(c) + shift(c), elementwise, with scale in (0.001, 1.001).

    scale and shift come from a residual MLP of the context c (shape (N, C)), or are free parameters without
    one. log|det dy/dx| = sum_j log scale_j. Shapes: (N, D) -> (N, D), logabsdet (N,). This is the f of an
    F-Glow funnel: an affine map of the kept coordinates whose parameters read the dropped ones.
    """

    def __init__(
        self,
        features: int,
        context_features: int | None = None,
        hidden_features: int = 64,
        residual_blocks: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.features = features
        if context_features:
            self.net = ResidualNet(
                context_features,
                2 * features,
                hidden_features,
                num_blocks=residual_blocks,
                dropout_probability=dropout,
            )
            self.free_params = None
        else:
            self.net = None
            self.free_params = nn.Parameter(torch.zeros(2 * features))

    def _scale_shift(self, inputs, context):
        if self.net is not None:
            if context is None:
                raise ValueError("this affine layer's parameters come from a context, and none was given")
            params = self.net(context)
        else:
            params = self.free_params.expand(inputs.shape[0], -1)
        unconstrained, shift = params.chunk(2, dim=1)
        return _scale(unconstrained), shift

    def forward(self, inputs, context=None):
        scale, shift = self._scale_shift(inputs, context)
        return inputs * scale + shift, torch.log(scale).sum(dim=1)

    def inverse(self, inputs, context=None):
        scale, shift = self._scale_shift(inputs, context)
        return (inputs - shift) / scale, -torch.log(scale).sum(dim=1)


def affine_coupling(
    features: int,
    step: int,
    hidden_features: int,
    residual_blocks: int,
    dropout: float = 0.0,
    context_features: int | None = None,
) -> Transform:
    """A Glow affine coupling: half the coordinates (alternating with ``step``) set the scale and shift of the
    rest through a residual MLP, which also reads the context c (shape (N, C)) when ``context_features`` is
    given. In one dimension, where nothing can be split, an elementwise affine map (of c, if there is one)."""
    if features == 1:
        return ElementwiseAffine(1, context_features, hidden_features, residual_blocks, dropout)

    def net(in_features: int, out_features: int) -> nn.Module:
        return ResidualNet(
            in_features,
            out_features,
            hidden_features,
            context_features=context_features,
            num_blocks=residual_blocks,
            dropout_probability=dropout,
        )

    return AffineCouplingTransform(create_alternating_binary_mask(features, even=step % 2 == 0), net)
