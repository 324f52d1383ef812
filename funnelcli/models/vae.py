"""The VAE baseline (paper A.4): a Gaussian encoder and decoder, trained and scored by lower bounds.

Kingma and Welling 2014; the importance-weighted bound of Burda et al. 2016. With x standardised to u,

    ELBO(x)   = E_{q(z|u)} [log p(u|z) + log p(z) - log q(z|u)] + log|det du/dx|   <= log p(x)
    IWAE_K(x) = E [log (1/K) sum_k p(u, z_k) / q(z_k|u)] + log|det du/dx|,         ELBO <= IWAE_K <= log p(x)

each estimated with one draw of z per row (K draws for IWAE). p(z) = N(0, I_k); q(z|u) = N(mu(u), diag s(u)^2);
p(u|z) = N(m(z), diag t(z)^2), with every mean and log-scale from an MLP.

A conditional VAE (Sohn et al. 2015), ``context_features`` = C > 0, bounds log p(x | c): the encoder is
q(z | u, c), reading [u, c], the decoder p(u | z, c), reading [z, c], and the prior stays N(0, I_k). For each c
both bounds hold with the same proof, ELBO(x | c) <= IWAE_K(x | c) <= log p(x | c) (docs/maths.md, section 4).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from funnelcli.models.contract import checked_context
from funnelcli.transforms.ansatz import standard_normal_log_prob
from funnelcli.transforms.standardize import Standardize


def _mlp(n_in: int, n_out: int, hidden: int, layers: int) -> nn.Sequential:
    sizes = [n_in] + [hidden] * layers
    modules: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        modules += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*modules, nn.Linear(sizes[-1], n_out))


def _gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    return standard_normal_log_prob((x - mean) * torch.exp(-log_scale)) - log_scale.sum(dim=-1)


class VAE(nn.Module):
    """A variational autoencoder, a :class:`~funnelcli.models.contract.DensityModel` whose ``log_prob`` is a
    lower bound.

    Shapes: x (N, D), latent z (N, k); a conditional VAE's ``context`` c (N, C) goes with every method.
    """

    #: Scores are lower bounds on log p(x), not exact log-likelihoods.
    is_bound = True

    def __init__(
        self, scaler: Standardize, latent_dim: int, hidden_features: int, layers: int, context_features: int = 0
    ):
        super().__init__()
        self.scaler = scaler
        self.input_dim = int(scaler.mean.shape[0])
        self.latent_dim = latent_dim
        self.context_features = context_features
        self.encoder = _mlp(self.input_dim + context_features, 2 * latent_dim, hidden_features, layers)
        self.decoder = _mlp(latent_dim + context_features, 2 * self.input_dim, hidden_features, layers)

    def _checked(self, context: torch.Tensor | None, rows: int) -> torch.Tensor | None:
        return checked_context("VAE", self.context_features, context, rows)

    @staticmethod
    def _with(values: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """[values, c]: the context beside a network's input, broadcast over any leading sample axis."""
        if context is None:
            return values
        return torch.cat([values, context.expand(*values.shape[:-1], context.shape[-1])], dim=-1)

    def _posterior(self, u: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = self.encoder(self._with(u, context)).chunk(2, dim=-1)
        return mean, log_scale.clamp(-10, 5)

    def _likelihood(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = self.decoder(self._with(z, context)).chunk(2, dim=-1)
        # A floor on the decoder's scale keeps the likelihood from collapsing onto single rows.
        return mean, log_scale.clamp(-7, 5)

    def iw_log_prob(self, x: torch.Tensor, samples: int = 1, context: torch.Tensor | None = None) -> torch.Tensor:
        """The importance-weighted bound with ``samples`` draws per row (1: the ELBO), shape (N,); given
        ``context`` (N, C), the bound on log p(x | c)."""
        context = self._checked(context, x.shape[0])
        u, log_det = self.scaler(x)
        mean, log_scale = self._posterior(u, context)
        noise = torch.randn(samples, *mean.shape, dtype=mean.dtype, device=mean.device)
        z = mean + noise * torch.exp(log_scale)  # (K, N, k)
        x_mean, x_log_scale = self._likelihood(z, context)
        log_weights = (
            _gaussian_log_prob(u, x_mean, x_log_scale)
            + standard_normal_log_prob(z.reshape(-1, self.latent_dim)).reshape(samples, -1)
            - (standard_normal_log_prob(noise.reshape(-1, self.latent_dim)).reshape(samples, -1) - log_scale.sum(-1))
        )
        return torch.logsumexp(log_weights, dim=0) - math.log(samples) + log_det

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """A one-sample estimate of the ELBO, shape (N,): what training maximises and ``score`` reports."""
        return self.iw_log_prob(x, 1, context)

    def encode(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The posterior mean of z (of q(z | u, c) given ``context``), shape (N, k)."""
        return self._posterior(self.scaler(x)[0], self._checked(context, x.shape[0]))[0]

    def decode(self, z: torch.Tensor, *, mean: bool = False, context: torch.Tensor | None = None) -> torch.Tensor:
        """Rows x of latent codes ``z``, shape (N, k) -> (N, D), in the data's units: a draw from the decoder
        p(x | z) (p(x | z, c) given ``context``), or with ``mean`` its mean (the decoder's mean m(z) unstandardised;
        p(x | z) is Gaussian, so this is also its mode and median)."""
        location, log_scale = self._likelihood(z, self._checked(context, z.shape[0]))
        u = location if mean else location + torch.randn_like(location) * torch.exp(log_scale)
        return self.scaler.inverse(u)[0]

    def sample(self, n: int, temperature: float = 1.0, context: torch.Tensor | None = None) -> torch.Tensor:
        """Decode z ~ N(0, temperature^2 I) and draw from the Gaussian decoder, shape (n, D); given ``context``
        (n, C), row i from p(x | z_i, c_i)."""
        reference = self.scaler.mean
        z = torch.randn(n, self.latent_dim, dtype=reference.dtype, device=reference.device) * temperature
        return self.decode(z, context=context)
