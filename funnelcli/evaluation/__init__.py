"""Evaluation a researcher can publish: held-out likelihood, anomaly detection, sample quality, and a report.

``metrics`` holds pure functions of arrays; ``report`` applies them to a fitted estimator (:func:`evaluate`),
writes the figures of ``plots`` and an HTML page (:func:`write_report`), and builds the comparison table of
several models (:func:`compare_row`, :func:`format_comparison`).

>>> from funnelcli.evaluation import evaluate, write_report            # doctest: +SKIP
>>> result = evaluate(model, test_df, ood=other_df)                     # doctest: +SKIP
>>> result.metrics["ood"]["auroc"]                                      # doctest: +SKIP
>>> write_report("report", model, result)                               # doctest: +SKIP
"""

from funnelcli.evaluation.metrics import (
    anomaly_detection,
    bits_per_dim,
    classifier_two_sample_auc,
    likelihood_ratio_summary,
    mean_and_stderr,
    sliced_wasserstein,
    wasserstein_1d,
    wasserstein_to_standard_normal,
)
from funnelcli.evaluation.report import (
    Evaluation,
    compare_row,
    evaluate,
    fit_model_baselines,
    format_comparison,
    write_report,
)

__all__ = [
    "Evaluation",
    "anomaly_detection",
    "bits_per_dim",
    "classifier_two_sample_auc",
    "compare_row",
    "evaluate",
    "fit_model_baselines",
    "format_comparison",
    "likelihood_ratio_summary",
    "mean_and_stderr",
    "sliced_wasserstein",
    "wasserstein_1d",
    "wasserstein_to_standard_normal",
    "write_report",
]
