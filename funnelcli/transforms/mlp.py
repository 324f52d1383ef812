"""The MLP funnel of F-MLP (paper section 3, A.6): y = s(W x + b) with W = [W_k | W_d] and W_k invertible.

As a funnel, f(x_k; x_d) = s(W_k x_k + W_d x_d + b): an LU-parameterised square map of the kept coordinates,
shifted by an unconstrained linear map of the dropped ones, then an elementwise monotone spline s. Its
likelihood contribution is log|det W_k| + sum log s' + log q(x_d | y).
"""

from __future__ import annotations

import torch
from nflows.transforms.base import CompositeTransform, Transform
from torch import nn

from funnelcli.transforms.funnel import Funnel
from funnelcli.transforms.linear import LULinear, RandomPermutation
from funnelcli.transforms.splines import ElementwiseRQSpline, SplineSettings


class ConditionalLULinear(Transform):
    """y = W_k x + W_d c + b: an invertible LU map of x (N, d) shifted by a free linear map of c (N, C).

    log|det dy/dx| = sum log|U_ii| (the same for every row). Shapes: (N, d) -> (N, d), logabsdet (N,).
    Initialised to y = x (W_k = I, W_d = 0).
    """

    def __init__(self, features: int, context_features: int):
        super().__init__()
        self.linear = LULinear(features)
        self.context_weight = nn.Parameter(torch.zeros(features, context_features))

    def forward(self, inputs, context=None):
        outputs, logabsdet = self.linear(inputs)
        return outputs + context @ self.context_weight.t(), logabsdet

    def inverse(self, inputs, context=None):
        return self.linear.inverse(inputs - context @ self.context_weight.t())


def mlp_layer(features: int, settings: SplineSettings, context_features: int = 0) -> Transform:
    """A dimension-preserving F-MLP layer: a fixed random permutation, y = s(W x + b) with W square LU.

    With a context c (``context_features`` = C > 0), y = s(W x + W_c c + b): the shift reads c linearly, which
    changes no log-det (the Jacobian in x is W's).
    """
    layers = [RandomPermutation(features)] if features > 1 else []
    linear = ConditionalLULinear(features, context_features) if context_features else LULinear(features)
    return CompositeTransform([*layers, linear, ElementwiseRQSpline(features, None, settings, shared=True)])


def mlp_funnel(
    features: int, out_features: int, ansatz: nn.Module, settings: SplineSettings, context_features: int = 0
) -> Transform:
    """A reducing F-MLP layer from ``features`` to ``out_features``: a fixed random permutation, then the funnel
    y = s(W_k x_k + W_d x_d + b) with ``ansatz`` as q(x_d | y). With a context c (``context_features`` = C > 0),
    y = s(W_k x_k + W_d x_d + W_c c + b) and the ansatz is q(x_d | y, c)."""
    drop = features - out_features
    f = CompositeTransform(
        [
            ConditionalLULinear(out_features, drop + context_features),
            ElementwiseRQSpline(out_features, None, settings, shared=True),
        ]
    )
    funnel = Funnel(out_features, drop, f, ansatz, context_features=context_features)
    return CompositeTransform([RandomPermutation(features), funnel])
