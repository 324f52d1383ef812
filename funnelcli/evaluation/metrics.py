"""Evaluation metrics of a density model: pure functions of numpy arrays (scikit-learn where it helps).

Every function takes plain arrays, so it can be checked against an independent computation and used on any
model's outputs, not only funnelcli's:

- :func:`mean_and_stderr` and :func:`bits_per_dim`: the held-out log-likelihood as papers report it;
- :func:`anomaly_detection` and :func:`likelihood_ratio_summary`: out-of-distribution detection with -log p
  as the score, and the paper's Table 4 (mean log-likelihood in and out of distribution, and their ratio);
- :func:`classifier_two_sample_auc` and :func:`sliced_wasserstein`: how far model samples are from data;
- :func:`wasserstein_to_standard_normal`: how far each latent coordinate is from the base N(0, 1).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from funnelcli.stats import mean_and_stderr

__all__ = [
    "anomaly_detection",
    "bits_per_dim",
    "classifier_two_sample_auc",
    "likelihood_ratio_summary",
    "mean_and_stderr",
    "sliced_wasserstein",
    "standardise_like",
    "wasserstein_1d",
    "wasserstein_to_standard_normal",
]


def bits_per_dim(mean_log_prob: float, dim: int) -> float:
    """Bits per dimension of a mean log-likelihood in nats per row of ``dim`` columns.

    bpd = -mean_log_prob / (dim * ln 2): nats become bits (divide by ln 2) and a row's total is spread over its
    ``dim`` coordinates. Lower is better. It is only as comparable as the units: a density of pixels in [0, 256)
    gives the image papers' bits per dimension; on standardised or other continuous units it can be negative.
    """
    if dim < 1:
        raise ValueError(f"the dimension must be at least 1, got {dim}")
    return -float(mean_log_prob) / (dim * math.log(2.0))


def _rankable(scores: np.ndarray) -> np.ndarray:
    """Scores with +inf/-inf replaced by finite values beyond every finite one, keeping the ranking.

    A log-likelihood of -inf (a row outside the model's support) is the most anomalous row there is; it must
    rank so, while scikit-learn refuses infinities. NaN is refused: it is not an ordering.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("the scores hold NaN; a NaN log-likelihood cannot be ranked")
    finite = scores[np.isfinite(scores)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    margin = 1.0 + (high - low)
    return np.where(scores == np.inf, high + margin, np.where(scores == -np.inf, low - margin, scores))


def anomaly_detection(log_prob_in: np.ndarray, log_prob_out: np.ndarray) -> dict[str, Any]:
    """Out-of-distribution detection with the anomaly score s(x) = -log p(x).

    The out-of-distribution rows are the positive class (label 1), the in-distribution rows the negative
    class (label 0). Returns ``auroc`` (the probability that a random OOD row scores above a random
    in-distribution row, ties counted half; 0.5 is chance, 1 perfect) and ``average_precision`` (the area under
    the precision-recall curve, whose chance level is the share of OOD rows, ``positive_share``), and the ROC
    curve as ``fpr`` and ``tpr`` arrays for plotting.

    Shapes: ``log_prob_in`` (N,), ``log_prob_out`` (M,).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    log_prob_in = np.asarray(log_prob_in, dtype=np.float64).ravel()
    log_prob_out = np.asarray(log_prob_out, dtype=np.float64).ravel()
    if log_prob_in.size == 0 or log_prob_out.size == 0:
        raise ValueError("anomaly detection needs in- and out-of-distribution rows")
    labels = np.concatenate([np.zeros(log_prob_in.size), np.ones(log_prob_out.size)])
    scores = _rankable(-np.concatenate([log_prob_in, log_prob_out]))
    fpr, tpr, _ = roc_curve(labels, scores)
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "positive_share": float(log_prob_out.size / labels.size),
        "fpr": fpr,
        "tpr": tpr,
    }


def likelihood_ratio_summary(log_prob_in: np.ndarray, log_prob_out: np.ndarray) -> dict[str, float | None]:
    """The paper's Table 4: the mean log-likelihood of in- and out-of-distribution rows and their ratio.

    ``ratio`` = mean log p(OOD) / mean log p(in). With negative log-likelihoods (the usual case for pixels), a
    ratio above 1 means the OOD rows get lower likelihood, and a larger ratio a wider separation. It is
    ``None`` when the in-distribution mean is 0, or either mean is not finite, or the two means differ in sign
    (then the ratio would not order models).
    """
    mean_in, stderr_in = mean_and_stderr(log_prob_in)
    mean_out, stderr_out = mean_and_stderr(log_prob_out)
    same_sign = mean_in * mean_out > 0
    ratio = mean_out / mean_in if same_sign and math.isfinite(mean_in) and math.isfinite(mean_out) else None
    return {
        "mean_log_prob_in": mean_in,
        "stderr_in": stderr_in,
        "mean_log_prob_out": mean_out,
        "stderr_out": stderr_out,
        "ratio": ratio,
    }


def standardise_like(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``reference`` and ``others`` with the reference's column means removed and divided by its std (ddof 0).

    Distances between tables are computed in these units, so a column measured in thousands does not outweigh
    one measured in fractions. A constant reference column is only centred. Shapes: (N, D) each.
    """
    reference = np.asarray(reference, dtype=np.float64)
    mean = reference.mean(axis=0)
    std = reference.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(np.asarray(x, dtype=np.float64) - mean) / std for x in (reference, *others)]


def classifier_two_sample_auc(
    samples: np.ndarray,
    data: np.ndarray,
    *,
    random_state: int = 0,
    folds: int = 5,
    classifier: Any = None,
) -> float:
    """Classifier two-sample test (Lopez-Paz and Oquab 2017): the cross-validated AUC of telling model samples
    from data.

    The larger of the two sets is subsampled (seeded) to the size of the smaller, samples get label 0 and data
    label 1, and a classifier (default: scikit-learn's histogram gradient boosting) is fitted in ``folds``
    stratified, shuffled folds; the AUC is computed on the out-of-fold probabilities of all rows. 0.5 means the
    classifier cannot tell samples from data; 1 means it always can. Shapes: ``samples`` (N, D), ``data`` (M, D).
    """
    from sklearn.base import clone
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    samples = np.atleast_2d(np.asarray(samples, dtype=np.float64))
    data = np.atleast_2d(np.asarray(data, dtype=np.float64))
    if samples.shape[1] != data.shape[1]:
        raise ValueError(f"samples have {samples.shape[1]} columns and data {data.shape[1]}")
    rng = np.random.default_rng(random_state)
    n = min(len(samples), len(data))
    if n < folds:
        raise ValueError(f"a {folds}-fold two-sample test needs at least {folds} rows of each, got {n}")
    # Equal class sizes, so the AUC is not tilted by a prior and both classes are used alike.
    samples = samples[rng.permutation(len(samples))[:n]]
    data = data[rng.permutation(len(data))[:n]]
    features = np.concatenate([samples, data])
    labels = np.concatenate([np.zeros(n), np.ones(n)])
    if classifier is None:
        classifier = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=random_state)
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    # One OpenMP thread: beside torch's own OpenMP runtime, on a busy machine, the threads of the gradient
    # boosting spin-wait for one another and a sub-second fit can take minutes; the sets here are small.
    with threadpool_limits(limits=1, user_api="openmp"):
        probabilities = cross_val_predict(clone(classifier), features, labels, cv=split, method="predict_proba")
    return float(roc_auc_score(labels, probabilities[:, 1]))


def wasserstein_1d(u: np.ndarray, v: np.ndarray, p: float = 1.0) -> float:
    """The exact p-Wasserstein distance between the empirical distributions of two 1-D samples.

    W_p(u, v) = (integral over t in (0, 1) of |F_u^-1(t) - F_v^-1(t)|^p dt)^(1/p), with F^-1 the empirical
    quantile functions, which are step functions from the sorted values. Between consecutive breakpoints of
    {i/n} and {j/m} both quantiles are constant, so the integral is a finite sum. Shapes: (n,) and (m,).
    """
    u = np.sort(np.asarray(u, dtype=np.float64).ravel())
    v = np.sort(np.asarray(v, dtype=np.float64).ravel())
    if u.size == 0 or v.size == 0:
        raise ValueError("the Wasserstein distance needs two non-empty samples")
    if u.size == v.size:
        return float(np.mean(np.abs(u - v) ** p) ** (1.0 / p))
    levels = np.union1d(np.arange(1, u.size + 1) / u.size, np.arange(1, v.size + 1) / v.size)
    lower = np.concatenate([[0.0], levels[:-1]])
    middle = (lower + levels) / 2  # inside each interval, away from the breakpoints' rounding
    quantile_u = u[np.minimum((middle * u.size).astype(int), u.size - 1)]
    quantile_v = v[np.minimum((middle * v.size).astype(int), v.size - 1)]
    return float(np.sum((levels - lower) * np.abs(quantile_u - quantile_v) ** p) ** (1.0 / p))


def sliced_wasserstein(
    x: np.ndarray, y: np.ndarray, *, projections: int = 200, p: float = 1.0, random_state: int = 0
) -> float:
    """The sliced p-Wasserstein distance (Bonneel et al. 2015) between two samples in R^D.

    SW_p(x, y) = (E_theta W_p^p(theta . x, theta . y))^(1/p), theta uniform on the unit sphere, estimated with
    ``projections`` directions drawn from ``random_state``; each 1-D distance is exact
    (:func:`wasserstein_1d`). Compute it on standardised columns (:func:`standardise_like`) to compare tables
    in different units. p = 1 by default: it is robust to the few far-out samples a flow can draw.
    Shapes: ``x`` (N, D), ``y`` (M, D).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    y = y[:, None] if y.ndim == 1 else y
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} columns and y {y.shape[1]}")
    directions = np.random.default_rng(random_state).normal(size=(projections, x.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    powers = [wasserstein_1d(x @ theta, y @ theta, p) ** p for theta in directions]
    return float(np.mean(powers) ** (1.0 / p))


def wasserstein_to_standard_normal(z: np.ndarray) -> np.ndarray:
    """The exact 1-Wasserstein distance of each column of ``z`` from N(0, 1), shape (k,) from (N, k).

    W_1 = integral over t in (0, 1) of |F_n^-1(t) - Phi^-1(t)| dt. On ((i-1)/n, i/n] the empirical quantile is
    the i-th smallest value a, and since G(t) = -phi(Phi^-1(t)) is an antiderivative of Phi^-1 (with
    G(0) = G(1) = 0), each piece is closed-form once split at c = Phi(a), where the sign of a - Phi^-1 changes:
    a (c - l) - (G(c) - G(l)) + (G(u) - G(c)) - a (u - c), with c clipped to [l, u]. A well-trained model's
    latent codes of held-out rows should be close to 0 in every coordinate.
    """
    from scipy.special import ndtr, ndtri

    z = np.asarray(z, dtype=np.float64)
    z = z[:, None] if z.ndim == 1 else z
    n = z.shape[0]
    if n == 0:
        raise ValueError("no rows to compare with N(0, 1)")

    def antiderivative(t: np.ndarray) -> np.ndarray:
        inner = (t > 0) & (t < 1)
        quantile = ndtri(np.where(inner, t, 0.5))
        return np.where(inner, -np.exp(-0.5 * quantile**2) / math.sqrt(2 * math.pi), 0.0)

    lower = np.arange(n)[:, None] / n
    upper = np.arange(1, n + 1)[:, None] / n
    a = np.sort(z, axis=0)
    c = np.clip(ndtr(a), lower, upper)
    g_lower, g_c, g_upper = antiderivative(lower), antiderivative(c), antiderivative(upper)
    pieces = a * (c - lower) - (g_c - g_lower) + (g_upper - g_c) - a * (upper - c)
    return pieces.sum(axis=0)
