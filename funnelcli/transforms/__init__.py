"""Layers: bijections and funnels, each following nflows' contract

``forward(inputs, context=None) -> (outputs, logabsdet)`` and ``inverse(...)`` likewise, where a funnel's
"logabsdet" is its whole likelihood contribution (log-det plus log q of what it drops).
"""

from funnelcli.transforms.ansatz import ANSATZES, FlowAnsatz, GaussianAnsatz, standard_normal_log_prob
from funnelcli.transforms.funnel import Funnel
from funnelcli.transforms.linear import LULinear, RandomPermutation
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
    "TRANSFORM_KINDS",
    "ElementwiseRQSpline",
    "FlowAnsatz",
    "Funnel",
    "GaussianAnsatz",
    "LULinear",
    "RandomPermutation",
    "SplineSettings",
    "Standardize",
    "rq_autoregressive",
    "rq_coupling",
    "rq_layer",
    "standard_normal_log_prob",
]
