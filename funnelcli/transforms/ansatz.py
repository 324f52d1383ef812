"""The ansatz q(x_drop | z): the conditional density a funnel assigns to the coordinates it drops.

Two families (paper section 2; docs/maths.md, section 1.4):

- ``gaussian``: q(x_drop | z) = N(mu(z), diag sigma(z)^2), mu and log sigma from an MLP of z;
- ``flow``: a conditional flow over x_drop whose every layer reads z: RQ-spline layers (the spline families'
  kind), or affine couplings (Glow's kind, the paper's choice for F-Glow), optionally with an LU linear map
  after each permutation, as the main flows have.

Either may be wrapped in :class:`SplinedAnsatz`, an unconditional elementwise spline g on x_drop, so that
q(x_drop | z) = q_inner(g(x_drop) | z) |det dg/dx_drop| (the authors' tabular code has it).

All expose ``log_prob(x, context) -> (N,)``, ``sample(context) -> (x, log_prob)``, one draw per context row, and
``centre(context) -> (x, log_prob)``, one fixed point of q per context row, used where a decoder wants no
randomness (``funnelcli.models.decode``): the image of the base distribution's zero u = 0 under the ansatz's map
to x_drop. For the Gaussian ansatz that is its mean mu(c); for a flow ansatz T^-1(0; c), in general neither q's
mean nor its mode; behind :class:`SplinedAnsatz`'s monotone elementwise spline on a Gaussian, q's coordinatewise
median.
"""

from __future__ import annotations

import math

import torch
from nflows.transforms.base import CompositeTransform
from torch import nn

from funnelcli.transforms.affine import affine_coupling
from funnelcli.transforms.linear import LULinear, RandomPermutation
from funnelcli.transforms.splines import ElementwiseRQSpline, SplineSettings, rq_layer

ANSATZES = ("gaussian", "flow")
_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension. Shape (..., d) -> (...)."""
    return -0.5 * (z**2).sum(dim=-1) - 0.5 * z.shape[-1] * _LOG_2PI


class GaussianAnsatz(nn.Module):
    """q(x | c) = N(x; mu(c), diag exp(2 log_sigma(c))), an MLP of ``layers`` hidden ReLU layers.

    Shapes: x (N, D), c (N, C). Initialised to N(0, I) for every c.
    """

    def __init__(self, features: int, context_features: int, hidden_features: int = 128, layers: int = 3):
        super().__init__()
        self.features = features
        sizes = [context_features] + [hidden_features] * layers
        modules: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            modules += [nn.Linear(n_in, n_out), nn.ReLU()]
        last = nn.Linear(sizes[-1], 2 * features)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*modules, last)

    def _mean_log_scale(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = self.net(context).chunk(2, dim=1)
        return mean, log_scale

    def log_prob(self, inputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        mean, log_scale = self._mean_log_scale(context)
        return standard_normal_log_prob((inputs - mean) * torch.exp(-log_scale)) - log_scale.sum(dim=1)

    def sample(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = self._mean_log_scale(context)
        noise = torch.randn_like(mean)
        return mean + noise * torch.exp(log_scale), standard_normal_log_prob(noise) - log_scale.sum(dim=1)

    def centre(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu(c), log q(mu(c) | c)): the mean, which is also the mode and the median."""
        mean, log_scale = self._mean_log_scale(context)
        return mean, standard_normal_log_prob(torch.zeros_like(mean)) - log_scale.sum(dim=1)


class FlowAnsatz(nn.Module):
    """q(x | c) = N(u; 0, I) |det du/dx| with u = T(x; c), T a conditional flow of ``steps`` layers.

    Each layer is a random permutation (and, with ``lu``, an LU linear map) and then, by ``layer``, a coupling
    or autoregressive RQ spline (``kind``) or an affine coupling, whose networks read c. Shapes: x (N, D),
    c (N, C).
    """

    def __init__(
        self,
        features: int,
        context_features: int,
        kind: str,
        steps: int,
        settings: SplineSettings,
        *,
        layer: str = "spline",
        lu: bool = False,
    ):
        super().__init__()
        self.features = features
        layers: list[nn.Module] = []
        for step in range(steps):
            if features > 1:
                layers.append(RandomPermutation(features))
            if lu:
                layers.append(LULinear(features))
            if layer == "affine":
                layers.append(
                    affine_coupling(
                        features,
                        step,
                        settings.hidden_features,
                        settings.residual_blocks,
                        settings.dropout,
                        context_features=context_features,
                    )
                )
            else:
                layers.append(rq_layer(kind, features, step, settings, context_features))
        self.transform = CompositeTransform(layers)

    def log_prob(self, inputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        noise, logabsdet = self.transform(inputs, context=context)
        return standard_normal_log_prob(noise) + logabsdet

    def sample(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(context.shape[0], self.features, dtype=context.dtype, device=context.device)
        inputs, logabsdet = self.transform.inverse(noise, context=context)
        return inputs, standard_normal_log_prob(noise) - logabsdet

    def centre(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(T^-1(0; c), its log q): the image of the base distribution's mode u = 0, not q's mean."""
        noise = torch.zeros(context.shape[0], self.features, dtype=context.dtype, device=context.device)
        inputs, logabsdet = self.transform.inverse(noise, context=context)
        return inputs, standard_normal_log_prob(noise) - logabsdet


class SplinedAnsatz(nn.Module):
    """q(x | c) = q_inner(g(x) | c) |det dg/dx|, g an unconditional elementwise RQ spline (identity at the start).

    Shapes: x (N, D), c (N, C).
    """

    def __init__(self, inner: nn.Module, features: int, settings: SplineSettings):
        super().__init__()
        self.features = features
        self.inner = inner
        self.spline = ElementwiseRQSpline(features, None, settings)

    def log_prob(self, inputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        outputs, logabsdet = self.spline(inputs)
        return self.inner.log_prob(outputs, context) + logabsdet

    def sample(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs, log_prob = self.inner.sample(context)
        inputs, inverse_logabsdet = self.spline.inverse(outputs)
        return inputs, log_prob - inverse_logabsdet

    def centre(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(g^-1(the inner ansatz's centre), its log q): for a Gaussian inner ansatz, q's coordinatewise median."""
        outputs, log_prob = self.inner.centre(context)
        inputs, inverse_logabsdet = self.spline.inverse(outputs)
        return inputs, log_prob - inverse_logabsdet
