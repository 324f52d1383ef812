"""A density model: a chain of transforms from data space to a standard normal latent space."""

from __future__ import annotations

import torch
from nflows.transforms.base import CompositeTransform, Transform
from torch import nn

from funnelcli.models.base import StandardNormal


class FunnelFlow(nn.Module):
    """p(x) = p_Z(z) * exp(sum of the layers' likelihood contributions), z = T(x).

    T maps R^D to R^k (k = ``latent_dim`` <= D) through bijections and funnels; with no funnel k = D and this
    is an ordinary normalizing flow. p_Z is ``base`` (:mod:`funnelcli.models.base`): N(0, I_k) unless told
    otherwise. Every method takes and returns float tensors of shape (N, D) or (N, k).
    It is a :class:`~funnelcli.models.contract.DensityModel` whose scores are exact.
    """

    #: Scores are exact log-likelihoods (a VAE's are bounds).
    is_bound = False

    def __init__(self, transforms: list[Transform], input_dim: int, latent_dim: int, base: nn.Module | None = None):
        super().__init__()
        self.transform = CompositeTransform(transforms)
        self.input_dim = input_dim
        self.latent_dim = latent_dim
        self.base = StandardNormal(latent_dim) if base is None else base

    @property
    def scaler(self) -> Transform:
        """The first layer, the standardisation of the training data."""
        return self.transform._transforms[0]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x), shape (N,)."""
        z, contribution = self.transform(x)
        return self.base.log_prob(z) + contribution

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code z = T(x), shape (N, k). Deterministic: funnels drop, they do not sample."""
        z, _ = self.transform(x)
        return z

    def sample_and_log_prob(self, n: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws x = T^-1(z), z ~ p_Z (each component's spread scaled by ``temperature``), with log p(x) under
        the model (at temperature 1).

        A funnel's inverse draws its dropped coordinates from q and returns minus its contribution, so
        log p(x) = log N(z) - inverse-logabsdet exactly.
        """
        reference = next(self.buffers())  # every model has the standardisation's buffers
        z = self.base.sample(n, temperature, like=reference)
        x, inverse_contribution = self.transform.inverse(z)
        return x, self.base.log_prob(z) - inverse_contribution

    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """n draws, shape (n, D). ``temperature`` scales the base distribution's spread."""
        return self.sample_and_log_prob(n, temperature)[0]
