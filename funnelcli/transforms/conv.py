"""Convolutional funnels for ordered features (paper section 3, A.7.1), one channel along the feature axis.

- Stride 2, width 2: each tile (x_{2i}, x_{2i+1}) gives y_i = w_1 x_{2i} + w_2 x_{2i+1} + b. x_{2i} is kept
  (log|det| = n_tiles log|w_1|), x_{2i+1} is dropped and modelled by q(x_{2i+1} | y). A last, unpaired
  feature passes through as it is.
- Stride 1, width 2: y_i = w_1 x_i + w_2 x_{i+1} + b for i < D - 1, keeping x_0 ... x_{D-2} and dropping
  x_{D-1}. The map of the kept coordinates is upper bidiagonal, log|det| = (D - 1) log|w_1|, and its inverse
  is autoregressive: x_{D-2} from y_{D-2} and x_{D-1}, then x_{D-3}, and so on down.
"""

from __future__ import annotations

import torch
from nflows.transforms.base import Transform
from torch import nn

from funnelcli.transforms.funnel import Funnel


class _KernelWidthTwo(nn.Module):
    """The kernel (w_1, w_2) and bias b, with w_1 = exp(a) > 0 so the kept element is always invertible."""

    def __init__(self):
        super().__init__()
        self.log_w1 = nn.Parameter(torch.zeros(()))
        self.w2 = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(()))


class TileConv(Transform):
    """f of the stride-2 funnel: z_i = w_1 k_i + w_2 d_i + b for the ``tiles`` paired kept coordinates k_i with
    their dropped partners d_i (the context); any further kept coordinate passes through. Shapes: (N, keep)."""

    def __init__(self, keep: int, tiles: int):
        super().__init__()
        self.tiles = tiles
        self.kernel = _KernelWidthTwo()

    def forward(self, inputs, context=None):
        k = self.kernel
        paired = torch.exp(k.log_w1) * inputs[:, : self.tiles] + k.w2 * context + k.bias
        logabsdet = (self.tiles * k.log_w1).expand(inputs.shape[0])
        return torch.cat([paired, inputs[:, self.tiles :]], dim=1), logabsdet

    def inverse(self, inputs, context=None):
        k = self.kernel
        paired = (inputs[:, : self.tiles] - k.w2 * context - k.bias) * torch.exp(-k.log_w1)
        logabsdet = (-self.tiles * k.log_w1).expand(inputs.shape[0])
        return torch.cat([paired, inputs[:, self.tiles :]], dim=1), logabsdet


class StrideOneConv(Transform):
    """f of the stride-1 funnel: y_i = w_1 x_i + w_2 x_{i+1} + b, with x_{D-1} the context. Shapes: (N, D-1)."""

    def __init__(self, keep: int):
        super().__init__()
        self.keep = keep
        self.kernel = _KernelWidthTwo()

    def forward(self, inputs, context=None):
        k = self.kernel
        right = torch.cat([inputs[:, 1:], context], dim=1)
        outputs = torch.exp(k.log_w1) * inputs + k.w2 * right + k.bias
        return outputs, (self.keep * k.log_w1).expand(inputs.shape[0])

    def inverse(self, inputs, context=None):
        k = self.kernel
        w1 = torch.exp(k.log_w1)
        columns = [None] * self.keep
        following = context[:, 0]
        # Autoregressive: each kept coordinate needs the one to its right, so solve from the end.
        for i in reversed(range(self.keep)):
            following = (inputs[:, i] - k.w2 * following - k.bias) / w1
            columns[i] = following
        return torch.stack(columns, dim=1), (-self.keep * k.log_w1).expand(inputs.shape[0])


def conv_funnel(features: int, ansatz: nn.Module, context_features: int = 0) -> Funnel:
    """The stride-2, width-2 funnel on ``features`` ordered coordinates; ``ansatz`` models the
    ``features // 2`` dropped ones given the ``features - features // 2`` outputs (and the context c, of
    ``context_features`` columns, when there is one: the kernel itself is fixed and does not read c)."""
    tiles = features // 2
    keep = features - tiles
    evens = list(range(0, 2 * tiles, 2))
    odds = list(range(1, 2 * tiles, 2))
    leftover = [features - 1] if features % 2 else []
    order = evens + leftover + odds
    f = TileConv(keep, tiles)
    return Funnel(keep, tiles, f, ansatz, order=order, context_features=context_features, f_reads_context=False)


def conv_stride1_funnel(features: int, ansatz: nn.Module, context_features: int = 0) -> Funnel:
    """The stride-1, width-2 funnel: keeps the first ``features - 1`` coordinates' outputs, drops the last. With a
    context, as :func:`conv_funnel`: only the ansatz reads it."""
    f = StrideOneConv(features - 1)
    return Funnel(features - 1, 1, f, ansatz, context_features=context_features, f_reads_context=False)


def conv_latent_dim(features: int, kind: str) -> int:
    """The output size of a convolutional funnel of ``kind`` ("conv" or "conv-stride1") on ``features``."""
    return features - features // 2 if kind == "conv" else features - 1
