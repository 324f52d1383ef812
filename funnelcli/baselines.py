"""Classical density baselines: what a model's held-out log-likelihood should be read against.

Three baselines, each fitted on training rows and scored on other rows in nats per row, in the units of the
data (like the models' own scores):

- ``gaussian``: the full-covariance Gaussian (mean and covariance, ddof 1, of the training rows);
  ``D + D(D+1)/2`` parameters.
- ``gmm``: a Gaussian mixture with full covariances (scikit-learn's ``GaussianMixture``, ``reg_covar`` 1e-6 on
  standardised columns, a fixed seed), its number of components k chosen on validation rows from
  :data:`COMPONENT_LADDER`; ``k - 1 + k (D + D(D+1)/2)`` parameters.
- ``ppca-K``: probabilistic PCA with a K-dimensional latent space, 1 <= K <= D - 1 (K = D is the full
  Gaussian): what a linear reduction of that size achieves; ``D + D K - K(K-1)/2 + 1`` parameters (mean,
  loadings up to a rotation of the latent space, noise variance), which is the full Gaussian's count at
  K = D - 1.

Every baseline is fitted on columns standardised with the training rows' mean and standard deviation, and
``log(std).sum()`` is subtracted from its log-density, so that the numbers are densities of the data as given.
A constant column has no density and is refused, as are non-finite values.

>>> baselines = fit_baselines(train, validation, latent_dims=[1, 2, 3], seed=0)      # doctest: +SKIP
>>> {b.name: b.score_samples(test).mean() for b in baselines.values()}               # doctest: +SKIP

This module needs numpy and scikit-learn only (no torch).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from funnelcli.errors import UserError

#: The numbers of mixture components tried, smallest first.
COMPONENT_LADDER = (1, 2, 4, 8, 16, 32)
#: A mixture of k components is tried only when it is fitted on at least ``k * ROWS_PER_COMPONENT * (D + 1)``
#: rows (k = 1 always is), so that every component has several times more rows than dimensions.
ROWS_PER_COMPONENT = 5
#: Added to the diagonal of every mixture covariance, and the least PPCA noise variance (standardised units).
REG_COVAR = 1e-6
#: Without validation rows, this share of the training rows (seeded) is held out to choose k.
HOLDOUT_SHARE = 0.1
#: Below this many training rows (and without validation rows) the mixture has one component: no choice.
MIN_ROWS_FOR_HOLDOUT = 20
#: The ladder is climbed until this many rungs in a row fail to improve on the best validation score.
PATIENCE = 2
#: EM iterations of each mixture fit.
MAX_ITER = 200
#: A mixture is fitted on at most this many training rows (a seeded subsample of larger tables): EM's cost
#: grows with rows x k x D^2, and a million-row table would otherwise take hours to choose k.
MAX_MIXTURE_ROWS = 100_000


def gaussian_parameters(dim: int) -> int:
    """Parameters of a full-covariance Gaussian in ``dim`` dimensions: D + D(D+1)/2."""
    return dim + dim * (dim + 1) // 2


def mixture_parameters(components: int, dim: int) -> int:
    """Parameters of a mixture of ``components`` full-covariance Gaussians: k - 1 + k (D + D(D+1)/2)."""
    return components - 1 + components * gaussian_parameters(dim)


def ppca_parameters(latent_dim: int, dim: int) -> int:
    """Free parameters of probabilistic PCA: D + D K - K(K-1)/2 + 1 (Tipping and Bishop 1999, section 2.2)."""
    return dim + dim * latent_dim - latent_dim * (latent_dim - 1) // 2 + 1


@dataclass(eq=False)
class FittedBaseline:
    """A fitted baseline density.

    ``name`` ("gaussian", "gmm", "ppca-3"), ``label`` (for people), ``parameters`` (its free-parameter
    count), ``latent_dim`` (K for PPCA, None otherwise), ``details`` (e.g. the mixture's chosen
    ``components`` and the validation score of every k tried). ``mean_`` and ``scale_`` are the training
    rows' column means and standard deviations; ``density_`` scores standardised rows.
    """

    name: str
    label: str
    parameters: int
    latent_dim: int | None
    mean_: np.ndarray
    scale_: np.ndarray
    density_: Any = field(repr=False)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean_.size)

    def score_samples(self, X) -> np.ndarray:
        """log p(x) per row of ``X`` (N, D), in nats, in the units of the data; shape (N,)."""
        rows = _rows(X, "the rows to score", dim=self.dim, min_rows=0)
        if not len(rows):
            return np.empty(0)
        z = (rows - self.mean_) / self.scale_
        return np.asarray(self.density_.score_samples(z), dtype=np.float64) - np.log(self.scale_).sum()

    def score(self, X) -> float:
        """Mean log-likelihood per row of ``X``."""
        return float(np.mean(self.score_samples(X)))


class _Gaussian:
    """A full-covariance Gaussian of standardised rows (covariance with ddof 1)."""

    def fit(self, z: np.ndarray) -> _Gaussian:
        self.mean = z.mean(axis=0)
        cov = np.atleast_2d(np.cov(z, rowvar=False))
        try:
            self.cholesky = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise UserError(
                f"the covariance of the {len(z):,} training rows is singular (fewer rows than the {z.shape[1]} "
                "columns, or a column that is a linear combination of others): no Gaussian density fits them"
            ) from None
        self.log_norm = np.log(np.diag(self.cholesky)).sum() + 0.5 * z.shape[1] * math.log(2 * math.pi)
        return self

    def score_samples(self, z: np.ndarray) -> np.ndarray:
        solved = np.linalg.solve(self.cholesky, (z - self.mean).T)
        return -0.5 * (solved**2).sum(axis=0) - self.log_norm


def _column(j: int, columns: Sequence[str] | None) -> str:
    return repr(str(columns[j])) if columns is not None and j < len(columns) else f"index {j}"


def _rows(
    X, what: str, *, dim: int | None = None, min_rows: int = 2, columns: Sequence[str] | None = None
) -> np.ndarray:
    """``X`` as a float64 array (N, D), refusing another shape, too few rows and non-finite values."""
    try:
        rows = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise UserError(f"{what} are not numbers: {error}") from None
    if rows.ndim != 2 or rows.shape[1] < 1:
        raise UserError(f"{what} must be a 2-D array of shape (rows, columns), got shape {rows.shape}")
    if dim is not None and rows.shape[1] != dim:
        raise UserError(f"{what} have {rows.shape[1]} columns; the baselines were fitted on {dim}")
    if len(rows) < min_rows:
        raise UserError(f"{what} hold {len(rows)} row(s); at least {min_rows} are needed")
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=0))
    if bad.size:
        shown = ", ".join(_column(j, columns) for j in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise UserError(f"{what} hold NaN or infinite values in column(s) {shown}")
    return rows


def _columns_of(X, columns: Sequence[str] | None) -> Sequence[str] | None:
    if columns is None and hasattr(X, "columns"):
        return [str(c) for c in X.columns]
    return columns


def _standardiser(train: np.ndarray, columns: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    constant = np.flatnonzero(~(std > 0))
    if constant.size:
        shown = ", ".join(_column(j, columns) for j in constant[:5]) + (", ..." if constant.size > 5 else "")
        raise UserError(f"the training rows are constant in column(s) {shown}: a constant column has no density")
    return mean, std


class _Prepared:
    """Training (and validation) rows, checked and standardised with the training rows' statistics."""

    def __init__(self, train, validation=None, columns: Sequence[str] | None = None):
        columns = _columns_of(train, columns)
        self.train = _rows(train, "the training rows", columns=columns)
        self.dim = self.train.shape[1]
        self.mean, self.scale = _standardiser(self.train, columns)
        self.z_train = (self.train - self.mean) / self.scale
        self.z_validation = None
        if validation is not None:
            valid = _rows(validation, "the validation rows", dim=self.dim, min_rows=1, columns=columns)
            self.z_validation = (valid - self.mean) / self.scale

    def fitted(self, name, label, parameters, density, latent_dim=None, **details) -> FittedBaseline:
        return FittedBaseline(name, label, parameters, latent_dim, self.mean, self.scale, density, details)


def full_gaussian(train, *, columns: Sequence[str] | None = None) -> FittedBaseline:
    """The full-covariance Gaussian of the training rows ``train`` (N, D), N > D."""
    return _full_gaussian(_Prepared(train, columns=columns))


def _full_gaussian(data: _Prepared) -> FittedBaseline:
    density = _Gaussian().fit(data.z_train)
    return data.fitted("gaussian", "full-covariance Gaussian", gaussian_parameters(data.dim), density)


def gaussian_mixture(
    train,
    validation=None,
    *,
    components: Sequence[int] = COMPONENT_LADDER,
    seed: int = 0,
    columns: Sequence[str] | None = None,
) -> FittedBaseline:
    """A full-covariance Gaussian mixture whose number of components k is chosen on validation rows.

    The candidates are the k of ``components`` with at least ``ROWS_PER_COMPONENT * (D + 1)`` fitting rows per
    component (k = 1 is always tried), climbed from the smallest until ``PATIENCE`` (2) candidates in a row
    fail to improve on the best validation score. The rule:

    - with ``validation`` rows: every candidate is fitted on all of ``train``; the one with the highest mean
      validation log-likelihood is kept (the smaller k on a tie);
    - without: a seeded ``HOLDOUT_SHARE`` (10%) of the training rows is held out, every candidate is fitted on
      the other 90% and scored on the held-out rows, and the chosen k is then refitted on all training rows.
      Below ``MIN_ROWS_FOR_HOLDOUT`` (20) training rows, k = 1.

    Every fit uses at most ``MAX_MIXTURE_ROWS`` (100,000) rows, a seeded subsample of more.

    Each fit is scikit-learn's ``GaussianMixture(k, covariance_type="full", reg_covar=1e-6,
    random_state=seed)`` on standardised columns. A candidate whose fit fails is skipped. ``details`` holds
    ``components`` (the chosen k), ``chosen_on`` ("validation", "held-out training rows" or "too few rows")
    and ``validation_scores`` (k -> mean log-likelihood of the rows k was chosen on, standardised units).
    """
    return _gaussian_mixture(_Prepared(train, validation, columns), components, seed)


def _mixture(k: int, seed: int):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(
        n_components=k, covariance_type="full", reg_covar=REG_COVAR, max_iter=MAX_ITER, random_state=seed
    )


def fit_mixture(k: int, seed: int, z: np.ndarray):
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    # EM works component by component on D x D matrices, where BLAS threads cost far more than they gain (20x
    # slower on a busy 2-core machine), so the fit runs single-threaded.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _mixture(k, seed).fit(z)


def _at_most(rows: np.ndarray, seed: int, limit: int | None = None) -> np.ndarray:
    """``rows``, or a seeded subsample of ``limit`` (default ``MAX_MIXTURE_ROWS``) of them in their order."""
    limit = MAX_MIXTURE_ROWS if limit is None else limit
    if len(rows) <= limit:
        return rows
    return rows[np.sort(np.random.default_rng(seed).permutation(len(rows))[:limit])]


def _gaussian_mixture(data: _Prepared, components: Sequence[int], seed: int) -> FittedBaseline:
    ladder = sorted({int(k) for k in components} | {1})
    if ladder[0] < 1:
        raise UserError(f"mixture component counts must be at least 1, got {ladder[0]}")
    z = data.z_train
    if data.z_validation is not None:
        fit_rows, choice_rows, chosen_on = z, data.z_validation, "validation"
    elif len(z) >= MIN_ROWS_FOR_HOLDOUT:
        order = np.random.default_rng(seed).permutation(len(z))
        held = max(1, round(HOLDOUT_SHARE * len(z)))
        fit_rows, choice_rows, chosen_on = z[np.sort(order[held:])], z[np.sort(order[:held])], "held-out training rows"
    else:
        fit_rows, choice_rows, chosen_on = z, None, "too few rows"
    usable = min(len(fit_rows), MAX_MIXTURE_ROWS)
    candidates = [k for k in ladder if k == 1 or usable >= k * ROWS_PER_COMPONENT * (data.dim + 1)]
    if choice_rows is None:
        candidates = [1]
    scores: dict[int, float] = {}
    fits: dict[int, Any] = {}
    misses = 0
    for k in candidates:
        if misses >= PATIENCE:
            break
        try:
            fits[k] = fit_mixture(k, seed, _at_most(fit_rows, seed))
        except (ValueError, np.linalg.LinAlgError):
            misses += 1  # e.g. a component with an ill-defined covariance
            continue
        if choice_rows is not None:
            score = float(np.mean(fits[k].score_samples(choice_rows)))
            if math.isfinite(score):
                misses = 0 if not scores or score > max(scores.values()) else misses + 1
                scores[k] = score
            else:
                misses += 1
    if choice_rows is None:
        best = 1
    elif scores:
        best = max(scores, key=lambda k: (scores[k], -k))
    else:
        raise UserError("no Gaussian mixture could be fitted to the training rows")
    if best not in fits:
        raise UserError("no Gaussian mixture could be fitted to the training rows")
    density = fits[best] if fit_rows is z else fit_mixture(best, seed, _at_most(z, seed))
    where = {
        "validation": "chosen on validation",
        "held-out training rows": "chosen on held-out training rows",
        "too few rows": "too few rows to choose",
    }[chosen_on]
    return data.fitted(
        "gmm",
        f"Gaussian mixture (k={best}, {where})",
        mixture_parameters(best, data.dim),
        density,
        components=best,
        chosen_on=chosen_on,
        validation_scores=scores,
        converged=bool(getattr(density, "converged_", True)),
    )


def ppca(train, latent_dim: int, *, columns: Sequence[str] | None = None) -> FittedBaseline:
    """Probabilistic PCA of the training rows with a ``latent_dim``-dimensional latent space, 1 <= K <= D - 1.

    scikit-learn's ``PCA(n_components=K).score_samples`` on standardised columns: a Gaussian whose covariance
    is the top K principal directions plus isotropic noise (the mean of the other eigenvalues, at least 1e-6).
    """
    return _ppca(_Prepared(train, columns=columns), latent_dim)


def _check_latent_dim(latent_dim, dim: int) -> int:
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int | np.integer) or not 1 <= latent_dim < dim:
        if dim < 2:
            raise UserError(f"PPCA needs at least 2 columns (its latent size lies in 1..D-1), got {dim}")
        raise UserError(
            f"the PPCA latent size must be a whole number in 1..{dim - 1} (D - 1; D = {dim} is the full Gaussian), "
            f"got {latent_dim!r}"
        )
    return int(latent_dim)


def _ppca(data: _Prepared, latent_dim: int) -> FittedBaseline:
    from sklearn.decomposition import PCA

    k = _check_latent_dim(latent_dim, data.dim)
    if len(data.z_train) <= k:
        raise UserError(f"PPCA with latent size {k} needs more than {k} training rows, got {len(data.z_train)}")
    density = PCA(n_components=k, svd_solver="full").fit(data.z_train)
    density.noise_variance_ = max(float(density.noise_variance_), REG_COVAR)
    return data.fitted(
        f"ppca-{k}", f"probabilistic PCA, latent {k}", ppca_parameters(k, data.dim), density, latent_dim=k
    )


def fit_baselines(
    train,
    validation=None,
    latent_dims: Sequence[int] = (),
    seed: int = 0,
    *,
    columns: Sequence[str] | None = None,
) -> dict[str, FittedBaseline]:
    """Fit every baseline on ``train`` (N, D): the full Gaussian, the mixture (k chosen on ``validation``, or on
    held-out training rows without it; see :func:`gaussian_mixture`) and PPCA at each of ``latent_dims``
    (each in 1..D-1; repeats are fitted once).

    Returns the fitted baselines by name, in that order: ``{"gaussian": ..., "gmm": ..., "ppca-2": ...}``.
    ``columns`` names the columns in error messages (a DataFrame's own are used by default).
    """
    data = _Prepared(train, validation, columns)
    dims = list(dict.fromkeys(_check_latent_dim(k, data.dim) for k in latent_dims))
    fitted = [_full_gaussian(data), _gaussian_mixture(data, COMPONENT_LADDER, seed)]
    fitted += [_ppca(data, k) for k in dims]
    return {b.name: b for b in fitted}
