"""A density model: a chain of transforms from data space to a standard normal latent space."""

from __future__ import annotations

import torch
from nflows.transforms.base import CompositeTransform, Transform
from torch import nn

from funnelcli.models.base import StandardNormal
from funnelcli.models.contract import checked_context


class FunnelFlow(nn.Module):
    """p(x) = p_Z(z) * exp(sum of the layers' likelihood contributions), z = T(x).

    T maps R^D to R^k (k = ``latent_dim`` <= D) through bijections and funnels; with no funnel k = D and this
    is an ordinary normalizing flow. p_Z is ``base`` (:mod:`funnelcli.models.base`): N(0, I_k) unless told
    otherwise. Every method takes and returns float tensors of shape (N, D) or (N, k).
    It is a :class:`~funnelcli.models.contract.DensityModel` whose scores are exact.

    A conditional flow (``context_features`` = C > 0) is p(x | c): every method takes ``context``, c of shape
    (N, C), the conditions as :mod:`funnelcli.conditions` encodes them, which every layer with parameters reads
    (docs/maths.md, section 1.8). p_Z stays unconditional: for each c, T(.; c) is a flow of its own, so
    log p(x | c) = log p_Z(T(x; c)) + the layers' contributions at c, exactly. Without a context
    (``context_features`` = 0) the model is the unconditional one, layer for layer.
    """

    #: Scores are exact log-likelihoods (a VAE's are bounds).
    is_bound = False

    def __init__(
        self,
        transforms: list[Transform],
        input_dim: int,
        latent_dim: int,
        base: nn.Module | None = None,
        context_features: int = 0,
    ):
        super().__init__()
        self.transform = CompositeTransform(transforms)
        self.input_dim = input_dim
        self.latent_dim = latent_dim
        self.context_features = context_features
        self.base = StandardNormal(latent_dim) if base is None else base

    @property
    def scaler(self) -> Transform:
        """The first layer, the standardisation of the training data."""
        return self.transform._transforms[0]

    def _checked(self, context: torch.Tensor | None, rows: int) -> torch.Tensor | None:
        return checked_context("flow", self.context_features, context, rows)

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(x) (log p(x | c) with a context), shape (N,)."""
        z, contribution = self.transform(x, context=self._checked(context, x.shape[0]))
        return self.base.log_prob(z) + contribution

    def encode(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The latent code z = T(x) (T(x; c)), shape (N, k). Deterministic: funnels drop, they do not sample."""
        z, _ = self.transform(x, context=self._checked(context, x.shape[0]))
        return z

    def sample_and_log_prob(
        self, n: int, temperature: float = 1.0, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws x = T^-1(z), z ~ p_Z (each component's spread scaled by ``temperature``), with log p(x) under
        the model (at temperature 1). With a context (n, C), row i is drawn from p(x | c_i).

        A funnel's inverse draws its dropped coordinates from q and returns minus its contribution, so
        log p(x) = log N(z) - inverse-logabsdet exactly.
        """
        context = self._checked(context, n)
        reference = next(self.buffers())  # every model has the standardisation's buffers
        z = self.base.sample(n, temperature, like=reference)
        x, inverse_contribution = self.transform.inverse(z, context=context)
        return x, self.base.log_prob(z) - inverse_contribution

    def sample(self, n: int, temperature: float = 1.0, context: torch.Tensor | None = None) -> torch.Tensor:
        """n draws, shape (n, D), one per context row when there is a context (n, C). ``temperature`` scales the
        base distribution's spread."""
        return self.sample_and_log_prob(n, temperature, context)[0]


def split_context(model: nn.Module, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, c) of training rows that carry their context: rows (N, D + C) are [x, c] for a conditional model
    (C = ``model.context_features``), and x alone (c None) for any other. Training keeps the two together so that
    a batch, a shard and a streamed copy always pair each row with its own conditions."""
    width = getattr(model, "context_features", 0)
    if not width:
        return rows, None
    return rows[:, : rows.shape[1] - width], rows[:, rows.shape[1] - width :]
