"""The Gaussian start: a flow that begins as the full-covariance Gaussian fit of its training rows.

A flow initialised at random begins far from the data, and on a small table it overfits before it has learnt
what a single Gaussian knows: the columns' correlations. Started here instead, with validation from step 0
(the loop scores the starting weights and keeps the best), training can only move away from that Gaussian
where the validation rows agree, so the flow is never worse than the Gaussian on them.

How: every spline layer is set to the identity map (equal bins, unit derivatives), the ansatzes to the
standard normal, and the first LU map after the standardisation to the whitening W = C^-1 of the permuted,
standardised training rows, with C C^T = their covariance plus a small ridge. Then
log p(x) = log N(W u; 0, I) + log|det W| - sum log sigma = log N(x; mu, Sigma + ridge), exactly the Gaussian.

A flow with a mixture base (``model.base = "mixture"``) starts in the same place, its base set to N(0, I);
:func:`mixture_fallback` then fits the base to the whitened codes as a Gaussian mixture, with the number of
components chosen on validation rows. For a full-dimension flow this is the Gaussian mixture of the data (the
whitening is linear); for a funnel, a mixture over the kept coordinates times a standard normal over the dropped
ones. :func:`fit_base` starts a mixture base from random weights' codes instead.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from nflows.transforms.base import CompositeTransform
from torch import nn

from funnelcli.models.base import GaussianMixture
from funnelcli.models.flow import split_context
from funnelcli.transforms.ansatz import standard_normal_log_prob
from funnelcli.transforms.linear import LULinear
from funnelcli.transforms.splines import MIN_DERIVATIVE, ElementwiseRQSpline, RQAutoregressive, RQCoupling

#: Added to the standardised rows' covariance (whose diagonal is 1) so that the whitening exists on rows that
#: lie on a plane, and stays moderate near one.
RIDGE = 1e-3

#: A mixture base is fitted on at most this many evenly spaced rows: EM costs rows x K x k^2 per iteration, and
#: a start (or a fallback) a few thousand rows define well should not take minutes on a million-row table.
MIXTURE_ROWS = 20_000


# softplus(x) + MIN_DERIVATIVE = 1: the raw derivative that gives a spline unit slope at its inner knots.
_UNIT_SLOPE = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def gaussian_start(model: nn.Module, rows: torch.Tensor) -> bool:
    """Set ``model`` (a :class:`~funnelcli.models.flow.FunnelFlow`) to the Gaussian fit of ``rows`` (N, D), training
    rows in the data's units (the model standardises them). True when the model is now that Gaussian.

    A conditional model's rows carry their conditions ([x, c], :func:`~funnelcli.models.flow.split_context`): its
    splines, set to the identity for every c, make it the Gaussian of x whatever c is, a start that training
    must improve on by using c.

    Whether it is, is checked on ``rows``: spline flows (``nsf``, ``f-nsf``) are; Glow's ActNorm and affine
    couplings, F-MLP's layers and the VAE do not start at the identity, so for them the answer is False (their
    splines are set to the identity all the same).
    """
    transform = getattr(model, "transform", None)
    if not isinstance(transform, CompositeTransform):
        return False
    with torch.no_grad():
        for module in model.modules():
            _identity_spline(module)
        if isinstance(getattr(model, "base", None), GaussianMixture):
            model.base.set_standard_normal_()
        rows, context = split_context(model, rows)
        u = rows.to(next(model.parameters()).dtype)
        before = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)  # log-dets of the layers before the LU
        for layer in transform._transforms:
            if isinstance(layer, LULinear):
                z = _whiten(layer, u)
                expected = standard_normal_log_prob(z) + layer.logabsdet() + before
                return _agrees(model, rows, context, expected)
            if any(True for _ in layer.parameters()):
                return False  # a learned layer before any LU map: the rows it would whiten are not known here
            u, logabsdet = layer(u)
            before = before + logabsdet
        return False


def _agrees(model: nn.Module, rows: torch.Tensor, context: torch.Tensor | None, expected: torch.Tensor) -> bool:
    was_training = model.training
    model.eval()  # as the model is scored: no dropout
    args = (rows,) if context is None else (rows, context)
    try:
        return bool(torch.allclose(model.log_prob(*args), expected.to(rows.dtype), rtol=1e-4, atol=1e-3))
    finally:
        model.train(was_training)


def _identity_spline(module: nn.Module) -> None:
    """Zero a spline network's last layer and set its derivative outputs to unit slope: the identity map."""
    if isinstance(module, RQCoupling):
        last, bins = module.transform_net.final_layer, module.num_bins
    elif isinstance(module, RQAutoregressive):
        last, bins = module.autoregressive_net.final_layer, module.num_bins
    elif isinstance(module, ElementwiseRQSpline):
        last = module.net.final_layer if module.net is not None else None
        bins = module.settings.bins
        if last is None:
            module.free_params.view(-1, 3 * bins - 1)[:, 2 * bins :] = _UNIT_SLOPE
            return
    else:
        return
    last.weight.zero_()
    last.bias.view(-1, 3 * bins - 1).zero_()
    last.bias.view(-1, 3 * bins - 1)[:, 2 * bins :] = _UNIT_SLOPE


def _whiten(layer: LULinear, u: torch.Tensor) -> torch.Tensor:
    """Set y = L U (u - m) with L U = C^-1, C the Cholesky factor of u's covariance plus the ridge; return y."""
    dtype, u = u.dtype, u.double()
    mean = u.mean(dim=0)
    centred = u - mean
    covariance = centred.T @ centred / u.shape[0] + RIDGE * torch.eye(u.shape[1], dtype=u.dtype)
    chol = torch.linalg.cholesky(covariance)
    whitening = torch.linalg.solve_triangular(chol, torch.eye(u.shape[1], dtype=u.dtype), upper=False)
    # A lower-triangular W = (W D^-1) D: a unit lower-triangular L and a diagonal U = D.
    diagonal = torch.diagonal(whitening)
    lower = whitening / diagonal
    rows, cols = layer.lower_indices
    layer.lower_entries.copy_(lower[rows, cols])
    layer.upper_entries.zero_()
    layer.unconstrained_upper_diag.copy_(torch.log(torch.expm1(diagonal - layer.eps)))
    layer.bias.copy_(-(whitening @ mean))
    return (centred @ whitening.T).to(dtype)


def fit_base(model: nn.Module, rows: torch.Tensor, seed: int) -> None:
    """Fit a mixture base (if ``model`` has one) to the codes z = T(x) of ``rows`` under the current weights: every
    component starts on a group of the rows rather than all on one blob, so training has nothing to untangle."""
    base = getattr(model, "base", None)
    if not isinstance(base, GaussianMixture):
        return
    codes = _codes(model, rows)
    _set_mixture(base, _mixture_fit(codes, _most_components(base, codes.shape[0]), seed))


def mixture_fallback(model: nn.Module, rows: torch.Tensor, validation: torch.Tensor, seed: int) -> None:
    """Fit the mixture base of ``model`` (set by :func:`gaussian_start`) to the codes of ``rows`` as a mixture of
    1, 2, 4, ... up to its K components, choosing the number by the codes of ``validation`` (scored in the same
    space: the layers' log-determinant is the same for every candidate). One component is the Gaussian start."""
    from funnelcli.baselines import COMPONENT_LADDER

    base = getattr(model, "base", None)
    if not isinstance(base, GaussianMixture) or validation.shape[0] == 0:
        return
    codes, held_out = _codes(model, rows), _codes(model, validation)
    best, best_score = None, -math.inf
    for components in (m for m in COMPONENT_LADDER if m <= _most_components(base, codes.shape[0])):
        fitted = _mixture_fit(codes, components, seed)
        if fitted is not None and (score := float(np.mean(fitted.score_samples(held_out)))) > best_score:
            best, best_score = fitted, score
    _set_mixture(base, best)


def _codes(model: nn.Module, rows: torch.Tensor) -> np.ndarray:
    rows = rows[:: max(1, -(-rows.shape[0] // MIXTURE_ROWS))]
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    x, context = split_context(model, rows.to(dtype))
    try:
        with torch.no_grad():
            return model.encode(*((x,) if context is None else (x, context))).double().cpu().numpy()
    finally:
        model.train(was_training)


def _most_components(base: GaussianMixture, rows: int) -> int:
    """As many components as the base has, and each with several rows per dimension (as the mixture baseline)."""
    from funnelcli.baselines import ROWS_PER_COMPONENT

    return max(1, min(base.components, rows // (ROWS_PER_COMPONENT * (base.features + 1))))


def _mixture_fit(codes: np.ndarray, components: int, seed: int):
    from funnelcli.baselines import fit_mixture

    if not np.isfinite(codes).all():
        return None
    try:
        return fit_mixture(components, seed, codes)
    except (ValueError, np.linalg.LinAlgError):  # EM can fail on degenerate codes; the base is then left as it is
        return None


def _set_mixture(base: GaussianMixture, fitted) -> None:
    if fitted is not None:
        base.set_(fitted.weights_, fitted.means_, fitted.covariances_)
