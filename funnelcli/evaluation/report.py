"""Evaluating a fitted model, comparing models, and the HTML report.

- :func:`evaluate` scores held-out rows (and optionally out-of-distribution rows) with a fitted estimator and
  computes every metric of :mod:`funnelcli.evaluation.metrics`; it returns an :class:`Evaluation` whose
  ``metrics`` is one JSON-able dict.
- :func:`write_report` turns an evaluation into PNG figures and an ``index.html`` that shows them with the
  metrics.
- A model whose columns are the pixels of an image (:func:`image_shape`) adds a grid of samples and a grid of
  held-out rows beside their reconstructions decode(encode(x)), drawn as images.
- :func:`compare_row` and :func:`format_comparison` make the paper's Table 1: a row per model.
- What people read (the terminal, the page, the table) shows ``stderr_multiple`` standard errors after each
  "±" and names them (:func:`error_bar_label`); the MAF, NSF and funnel papers print 2. The metrics keep the
  raw standard error, and :func:`error_bars` says in JSON which multiple the printed numbers carry.
- :func:`fit_model_baselines`, :func:`baseline_summaries` and :func:`with_baselines` put the classical
  baselines of :mod:`funnelcli.baselines` (full Gaussian, Gaussian mixture, PPCA) beside a model, fitted on
  training rows in the model's columns.

The estimator (a fitted or loaded :class:`~funnelcli.estimator.FunnelDensity`) is used through its public
methods and attributes only (``score_samples``, ``transform``, ``sample``, ``columns_``, ``latent_dim_``,
``history_``, ``is_bound_``; a loaded one's ``metadata_`` read as a
:class:`~funnelcli.model_metadata.ModelMetadata`), so this module never imports torch. A model whose scores are
lower bounds rather than exact likelihoods (``is_bound_``, from its :class:`~funnelcli.models.contract.DensityModel`)
has its numbers labelled as a bound.
"""

from __future__ import annotations

import html
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from funnelcli._version import __version__
from funnelcli.atomic import temporary_folder
from funnelcli.errors import Refused, UserError
from funnelcli.evaluation import metrics as m
from funnelcli.model_metadata import ModelMetadata
from funnelcli.models.contract import count_parameters
from funnelcli.strict_json import json_safe

if TYPE_CHECKING:
    from funnelcli.estimator import FunnelDensity

log = logging.getLogger("funnelcli")

#: The temperatures of the report's sample figure.
TEMPERATURES = (0.5, 0.75, 1.0)
#: At most this many rows of data and samples go into the two-sample scores and the figures.
MAX_COMPARED_ROWS = 5000
#: Random directions of the sliced Wasserstein distance.
PROJECTIONS = 200
#: The seed of the dequantization noise a model adds to the rows it scores (``funnelcli.estimator``'s
#: ``SCORE_NOISE_SEED``, repeated here so that this module needs no torch): baselines score the same points.
SCORE_NOISE_SEED = 0
#: The seed of the baselines' mixture and held-out rows; their training rows' dequantization noise uses the next.
BASELINE_SEED = 0

INDEX = "index.html"
#: The page's ``generator``, by which a folder is recognised as a report that funnelcli wrote (and may replace).
GENERATOR = "funnelcli-report"
FIGURES = {
    "training": "training.png",
    "columns": "columns.png",
    "corner": "corner.png",
    "latent": "latent.png",
    "temperatures": "temperatures.png",
    "ood_log_prob": "ood_log_prob.png",
    "roc": "roc.png",
    "image_samples": "image_samples.png",
    "reconstructions": "reconstructions.png",
}
#: The figures only a model with an image shape draws (see :func:`image_shape`).
IMAGE_FIGURES = ("image_samples", "reconstructions")
#: A model with an image shape (``model.image_shape``) draws its samples and reconstructions as images, this many
#: to a row of a square grid (IMAGE_COLUMNS squared of each, fewer when the test data have fewer rows).
IMAGE_COLUMNS = 8


def is_bound(estimator: FunnelDensity) -> bool:
    """Whether the estimator reports a lower bound (a VAE's ELBO) instead of an exact log-likelihood."""
    return bool(estimator.is_bound_)


def input_columns(estimator: FunnelDensity) -> list[str]:
    """The columns a table must have for ``estimator``: its training input, constant columns included."""
    names = getattr(estimator, "feature_names_in_", None)
    return [str(c) for c in (names if names is not None else estimator.columns_)]


def _saved_metadata(estimator: FunnelDensity) -> ModelMetadata | None:
    """The ``model.json`` of a loaded model's folder; None for a model fitted in this process."""
    document = getattr(estimator, "metadata_", None)  # only a loaded estimator has one
    return ModelMetadata.from_dict(document) if document else None


def parameter_count(estimator: FunnelDensity) -> int:
    """The model's parameter count, from its folder's metadata or by counting."""
    saved = _saved_metadata(estimator)
    return int(saved.parameters) if saved is not None else count_parameters(estimator.model_)


def recipe_name(estimator: FunnelDensity) -> str | None:
    saved = _saved_metadata(estimator)
    return (saved.recipe_name if saved is not None else None) or estimator.recipe_.name


def family_name(estimator: FunnelDensity) -> str | None:
    saved = _saved_metadata(estimator)
    return estimator.recipe_.family or (saved.family if saved is not None else None)


def image_shape(estimator: FunnelDensity) -> tuple[int, int, int] | None:
    """(H, W, C) of the images whose pixels the model's columns are: its recipe's ``model.image_shape``, or an image
    family's square one-channel default; None for a tabular model (or a shape that no longer fits the columns)."""
    from funnelcli.models.image_plan import image_shape_for
    from funnelcli.models.registry import FAMILIES

    recipe = estimator.recipe_
    shape = tuple(getattr(recipe.model, "image_shape", ()) or ())
    family = FAMILIES.get(recipe.family)
    if not shape and not (family is not None and family.image):
        return None
    try:
        funnel = family is not None and family.image and family.has_funnel  # one value short: f-nsf-image
        return image_shape_for(shape, len(estimator.columns_), recipe.family, funnel=funnel)
    except UserError:
        return None


def modelled_values(estimator: FunnelDensity, table: pd.DataFrame | np.ndarray) -> np.ndarray:
    """The rows of ``table`` restricted to the modelled columns, in the model's order, shape (N, D).

    These are the values that model samples (in the same columns) are compared with. A DataFrame's columns are
    matched by name, an array's by position (constant columns left out at training are skipped).
    """
    if isinstance(table, pd.DataFrame):
        missing = [c for c in estimator.columns_ if c not in table.columns]
        if missing:
            raise UserError(f"the data lack the model's column(s) {', '.join(repr(c) for c in missing)}")
        return table[estimator.columns_].to_numpy(dtype=np.float64)
    names = input_columns(estimator)
    return np.asarray(table, dtype=np.float64)[:, [names.index(c) for c in estimator.columns_]]


def _finite_rows(values: np.ndarray, what: str) -> np.ndarray:
    keep = np.isfinite(values).all(axis=1)
    if not keep.all():
        log.warning("%d of %d %s are not finite and are left out of the comparisons", (~keep).sum(), len(keep), what)
    return values[keep]


def _subsample(values: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(values) <= limit:
        return values
    return values[np.sort(np.random.default_rng(seed).permutation(len(values))[:limit])]


def error_bar_label(stderr_multiple: float = 1) -> str:
    """How the printed error bars are named: ``"± 1 standard error"``, ``"± 2 standard errors"``."""
    k = _checked_multiple(stderr_multiple)
    return f"± {k:g} standard error{'' if k == 1 else 's'}"


def error_bars(stderr_multiple: float = 1) -> dict[str, Any]:
    """Which error bars the printed numbers carry, for a JSON document beside the raw ``stderr``:
    ``{"name": "2se", "multiple": 2}``."""
    k = _checked_multiple(stderr_multiple)
    return {"name": f"{k:g}se", "multiple": k}


def _checked_multiple(stderr_multiple: float) -> float:
    if isinstance(stderr_multiple, bool) or not isinstance(stderr_multiple, int | float):
        raise TypeError(f"stderr_multiple must be a number, got {type(stderr_multiple).__name__}")
    if not (math.isfinite(stderr_multiple) and stderr_multiple > 0):
        raise ValueError(f"stderr_multiple must be a positive finite number, got {stderr_multiple}")
    return stderr_multiple


def _error_bar(stderr: float | None, stderr_multiple: float) -> float | None:
    """The half-width printed after "±": ``stderr_multiple`` standard errors."""
    return None if stderr is None else stderr * stderr_multiple


@dataclass
class Evaluation:
    """What :func:`evaluate` computed: the metrics and the arrays the report's figures are drawn from.

    Shapes: ``data`` (N, D) held-out rows in the modelled columns, ``log_prob`` (N,), ``samples`` (M, D) model
    samples at temperature 1, ``latent`` (N, k) encoded held-out rows, ``latent_distances`` (k,),
    ``ood_log_prob`` (N_ood,) or None, ``roc`` the (fpr, tpr) arrays of the OOD ROC curve or None.
    """

    metrics: dict[str, Any]
    columns: list[str]
    data: np.ndarray
    log_prob: np.ndarray
    samples: np.ndarray
    latent: np.ndarray
    latent_distances: np.ndarray
    history: list[dict] = field(default_factory=list)
    ood_log_prob: np.ndarray | None = None
    roc: tuple[np.ndarray, np.ndarray] | None = None
    bound: bool = False

    def to_json(self) -> dict[str, Any]:
        """The metrics as a JSON-able dict (non-finite numbers as ``None``)."""
        return json_safe(self.metrics)


def evaluate(
    estimator: FunnelDensity,
    test: pd.DataFrame | np.ndarray,
    ood: pd.DataFrame | np.ndarray | None = None,
    *,
    random_state: int = 0,
    two_sample: bool = True,
    name: str | None = None,
    baselines: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Evaluate a fitted density estimator on held-out rows ``test`` (and out-of-distribution rows ``ood``).

    ``metrics`` holds:

    - ``rows``, ``mean_log_prob`` and ``stderr`` (nats per row, mean and standard error), ``bits_per_dim``
      (-mean / (D ln 2)), ``input_dim`` D, ``latent_dim`` k, ``parameters``;
    - ``two_sample``: the classifier two-sample AUC and the sliced 1-Wasserstein distance between model
      samples and the held-out rows (as many samples as rows, at most 5000, in the held-out rows' standardised
      units), drawn with ``random_state``;
    - ``latent_wasserstein``: the 1-Wasserstein distance of each latent coordinate of the held-out rows from
      N(0, 1), with their mean and maximum;
    - with ``ood``: ``ood`` holds the anomaly-detection AUROC and average precision (score -log p, OOD rows
      positive) and the Table 4 means and ratio;
    - ``bound``: true for a model that reports a lower bound (the key is absent otherwise);
    - with ``baselines`` (fitted baselines by name, from :func:`fit_model_baselines`): ``baselines``, a list of
      their test scores (:func:`baseline_summaries`), and ``gain_over_ppca``, the model's mean test
      log-likelihood minus that of PPCA at the model's latent size (None without such a PPCA: latent size D).
    """
    columns = list(estimator.columns_)
    log_prob = np.asarray(estimator.score_samples(test), dtype=np.float64)
    data = modelled_values(estimator, test)
    metrics = _likelihood_metrics(estimator, test, log_prob, name=name, baselines=baselines)
    compared = _subsample(_finite_rows(data, "held-out rows"), MAX_COMPARED_ROWS, random_state)
    samples = _model_samples(estimator, len(compared), len(columns), random_state)
    if two_sample and len(compared) >= 5 and len(samples) >= 5:
        metrics["two_sample"] = _two_sample(compared, samples, random_state)
    latent = _finite_rows(np.asarray(estimator.transform(test), dtype=np.float64), "latent codes")
    distances = m.wasserstein_to_standard_normal(latent) if len(latent) else np.full(latent.shape[1], np.nan)
    metrics["latent_wasserstein"] = {
        "mean": float(np.mean(distances)),
        "max": float(np.max(distances)),
        "per_coordinate": [float(d) for d in distances],
    }
    ood_log_prob = roc = None
    if ood is not None:
        ood_log_prob = np.asarray(estimator.score_samples(ood), dtype=np.float64)
        metrics["ood"], roc = _ood_metrics(log_prob, ood_log_prob)
    return Evaluation(
        metrics=metrics,
        columns=columns,
        data=compared,
        log_prob=log_prob,
        samples=samples,
        latent=latent,
        latent_distances=distances,
        history=list(estimator.history_ or []),
        ood_log_prob=ood_log_prob,
        roc=roc,
        bound=is_bound(estimator),
    )


def _likelihood_metrics(
    estimator: FunnelDensity,
    test: pd.DataFrame | np.ndarray,
    log_prob: np.ndarray,
    *,
    name: str | None,
    baselines: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The test log-likelihood's metrics (see :func:`evaluate`), with the baselines' scores when given."""
    metrics = _likelihood_summary(name, estimator, log_prob)
    metrics["bits_per_dim"] = m.bits_per_dim(metrics["mean_log_prob"], len(estimator.columns_))
    nonfinite = int(np.sum(~np.isfinite(log_prob)))
    if nonfinite:
        metrics["nonfinite_rows"] = nonfinite
    dequantized = list(estimator.dequantized_columns_)
    if dequantized:
        metrics["dequantized_columns"] = dequantized
    if baselines is not None:
        metrics["baselines"] = baseline_summaries(baselines, estimator, test)
        metrics["gain_over_ppca"] = gain_over_ppca(
            metrics["mean_log_prob"], metrics["latent_dim"], metrics["baselines"]
        )
    return metrics


def _model_samples(estimator: FunnelDensity, count: int, dim: int, random_state: int) -> np.ndarray:
    """``count`` finite model samples, (count, dim); none asked for when no held-out row is finite."""
    if not count:
        return np.empty((0, dim))
    return _finite_rows(np.asarray(estimator.sample(count, random_state=random_state), float), "model samples")


def _two_sample(compared: np.ndarray, samples: np.ndarray, random_state: int) -> dict[str, Any]:
    """The classifier two-sample AUC and the sliced 1-Wasserstein distance, in the held-out rows' units."""
    reference, scaled_samples = m.standardise_like(compared, samples)
    return {
        "rows": int(min(len(compared), len(samples))),
        "classifier_auc": m.classifier_two_sample_auc(samples, compared, random_state=random_state),
        "sliced_wasserstein": m.sliced_wasserstein(
            scaled_samples, reference, projections=PROJECTIONS, random_state=random_state
        ),
    }


def _ood_metrics(
    log_prob: np.ndarray, ood_log_prob: np.ndarray
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """Anomaly detection of the OOD rows by -log p and the Table 4 summary; with the ROC curve's (fpr, tpr)."""
    if np.isnan(log_prob).any() or np.isnan(ood_log_prob).any():
        raise Refused(
            "the model gives NaN log-likelihoods to some rows, which cannot be ranked as anomaly scores",
            "retrain the model (a lower {lr}), or leave out {ood}",
        )
    detection = m.anomaly_detection(log_prob, ood_log_prob)
    table4 = m.likelihood_ratio_summary(log_prob, ood_log_prob)
    metrics = {
        "rows": len(ood_log_prob),
        "auroc": detection["auroc"],
        "average_precision": detection["average_precision"],
        "positive_share": detection["positive_share"],
        **table4,
    }
    return metrics, (detection["fpr"], detection["tpr"])


# ------------------------------------------------------------------------------------------------- the report


def check_report_folder(folder: str | Path, *, overwrite: bool = False, inputs: Sequence[str | Path] = ()) -> Path:
    """Refuse, before any work is done, a missing matplotlib or a report folder that may not be written: one
    holding anything but an earlier report (whatever ``overwrite`` says), an earlier report without
    ``overwrite``, a file, or a path that is, holds or lies inside one of ``inputs``."""
    from funnelcli import outputs
    from funnelcli.evaluation.plots import require_matplotlib

    require_matplotlib()
    folder = Path(folder)
    outputs.check_output_folder(folder, outputs.REPORT, overwrite=overwrite, inputs=inputs, flag="report folder")
    return folder


def is_report_page(path: str | Path) -> bool:
    """Whether ``path`` is the ``index.html`` of a report that funnelcli wrote."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(1 << 20)
    except OSError:
        return False
    return f'content="{GENERATOR}"' in head or "Made by funnelcli" in head


def write_report(
    folder: str | Path,
    estimator: FunnelDensity,
    evaluation: Evaluation,
    *,
    overwrite: bool = False,
    random_state: int = 0,
    title: str | None = None,
    test_name: str = "test",
    ood_name: str = "OOD",
    stderr_multiple: float = 1,
) -> Path:
    """Write the report's PNG figures and ``index.html`` into ``folder``; return the path of ``index.html``.

    The page's table shows ``stderr_multiple`` standard errors after each "±" (see :func:`metric_rows`).

    The whole report is first made in a hidden staging folder beside ``folder``; only when every figure and the
    page exist are they renamed into place, ``index.html`` last. A report that fails part-way (a plot that
    raises, a full disk, Ctrl-C) leaves ``folder`` as it was. An earlier report in ``folder`` is replaced only
    with ``overwrite`` (the figures this report does not make, such as the OOD figures of an earlier run, are
    removed); a folder holding anything else is refused. ``estimator`` draws the samples at each temperature.
    """
    from funnelcli.evaluation import plots

    _checked_multiple(stderr_multiple)
    folder = check_report_folder(folder, overwrite=overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temperature_samples = _temperature_samples(estimator, len(evaluation.data), random_state)
    figures = _figure_makers(evaluation, temperature_samples, test_name=test_name, ood_name=ood_name)
    figures.update(_image_figure_makers(estimator, evaluation))
    # Not funnelcli.atomic.staged_folder: the report goes into the folder, which is kept (it may be one the user
    # made, with its own mode, or the current folder), and only the report's own files in it are replaced.
    with temporary_folder(folder.parent, f".{folder.name}.report-") as staging:
        for key, make in figures.items():
            plots.save_png(make(), staging / FIGURES[key])
        page = _html(
            evaluation,
            title=title,
            test_name=test_name,
            ood_name=ood_name,
            shown=list(figures),
            stderr_multiple=stderr_multiple,
        )
        (staging / INDEX).write_text(page, encoding="utf-8")
        _move_into(staging, folder, shown=list(figures))
    return folder / INDEX


def _temperature_samples(estimator: FunnelDensity, count: int, random_state: int) -> dict[float, np.ndarray]:
    """``count`` finite model samples at each of :data:`TEMPERATURES`, each drawn with its own seed."""
    return {
        t: _finite_rows(
            np.asarray(estimator.sample(count, random_state=random_state + i, temperature=t), dtype=np.float64),
            f"samples at temperature {t}",
        )
        for i, t in enumerate(TEMPERATURES)
    }


def _figure_makers(
    evaluation: Evaluation, temperature_samples: dict[float, np.ndarray], *, test_name: str, ood_name: str
) -> dict[str, Callable[[], Any]]:
    """The report's figures by key (see :data:`FIGURES`), each drawn only when called; the OOD ones with OOD rows."""
    from funnelcli.evaluation import plots

    bound = evaluation.bound
    figures = {
        "training": lambda: plots.training_curves(evaluation.history, bound=bound),
        "columns": lambda: plots.column_histograms(evaluation.data, evaluation.samples, evaluation.columns),
        "corner": lambda: plots.corner_plot(evaluation.data, evaluation.samples, evaluation.columns),
        "latent": lambda: plots.latent_histograms(evaluation.latent, evaluation.latent_distances, bound=bound),
        "temperatures": lambda: plots.temperature_samples(evaluation.data, temperature_samples),
    }
    if evaluation.ood_log_prob is not None:
        auroc = evaluation.metrics["ood"]["auroc"]
        figures["ood_log_prob"] = lambda: plots.log_likelihood_histograms(
            evaluation.log_prob, evaluation.ood_log_prob, bound=bound, labels=(test_name, ood_name)
        )
        figures["roc"] = lambda: plots.roc_curve_figure(*evaluation.roc, auroc, bound=bound)
    return figures


def _image_figure_makers(estimator: FunnelDensity, evaluation: Evaluation) -> dict[str, Callable[[], Any]]:
    """The sample grid and the reconstruction grid of a model with an image shape (none for a tabular one).

    Up to IMAGE_COLUMNS^2 held-out rows x are shown beside decode(encode(x)) (``inverse_transform(transform(x),
    mean=True)``: a funnel's dropped pixels set to its ansatz's centre), and as many of the evaluation's samples.
    A pixel model's rows are shown in its units (reduced from ``source_bits``) on [0, 2^bits - 1]; any other's
    on the held-out rows' range.
    """
    from funnelcli.evaluation import plots

    shape = image_shape(estimator)
    if shape is None or not len(evaluation.data):
        return {}
    count = IMAGE_COLUMNS**2
    rows = pd.DataFrame(evaluation.data[:count], columns=list(estimator.columns_))
    bits = getattr(estimator, "bits", None)
    if bits is not None:
        from funnelcli.preparation import pixel_values

        value_range = (0.0, float(2**bits - 1))
        shown = pixel_values(rows, bits, getattr(estimator, "source_bits", None)).to_numpy()
    else:
        value_range = (float(np.min(evaluation.data)), float(np.max(evaluation.data)))
        shown = rows.to_numpy()
    given = rows if getattr(estimator, "feature_names_in_", None) is not None else rows.to_numpy()
    decoded = np.asarray(estimator.inverse_transform(estimator.transform(given), mean=True), dtype=np.float64)
    samples = evaluation.samples[:count]
    return {
        "image_samples": lambda: plots.image_grid(
            {"model samples, T = 1": samples}, shape, value_range, columns=IMAGE_COLUMNS
        ),
        "reconstructions": lambda: plots.image_grid(
            {"held-out rows x": shown, "decode(encode(x))": decoded}, shape, value_range, columns=IMAGE_COLUMNS
        ),
    }


def _move_into(staging: Path, folder: Path, *, shown: list[str]) -> None:
    """Rename the staged report into ``folder``, ``index.html`` last, so that a page never links a missing
    figure; an earlier report's figures that this one does not make are removed."""
    folder.mkdir(exist_ok=True)
    for key in shown:
        os.replace(staging / FIGURES[key], folder / FIGURES[key])
    for key, name in FIGURES.items():
        if key not in shown:
            (folder / name).unlink(missing_ok=True)
    os.replace(staging / INDEX, folder / INDEX)


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def metric_rows(metrics: dict[str, Any], *, stderr_multiple: float = 1) -> list[tuple[str, str]]:
    """(name, value) pairs of the metrics, worded for people; shared by the HTML page and the terminal.

    Each "±" is followed by ``stderr_multiple`` standard errors (``metrics["stderr"]`` times it), and the
    log-likelihood's row names them: ``-3.1 ± 0.2 (± 2 standard errors)``.
    """
    bound = metrics.get("bound", False)
    what = "ELBO (lower bound)" if bound else "log-likelihood"
    label = error_bar_label(stderr_multiple)

    def plus_minus(summary: Mapping[str, Any]) -> str:
        return f"{_number(summary['mean_log_prob'])} ± {_number(_error_bar(summary['stderr'], stderr_multiple))}"

    rows = [
        (f"test {what}, nats/row", f"{plus_minus(metrics)} ({label})"),
        (
            "bits per dimension"
            + (f" ({metrics['bits']}-bit pixels)" if metrics.get("bits") is not None else "")
            + (" (bound)" if bound else ""),
            _number(metrics["bits_per_dim"]),
        ),
        ("test rows", _number(metrics["rows"])),
        ("dimensions", f"{metrics['input_dim']} -> {metrics['latent_dim']} (latent size)"),
        ("parameters", _number(metrics["parameters"])),
    ]
    if "baselines" in metrics:
        rows += _baseline_rows(metrics["baselines"], metrics.get("gain_over_ppca"), plus_minus)
    if metrics.get("nonfinite_rows"):
        rows.append(("rows with non-finite log-likelihood", _number(metrics["nonfinite_rows"])))
    two = metrics.get("two_sample")
    if two:
        rows.append(("classifier two-sample AUC (0.5: samples look like data)", _number(two["classifier_auc"], 3)))
        rows.append(("sliced Wasserstein-1, samples vs test (standardised)", _number(two["sliced_wasserstein"], 3)))
    latent = metrics["latent_wasserstein"]
    rows.append(
        ("latent Wasserstein-1 to N(0, 1), mean / max", f"{_number(latent['mean'], 3)} / {_number(latent['max'], 3)}")
    )
    ood = metrics.get("ood")
    if ood:
        rows += _ood_rows(ood, what)
    dequantized = metrics.get("dequantized_columns")
    if dequantized:
        shown = ", ".join(dequantized[:4]) + (", ..." if len(dequantized) > 4 else "")
        rows.append(("dequantized (integer) columns, scored as x + U[0, 1)", f"{len(dequantized)}: {shown}"))
    return rows


def _baseline_rows(
    baselines: Sequence[Mapping[str, Any]], gain: float | None, plus_minus: Callable[[Mapping[str, Any]], str]
) -> list[tuple[str, str]]:
    """A row per baseline's test score, then the model's gain over PPCA of its latent size."""
    rows = [
        (
            f"baseline: {baseline['label']}, nats/row",
            f"{plus_minus(baseline)} ({_number(baseline['parameters'])} parameters)",
        )
        for baseline in baselines
    ]
    rows.append(
        (
            "gain over PPCA of the same latent size, nats/row",
            "– (the latent size is the dimension)" if gain is None else f"{gain:+.4f}",
        )
    )
    return rows


def _ood_rows(ood: Mapping[str, Any], what: str) -> list[tuple[str, str]]:
    """The anomaly-detection rows: AUROC, average precision and the Table 4 means and ratio."""
    return [
        ("OOD rows", _number(ood["rows"])),
        ("anomaly AUROC (score -log p, OOD positive)", _number(ood["auroc"], 3)),
        (f"anomaly average precision (chance {ood['positive_share']:.3f})", _number(ood["average_precision"], 3)),
        (
            f"mean {what}: test / OOD",
            f"{_number(ood['mean_log_prob_in'], 2)} / {_number(ood['mean_log_prob_out'], 2)}",
        ),
        ("ratio OOD / test (Table 4)", _number(ood["ratio"], 3)),
    ]


_CAPTIONS = {
    "training": "Training curve: mean train and validation log-likelihood at each validation pass. The model "
    "keeps the weights of the best validation pass (dotted line).",
    "columns": "Each column of the held-out rows (filled) against as many model samples (line), as densities.",
    "corner": "Corner plot of the first columns: pairwise 2-D histograms below the diagonal and 1-D histograms "
    "on it; held-out data on the left, model samples on the right, on the same ranges.",
    "latent": "Latent codes of the held-out rows, one histogram per coordinate, against the N(0, 1) base density; "
    "the title gives each coordinate's 1-Wasserstein distance from N(0, 1).",
    "temperatures": "Model samples at temperatures 0.5, 0.75 and 1 (the base standard deviation scaled by T) "
    "beside the held-out rows, projected on the held-out rows' first two principal components.",
    "ood_log_prob": "Per-row log-likelihood of the held-out rows and of the out-of-distribution rows.",
    "roc": "ROC curve of anomaly detection with -log p as the score, out-of-distribution rows positive.",
    "image_samples": "Model samples drawn as images (pixel rows in row-major order).",
    "reconstructions": "Held-out rows as images (left) and, at the same place on the right, each decoded from its "
    "latent code, decode(encode(x)), with a funnel's dropped pixels at its ansatz's centre.",
}


#: The page's layout: the training curve sits beside the metrics; these take the page's full width, the others
#: half of it.
_WIDE = {"columns", "corner", "latent", "temperatures"}
_ORDER = ("ood_log_prob", "roc", "image_samples", "reconstructions", "temperatures", "corner", "columns", "latent")


def _html(
    evaluation: Evaluation,
    *,
    title: str | None,
    test_name: str,
    ood_name: str,
    shown: list[str],
    stderr_multiple: float = 1,
) -> str:
    metrics = evaluation.metrics
    e = html.escape
    heading = title or f"Evaluation of {metrics.get('model') or 'a model'}"
    subtitle = f"recipe {metrics.get('recipe')} (family {metrics.get('family')}); test data {test_name}"
    if metrics.get("ood"):
        subtitle += f"; out-of-distribution data {ood_name}"
    if metrics.get("bound"):
        subtitle += ". This model reports a lower bound (ELBO), not an exact log-likelihood."
    rows = metric_rows(metrics, stderr_multiple=stderr_multiple)
    table = "\n".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)

    def figure(key: str) -> str:
        wide = ' class="wide"' if key in _WIDE else ""
        return (
            f'<figure id="{key}"{wide}><img src="{FIGURES[key]}" alt="{e(_CAPTIONS[key])}">'
            f"<figcaption>{e(_CAPTIONS[key])}</figcaption></figure>"
        )

    top = figure("training") if "training" in shown else ""
    sections = "\n".join(figure(key) for key in _ORDER if key in shown)
    return _page(heading, subtitle, table=table, top=top, sections=sections)


def _page(heading: str, subtitle: str, *, table: str, top: str, sections: str) -> str:
    """The HTML page around its parts; ``table``, ``top`` and ``sections`` are HTML already escaped."""
    e = html.escape
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<title>{e(heading)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1240px; padding: 0 1em; color: #222; }}
h1 {{ margin-bottom: 0.2em; }}
.top, .figures {{ display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1.5em; }}
.top {{ align-items: start; margin-bottom: 1.5em; }}
.wide {{ grid-column: 1 / -1; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ text-align: left; padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; }}
th {{ font-weight: normal; color: #555; }}
td {{ font-variant-numeric: tabular-nums; }}
figure {{ margin: 0; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: 0.85em; }}
footer {{ color: #888; font-size: 0.8em; margin-top: 2em; }}
</style>
</head>
<body>
<h1>{e(heading)}</h1>
<p>{e(subtitle)}</p>
<div class="top">
<table>
{table}
</table>
{top}
</div>
<div class="figures">
{sections}
</div>
<footer>Made by funnelcli {e(__version__)}.</footer>
</body>
</html>
"""


# ------------------------------------------------------------------------------------------------- comparison


def compare_row(name: str, estimator: FunnelDensity, test: pd.DataFrame | np.ndarray) -> dict[str, Any]:
    """One row of the comparison table: the model's test log-likelihood with its standard error, latent size,
    parameters and training milliseconds per step (``summary_["ms_per_step"]``)."""
    row = _likelihood_summary(name, estimator, estimator.score_samples(test))
    row["ms_per_step"] = (estimator.summary_ or {}).get("ms_per_step")
    return row


def _likelihood_summary(name: str | None, estimator: FunnelDensity, log_prob: np.ndarray) -> dict[str, Any]:
    """What ``evaluate`` and ``compare`` both report of a model: its test log-likelihood (mean and standard
    error), sizes and parameters, and ``bound`` for a model whose scores are lower bounds."""
    mean, stderr = m.mean_and_stderr(log_prob)
    summary: dict[str, Any] = {
        "model": name,
        "recipe": recipe_name(estimator),
        "family": family_name(estimator),
        "rows": len(log_prob),
        "mean_log_prob": mean,
        "stderr": stderr,
        "input_dim": len(estimator.columns_),
        "latent_dim": int(estimator.latent_dim_),
        "parameters": parameter_count(estimator),
        "bits_per_dim": m.bits_per_dim(mean, len(estimator.columns_)),
    }
    if getattr(estimator, "bits", None) is not None:
        summary["bits"] = int(estimator.bits)  # the pixels' depth: bits_per_dim is then the image papers' figure
    if is_bound(estimator):
        summary["bound"] = True
    return summary


def best_index(rows: Sequence[dict[str, Any]]) -> int | None:
    """The row with the highest finite mean test log-likelihood (a bound counts: the truth is higher still)."""
    finite = [(r["mean_log_prob"], i) for i, r in enumerate(rows) if math.isfinite(r["mean_log_prob"])]
    return max(finite)[1] if finite else None


def _header(stderr_multiple: float) -> tuple[str, ...]:
    likelihood = f"test log-likelihood (nats, {error_bar_label(stderr_multiple)})"
    return ("model", "recipe", likelihood, "latent size", "parameters", "ms / step")


#: The column added to the comparison, after the log-likelihood, when it holds a pixel model (trained with bits).
_BPD_HEADER = "bits / dim"


#: The column added to the comparison when it holds baselines.
_GAIN_HEADER = "gain over PPCA (nats)"


def _cells(row: dict[str, Any], gain: bool = False, stderr_multiple: float = 1) -> list[str]:
    likelihood = f"{_number(row['mean_log_prob'], 2)} ± {_number(_error_bar(row['stderr'], stderr_multiple), 2)}"
    if row.get("bound"):
        likelihood += " (ELBO, bound)"
    ms = row.get("ms_per_step")
    cells = [
        str(row["model"]),
        str(row.get("label") if row.get("baseline") else row.get("recipe") or "–"),
        likelihood,
        "–" if row.get("latent_dim") is None else str(row["latent_dim"]),
        _number(row["parameters"]),
        "–" if ms is None else f"{ms:.1f}",
    ]
    if gain:
        value = row.get("gain_over_ppca")
        cells.append("–" if value is None or not math.isfinite(value) else f"{value:+.2f}")
    return cells


def format_comparison(rows: Sequence[dict[str, Any]], *, markdown: bool = False, stderr_multiple: float = 1) -> str:
    """The comparison as a Markdown table (best log-likelihood in bold) or aligned text (best marked).

    The log-likelihood is shown as mean ± ``stderr_multiple`` standard errors, which its header cell names
    ("± 2 standard errors"). Rows of baselines (``"baseline": True``, from :func:`with_baselines`) show their
    label as the recipe, and the table gains a column with each model's gain over PPCA of its latent size.
    """
    best = best_index(rows)
    gain = any(row.get("baseline") for row in rows)
    header = [*_header(stderr_multiple), _GAIN_HEADER] if gain else list(_header(stderr_multiple))
    body = [_cells(row, gain, stderr_multiple) for row in rows]
    if any(row.get("bits") is not None for row in rows):  # pixel models: the image papers' figure beside nats
        header.insert(3, _BPD_HEADER)
        for row, cells in zip(rows, body, strict=True):
            value = row.get("bits_per_dim")
            cells.insert(3, "–" if value is None or not math.isfinite(value) else f"{value:.3f}")
    if markdown:

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        if best is not None:
            body[best][2] = f"**{body[best][2]}**"
        return "\n".join([line(header), "|" + "---|" * len(header), *(line(cells) for cells in body)])
    widths = [max(len(r[j]) for r in [header, *body]) for j in range(len(header))]

    def aligned(cells: Sequence[str], mark: str = "") -> str:
        text = "  ".join(
            c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return (text + mark).rstrip()

    lines = [aligned(header)]
    lines += [aligned(cells, "  <- best" if i == best else "") for i, cells in enumerate(body)]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- baselines


def baseline_values(estimator: FunnelDensity, table: pd.DataFrame | np.ndarray, *, noise_seed: int = SCORE_NOISE_SEED):
    """The rows of ``table`` as ``estimator`` scores them, shape (N, D): the modelled columns, plus the U[0, 1)
    noise the model adds to its dequantized (integer) columns, drawn with ``noise_seed`` (by default the noise
    of the model's own scores, so that baselines are scored at the same points)."""
    values = modelled_values(estimator, table)
    mask = np.isin(list(estimator.columns_), list(estimator.dequantized_columns_))
    if mask.any():
        values = values + mask * np.random.default_rng(noise_seed).random(values.shape)
    return values


def fit_model_baselines(
    estimator: FunnelDensity,
    train: pd.DataFrame | np.ndarray,
    validation: pd.DataFrame | np.ndarray | None = None,
    *,
    latent_dims: Sequence[int] | None = None,
    seed: int = BASELINE_SEED,
) -> dict[str, Any]:
    """The baselines of :func:`funnelcli.baselines.fit_baselines` fitted on ``train`` in the model's columns,
    their mixture's size chosen on ``validation`` (or on held-out training rows).

    PPCA is fitted at each of ``latent_dims`` below D (default: the model's latent size). Dequantized columns
    get uniform noise (seeded ``seed + 1`` for ``train``, ``seed + 2`` for ``validation``), as in training, so
    the baselines are densities of the same dequantized data as the model.
    """
    from funnelcli.baselines import fit_baselines

    dim = len(estimator.columns_)
    dims = [int(estimator.latent_dim_)] if latent_dims is None else [int(k) for k in latent_dims]
    return fit_baselines(
        baseline_values(estimator, train, noise_seed=seed + 1),
        None if validation is None else baseline_values(estimator, validation, noise_seed=seed + 2),
        latent_dims=sorted({k for k in dims if 1 <= k < dim}),
        seed=seed,
        columns=[str(c) for c in estimator.columns_],
    )


def baseline_summaries(
    baselines: Mapping[str, Any], estimator: FunnelDensity, test: pd.DataFrame | np.ndarray
) -> list[dict[str, Any]]:
    """Each baseline's test log-likelihood: ``name``, ``label``, ``rows``, ``mean_log_prob``, ``stderr`` (nats
    per row), ``parameters`` and ``latent_dim`` (PPCA's K; None for the others)."""
    values = baseline_values(estimator, test)
    summaries = []
    for baseline in baselines.values():
        mean, stderr = m.mean_and_stderr(baseline.score_samples(values))
        summaries.append(
            {
                "name": baseline.name,
                "label": baseline.label,
                "rows": len(values),
                "mean_log_prob": mean,
                "stderr": stderr,
                "parameters": int(baseline.parameters),
                "latent_dim": baseline.latent_dim,
            }
        )
    return summaries


def gain_over_ppca(mean_log_prob: float, latent_dim: int, summaries: Sequence[dict[str, Any]]) -> float | None:
    """``mean_log_prob`` minus the mean test log-likelihood of PPCA at ``latent_dim`` (None without one)."""
    for summary in summaries:
        if summary["latent_dim"] is not None and summary["latent_dim"] == latent_dim:
            return float(mean_log_prob - summary["mean_log_prob"])
    return None


def with_baselines(rows: Sequence[dict[str, Any]], summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The comparison's model ``rows``, each with its ``gain_over_ppca``, followed by a row per baseline
    (``"baseline": True``, its name as ``model``, its label as ``label``, no recipe, family or timing)."""
    models = [
        {**row, "gain_over_ppca": gain_over_ppca(row["mean_log_prob"], row["latent_dim"], summaries)} for row in rows
    ]
    dim = rows[0]["input_dim"] if rows else None
    baselines = [
        {
            "model": summary["name"],
            "label": summary["label"],
            "recipe": None,
            "family": None,
            "rows": summary["rows"],
            "mean_log_prob": summary["mean_log_prob"],
            "stderr": summary["stderr"],
            "input_dim": dim,
            "latent_dim": summary["latent_dim"],
            "parameters": summary["parameters"],
            "ms_per_step": None,
            "baseline": True,
        }
        for summary in summaries
    ]
    return models + baselines
