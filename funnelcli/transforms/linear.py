"""Invertible linear maps: an LU-parameterised matrix and a fixed random permutation.

nflows' ``LULinear`` inverts with ``torch.triangular_solve``, which torch 2.x deprecates (and will drop);
this subclass keeps its parameterisation and forward pass and inverts with ``torch.linalg.solve_triangular``.
"""

from __future__ import annotations

import torch
from nflows.transforms.lu import LULinear as _NflowsLULinear
from nflows.transforms.permutations import RandomPermutation

__all__ = ["LULinear", "RandomPermutation"]


class LULinear(_NflowsLULinear):
    """y = L U x + b with L unit lower-triangular and U upper-triangular with a positive diagonal.

    log|det dy/dx| = sum_i log U_ii, the same for every row. Shapes: (N, D) -> (N, D), logabsdet (N,).
    Initialised to the identity.
    """

    def inverse_no_cache(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower, upper = self._create_lower_upper()
        # Solve L U x = (y - b) for x, column-wise: x^T = (y - b)^T U^-T L^-T.
        rhs = (inputs - self.bias).t()
        outputs = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        outputs = torch.linalg.solve_triangular(upper, outputs, upper=True)
        logabsdet = -self.logabsdet() * inputs.new_ones(inputs.shape[0])
        return outputs.t(), logabsdet

    def weight_inverse(self) -> torch.Tensor:
        lower, upper = self._create_lower_upper()
        identity = torch.eye(self.features, dtype=lower.dtype, device=lower.device)
        lower_inverse = torch.linalg.solve_triangular(lower, identity, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, lower_inverse, upper=True)
