"""The principal start: every funnel begins by keeping the directions in which the rows reaching it vary most.

A funnel keeps the first k outputs of the LU map before it and drops the others. From random weights that map
is the identity, so the kept coordinates are k columns picked by the permutation, and training must first turn
them towards the data's surface before the ansatz can learn how the dropped ones follow from them. Started
here instead, the map is the linear funnel that PCA would give:

- the kept outputs span the top k principal components of the rows that reach the funnel;
- each dropped output is what the kept ones leave of it: its column less its least-squares prediction from
  them, so at the start the dropped outputs are uncorrelated with the kept ones;
- every output is centred, and none is rescaled: measured on rows near a 4-D surface in 16 columns, scaling
  the kept outputs to unit variance lost 4 nats per row at 400 steps (benchmarks/RESULTS.md).

It helps where the data lie near a gently curved surface; where the surface bends as much as it spreads, its
top components mix both and fold it, and random weights train closer. On a real table (breast cancer) it left
most latent sizes 6 to 10 nats per row worse, so no command starts this way unless asked.

Only the permutation before the map (its order) and the map's weights are set (and an ActNorm before them
starts from these rows rather than the first batch); the model is as exact as from any other weights.
docs/maths.md, section 1, states the funnel; benchmarks/RESULTS.md ("The principal start") measures what this
start gives.

The surface start (:func:`surface_start`) sets the same map, but its kept span is searched for: from the top
principal components, each kept direction is turned towards each dropped one while that lowers what a funnel
with a Gaussian ansatz would pay for the rows. Where the surface bends as much as it spreads and the principal
components fold it, it finds a span over which the surface is a graph again (benchmarks/RESULTS.md, "The
funnel's projection").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg
import torch
from nflows.transforms.base import CompositeTransform
from nflows.transforms.permutations import Permutation
from torch import nn

from funnelcli.models.flow import split_context
from funnelcli.transforms.funnel import Funnel
from funnelcli.transforms.linear import LULinear


def principal_start(model: nn.Module, rows: torch.Tensor) -> int:
    """Set the permutation and LU map before each funnel of ``model`` (a
    :class:`~funnelcli.models.flow.FunnelFlow`) from ``rows`` (N, D), training rows in the data's units (with
    their conditions, for a conditional model). Returns how many funnels were started; funnels without an LU
    map before them (the convolutional ones) are left as they are."""
    return _start_funnels(model, rows, _principal_span)


def surface_start(model: nn.Module, rows: torch.Tensor) -> int:
    """As :func:`principal_start`, but each funnel keeps the span :func:`_surface_span` finds."""
    return _start_funnels(model, rows, _surface_span)


def _start_funnels(model: nn.Module, rows: torch.Tensor, span: Callable[[np.ndarray, int], np.ndarray]) -> int:
    transform = getattr(model, "transform", None)
    if not isinstance(transform, CompositeTransform):
        return 0
    layers = list(transform._transforms)
    entries = [i for i in range(len(layers)) if _enters_funnel(layers, i)]
    if not entries:
        return 0
    with torch.no_grad():
        rows, context = split_context(model, rows)
        u = rows.to(next(model.parameters()).dtype)
        for i, layer in enumerate(layers[: entries[-1] + 1]):  # nothing after the last funnel's entry is set
            if i in entries:
                _set_principal(layer, layers[i + 1], layers[i + 2].keep, u, span)
            if i < entries[-1]:
                u, _ = layer(u, context)
    return len(entries)


def _enters_funnel(layers: list[nn.Module], i: int) -> bool:
    return (
        i + 2 < len(layers)
        and isinstance(layers[i], Permutation)
        and isinstance(layers[i + 1], LULinear)
        and isinstance(layers[i + 2], Funnel)
    )


def _set_principal(
    permutation: Permutation, lu: LULinear, keep: int, u: torch.Tensor, span: Callable[[np.ndarray, int], np.ndarray]
) -> None:
    x = u.double().cpu().numpy()
    mean = x.mean(axis=0)
    centred = x - mean
    top = span(centred, keep)
    # The k columns that pivoted QR finds most independent in that span come first, so that writing the span
    # as rows [I, C] (C = A^-1 B below) stays well conditioned.
    _, _, order = scipy.linalg.qr(top, pivoting=True)
    centred = centred[:, order]
    a, b = top[:, order[:keep]], top[:, order[keep:]]
    dim = x.shape[1]
    # W = L U with U = [[I, C], [0, I]] (kept = x_a + C x_b spans the top components) and L = [[I, 0], [E, I]]
    # (dropped = x_b + E kept, uncorrelated with the kept outputs).
    upper = np.eye(dim)
    upper[:keep, keep:] = np.linalg.solve(a, b)
    kept = centred @ upper[:keep].T
    dropped = centred[:, keep:]
    lower = np.eye(dim)
    lower[keep:, :keep] = -np.linalg.lstsq(kept, dropped, rcond=None)[0].T
    weight = lower @ upper
    dtype = lu.lower_entries.dtype
    permutation._permutation.copy_(torch.as_tensor(order, dtype=permutation._permutation.dtype))
    rows, cols = lu.lower_indices
    lu.lower_entries.copy_(torch.as_tensor(lower[rows, cols], dtype=dtype))
    rows, cols = lu.upper_indices
    lu.upper_entries.copy_(torch.as_tensor(upper[rows, cols], dtype=dtype))
    lu.unconstrained_upper_diag.fill_(float(np.log(np.expm1(1.0 - lu.eps))))  # a unit diagonal
    lu.bias.copy_(torch.as_tensor(-(weight @ mean[order]), dtype=dtype))


def _principal_span(centred: np.ndarray, keep: int) -> np.ndarray:
    """(k, D): orthonormal rows spanning the k largest principal components of the centred (N, D) rows."""
    _, vectors = np.linalg.eigh(centred.T @ centred / len(centred))
    return vectors[:, -keep:].T


#: Rows the surface start searches on (evenly spaced), neighbours per row, and the turns it tries.
_SEARCH_ROWS = 1000
_NEIGHBOURS = 10
_TURNS = [sign * np.pi / d for d in (2, 3, 4, 8, 24) for sign in (1, -1)]
_SWEEPS = 8


def _surface_span(centred: np.ndarray, keep: int) -> np.ndarray:
    """(k, D): orthonormal rows spanning the k directions over which the centred (N, D) rows are most nearly a
    function graph, searched from the top principal components.

    Coordinate descent over Givens turns between a kept and a dropped direction (turns within the kept or the
    dropped span change nothing below), for at most ``_SWEEPS`` passes over the pairs, taking the first turn of
    ``_TURNS`` that lowers :func:`_graph_cost`. Deterministic: no random draws.

    Where the rows are Gaussian (near a plane), every span costs the same with a Gaussian ansatz, and the search
    may trade a direction of the plane for a thin one on the estimate's noise (0.06 nats per row, measured): the
    likelihood is the same, the kept coordinates are less readable than the principal ones.
    """
    x = centred[:: max(1, -(-len(centred) // _SEARCH_ROWS))]
    dim = centred.shape[1]
    basis = np.linalg.eigh(centred.T @ centred)[1][:, ::-1].copy()  # columns by decreasing variance
    if keep >= dim or len(x) <= _NEIGHBOURS + 1:
        return basis[:, :keep].T
    cost = _graph_cost(x, basis, keep)
    for _ in range(_SWEEPS):
        moved = False
        for i in range(keep):
            for j in range(keep, dim):
                for angle in _TURNS:
                    turned = basis.copy()
                    c, s = np.cos(angle), np.sin(angle)
                    turned[:, i] = c * basis[:, i] + s * basis[:, j]
                    turned[:, j] = c * basis[:, j] - s * basis[:, i]
                    new = _graph_cost(x, turned, keep)
                    if new < cost - 1e-4:
                        basis, cost, moved = turned, new, True
                        break
        if not moved:
            break
    return basis[:, :keep].T


def _graph_cost(x: np.ndarray, basis: np.ndarray, keep: int) -> float:
    """Nats per row, up to a constant, that a funnel keeping ``basis[:, :keep]`` of the rows ``x`` (N, D) would
    pay with a Gaussian ansatz: the kept coordinates' entropy (the Kozachenko-Leonenko estimate, from each row's
    distance to its m-th nearest kept neighbour, itself left out) plus a Gaussian's entropy for what the dropped
    coordinates leave of their mean over those m neighbours.

    Every rotation keeps the rows' own entropy, the sum of the kept part's and the dropped part's given it; the
    second term exceeds the latter most where the kept span folds the surface, so that the dropped coordinates
    are no function of the kept ones."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma, gammaln

    kept, dropped = x @ basis[:, :keep], x @ basis[:, keep:]
    distances, near = cKDTree(kept).query(kept, k=_NEIGHBOURS + 1)
    distances, near = distances[:, 1:], near[:, 1:]
    log_ball = keep / 2 * np.log(np.pi) - gammaln(keep / 2 + 1)
    entropy = digamma(len(x)) - digamma(_NEIGHBOURS) + log_ball + keep * np.mean(np.log(distances[:, -1] + 1e-12))
    left = dropped - dropped[near].mean(axis=1)
    covariance = np.atleast_2d(np.cov(left.T)) + 1e-9 * np.eye(dropped.shape[1])
    return float(entropy + 0.5 * np.linalg.slogdet(covariance)[1])
