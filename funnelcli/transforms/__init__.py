"""Layers: bijections and funnels, each following nflows' contract

``forward(inputs, context=None) -> (outputs, logabsdet)`` and ``inverse(...)`` likewise, where a funnel's
"logabsdet" is its whole likelihood contribution (log-det plus log q of what it drops).
"""

from funnelcli.transforms.affine import ActNorm, ElementwiseAffine, affine_coupling
from funnelcli.transforms.ansatz import (
    ANSATZES,
    FlowAnsatz,
    GaussianAnsatz,
    SplinedAnsatz,
    standard_normal_log_prob,
)
from funnelcli.transforms.conv import StrideOneConv, TileConv, conv_funnel, conv_stride1_funnel
from funnelcli.transforms.funnel import Funnel
from funnelcli.transforms.linear import LULinear, RandomPermutation
from funnelcli.transforms.mlp import ConditionalLULinear, mlp_funnel, mlp_layer
from funnelcli.transforms.splines import (
    TRANSFORM_KINDS,
    ElementwiseRQSpline,
    SplineSettings,
    rq_autoregressive,
    rq_coupling,
    rq_layer,
)
from funnelcli.transforms.standardize import Standardize

__all__ = [
    "ANSATZES",
    "ActNorm",
    "ConditionalLULinear",
    "ElementwiseAffine",
    "StrideOneConv",
    "TileConv",
    "affine_coupling",
    "conv_funnel",
    "conv_stride1_funnel",
    "mlp_funnel",
    "mlp_layer",
    "TRANSFORM_KINDS",
    "ElementwiseRQSpline",
    "FlowAnsatz",
    "Funnel",
    "GaussianAnsatz",
    "LULinear",
    "RandomPermutation",
    "SplineSettings",
    "SplinedAnsatz",
    "Standardize",
    "rq_autoregressive",
    "rq_coupling",
    "rq_layer",
    "standard_normal_log_prob",
]
