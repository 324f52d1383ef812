"""Base distributions p_Z of a flow's latent code z (shape (N, k)): the standard normal, or a Gaussian mixture.

A flow with a standard normal base has to bend a table's clusters into one blob through its layers; a mixture
base holds them as components, which is what a Gaussian mixture does without any flow. Both have the same
methods: ``log_prob(z) -> (N,)`` and ``sample(n, temperature, like) -> (n, k)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

_LOG_2PI = math.log(2 * math.pi)


class StandardNormal(nn.Module):
    """p(z) = N(z; 0, I_k). No parameters, so a model with this base has the state dict it always had."""

    def __init__(self, features: int):
        super().__init__()
        self.features = features

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (z**2).sum(dim=-1) - 0.5 * z.shape[-1] * _LOG_2PI

    def sample(self, n: int, temperature: float, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(n, self.features, device=like.device, dtype=like.dtype) * temperature


class GaussianMixture(nn.Module):
    """p(z) = sum_j w_j N(z; mu_j, L_j L_j^T), j = 1..K, full covariances through their Cholesky factors.

    Parameters: ``logits`` (K,) with w = softmax(logits); ``means`` (K, k); ``log_diagonal`` (K, k), the log of
    L_j's diagonal; ``lower`` (K, k, k), whose strictly lower triangle is L_j's (the rest is never read). Every
    value of them is a valid mixture, so training needs no constraint. ``temperature`` in :meth:`sample` scales
    each component's spread about its mean (at 1 the draws follow p exactly).
    """

    def __init__(self, features: int, components: int):
        super().__init__()
        if features < 1 or components < 1:
            raise ValueError(f"a mixture needs features >= 1 and components >= 1, got {features} and {components}")
        self.features, self.components = features, components
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.zeros(components, features))
        self.log_diagonal = nn.Parameter(torch.zeros(components, features))
        self.lower = nn.Parameter(torch.zeros(components, features, features))
        self.register_buffer("_mask", torch.tril(torch.ones(features, features), diagonal=-1), persistent=False)

    def scale_tril(self) -> torch.Tensor:
        """L_j, shape (K, k, k): lower triangular with a positive diagonal."""
        return self.lower * self._mask + torch.diag_embed(self.log_diagonal.exp())

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log w_j + log N(z; mu_j, L_j L_j^T), shape (N, K)."""
        centred = (z.unsqueeze(0) - self.means.unsqueeze(1)).transpose(1, 2)  # (K, k, N)
        solved = torch.linalg.solve_triangular(self.scale_tril(), centred, upper=False)
        log_normal = (
            -0.5 * (solved**2).sum(dim=1) - self.log_diagonal.sum(dim=1, keepdim=True) - 0.5 * self.features * _LOG_2PI
        )
        return (torch.log_softmax(self.logits, dim=0).unsqueeze(1) + log_normal).T

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(z), dim=1)

    def sample(self, n: int, temperature: float, like: torch.Tensor) -> torch.Tensor:
        chosen = torch.multinomial(torch.softmax(self.logits.detach(), dim=0), n, replacement=True)
        noise = torch.randn(n, self.features, 1, device=like.device, dtype=like.dtype) * temperature
        return self.means[chosen] + (self.scale_tril()[chosen] @ noise).squeeze(-1)

    @torch.no_grad()
    def set_(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> None:
        """Set the mixture to ``len(weights)`` <= K components (weights (m,), means (m, k), covariances
        (m, k, k)). With fewer than K, components are repeated and their weights split, which leaves the
        density unchanged: the model stays the m-component mixture, and training may pull the copies apart."""
        m = len(weights)
        if not 1 <= m <= self.components:
            raise ValueError(f"this mixture has {self.components} components; cannot set {m}")
        copies = [j % m for j in range(self.components)]
        counts = np.bincount(copies, minlength=m)
        chol = np.linalg.cholesky(np.asarray(covariances, dtype=np.float64))[copies]
        dtype = self.means.dtype
        self.logits.copy_(torch.as_tensor(np.log(np.asarray(weights)[copies] / counts[copies]), dtype=dtype))
        self.means.copy_(torch.as_tensor(np.asarray(means)[copies], dtype=dtype))
        self.log_diagonal.copy_(torch.as_tensor(np.log(np.diagonal(chol, axis1=1, axis2=2)), dtype=dtype))
        self.lower.copy_(torch.as_tensor(np.tril(chol, k=-1), dtype=dtype))

    def set_standard_normal_(self) -> None:
        """Every component N(0, I) with equal weights: the mixture is then exactly the standard normal."""
        k = self.features
        self.set_(np.ones(1), np.zeros((1, k)), np.eye(k)[None])


def mixture_parameters(features: int, components: int) -> int:
    """Parameters of :class:`GaussianMixture` (the unread upper triangle of ``lower`` included, as it is stored)."""
    return components * (1 + 2 * features + features * features)
