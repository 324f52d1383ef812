"""Tables with a known density and a known intrinsic dimension, for checking what a model or a sweep finds.

:func:`near_surface` draws rows within ``noise`` of a curved ``latent``-dimensional surface in ``dim``
dimensions, turned by a random rotation so that no column is a coordinate of the surface:

    u ~ N(0, I_k),   y = [u, h(u) + noise * e] with e ~ N(0, I_{D-k}),   x = Q y

with ``h(u) = c (sin(u A) + (u B)^2 / (2 k))`` for fixed random A, B (k x (D - k)), ``c`` the curvature (0: a
flat subspace) and Q a fixed random orthogonal
matrix. Q has determinant ±1, so the density is exact:

    log p(x) = log N(u; 0, I_k) + log N(y_rest; h(u), noise^2 I_{D-k}),   (u, y_rest) = Q^T x.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from funnelcli.errors import UserError


def near_surface(
    n_rows: int,
    dim: int,
    latent: int,
    *,
    noise: float = 0.05,
    curvature: float = 1.0,
    seed: int = 0,
    rotate: bool = True,
) -> tuple[pd.DataFrame, np.ndarray]:
    """``n_rows`` rows near a ``latent``-dimensional surface in ``dim`` columns (``x0``...), and their exact
    log-density (nats per row). The surface (A, B, Q) depends on ``dim`` and ``latent`` only; ``seed`` draws
    the rows, so tables of one shape and different seeds are train and test sets of one distribution."""
    if not 1 <= latent < dim:
        raise UserError(f"latent must lie in 1..dim - 1, got latent {latent} for dim {dim}")
    if not noise > 0:
        raise UserError(f"noise must be positive, got {noise}")
    shape = np.random.default_rng([dim, latent])
    a, b = shape.normal(size=(2, latent, dim - latent))
    q = np.linalg.qr(shape.normal(size=(dim, dim)))[0] if rotate else np.eye(dim)
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n_rows, latent))
    h = curvature * (np.sin(u @ a) + (u @ b) ** 2 / (2 * latent))
    rest = h + noise * rng.normal(size=h.shape)
    x = np.concatenate([u, rest], axis=1) @ q.T
    log_p = (
        -0.5 * (u**2).sum(axis=1)
        - 0.5 * latent * math.log(2 * math.pi)
        - 0.5 * (((rest - h) / noise) ** 2).sum(axis=1)
        - (dim - latent) * (math.log(noise) + 0.5 * math.log(2 * math.pi))
    )
    return pd.DataFrame(x, columns=[f"x{j}" for j in range(dim)]), log_p
