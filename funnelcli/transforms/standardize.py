"""Standardisation as the first layer of every model, so that densities are in the user's units."""

from __future__ import annotations

import torch
from nflows.transforms.base import Transform


class Standardize(Transform):
    """y = (x - mean) / std, elementwise, with fixed (non-trained) mean and std.

    log|det dy/dx| = -sum_j log std_j, so a model's log_prob(x) is a density of x itself, not of the
    standardised values. Shapes: (N, D) -> (N, D), logabsdet (N,).
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.get_default_dtype())
        std = torch.as_tensor(std, dtype=torch.get_default_dtype())
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(f"mean and std must be vectors of one size, got {tuple(mean.shape)}, {tuple(std.shape)}")
        if not bool(torch.all(std > 0)):
            raise ValueError("every standard deviation must be positive")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def _logabsdet(self, inputs: torch.Tensor) -> torch.Tensor:
        return -torch.log(self.std).sum().expand(inputs.shape[0])

    def forward(self, inputs, context=None):
        return (inputs - self.mean) / self.std, self._logabsdet(inputs)

    def inverse(self, inputs, context=None):
        return inputs * self.std + self.mean, -self._logabsdet(inputs)
